"""The README's example, run as written: extracted, served, and talked to."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import websockets

from .support import Server

README = Path(__file__).resolve().parent.parent / "README.md"


def load_readme_app(tmp_path: Path):  # type: ignore[no-untyped-def]
    text = README.read_text()
    block = re.search(r"```python\n(# app\.py\n.*?)```", text, re.S)
    assert block, "the README lost its app.py example"
    path = tmp_path / "readme_app.py"
    path.write_text(block.group(1))
    spec = importlib.util.spec_from_file_location("readme_app", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_app"] = module
    spec.loader.exec_module(module)
    return module


async def test_the_readme_example_behaves_as_its_comments_say(tmp_path: Path) -> None:
    app = load_readme_app(tmp_path)
    async with Server(app.endpoint) as srv, websockets.connect(srv.url + "?vsn=2.0.0") as a, \
                websockets.connect(srv.url + "?vsn=2.0.0") as b:
        async def ask(ws, frame):  # type: ignore[no-untyped-def]
            await ws.send(json.dumps(frame))
            return json.loads(await ws.recv())

        assert await ask(a, ["1", "1", "room:lobby", "phx_join", {"nick": "ana"}]) == [
            "1", "1", "room:lobby", "phx_reply",
            {"response": {"welcome": "room:lobby"}, "status": "ok"}]
        assert (await ask(a, ["2", "2", "room:secret", "phx_join", {}]))[4] == {
            "response": {"reason": "unauthorized"}, "status": "error"}
        assert (await ask(a, ["1", "3", "room:lobby", "echo", {"hi": 1}]))[4] == {
            "response": {"hi": 1}, "status": "ok"}
        await ask(b, ["1", "1", "room:lobby", "phx_join", {"nick": "bo"}])
        await a.send(json.dumps(["1", "4", "room:lobby", "shout", {"msg": "hey"}]))
        for ws in (a, b):
            assert json.loads(await ws.recv()) == [None, None, "room:lobby", "shout",
                                                   {"msg": "hey"}]
