"""The README's example, run as written: extracted, served, and talked to."""

from __future__ import annotations

import json
from pathlib import Path

import websockets

from .support import Server, load_doc_example


async def test_the_readme_example_behaves_as_its_comments_say(tmp_path: Path) -> None:
    app = load_doc_example("README.md", "app.py", tmp_path)
    async with (
        Server(app.endpoint) as srv,
        websockets.connect(srv.url + "?vsn=2.0.0") as a,
        websockets.connect(srv.url + "?vsn=2.0.0") as b,
    ):

        async def ask(ws, frame):  # type: ignore[no-untyped-def]
            await ws.send(json.dumps(frame))
            return json.loads(await ws.recv())

        assert await ask(a, ["1", "1", "room:lobby", "phx_join", {"nick": "ana"}]) == [
            "1",
            "1",
            "room:lobby",
            "phx_reply",
            {"response": {"welcome": "room:lobby"}, "status": "ok"},
        ]
        assert (await ask(a, ["2", "2", "room:secret", "phx_join", {}]))[4] == {
            "response": {"reason": "unauthorized"},
            "status": "error",
        }
        assert (await ask(a, ["1", "3", "room:lobby", "echo", {"hi": 1}]))[4] == {
            "response": {"hi": 1},
            "status": "ok",
        }
        await ask(b, ["1", "1", "room:lobby", "phx_join", {"nick": "bo"}])
        await a.send(json.dumps(["1", "4", "room:lobby", "shout", {"msg": "hey"}]))
        for ws in (a, b):
            assert json.loads(await ws.recv()) == [
                None,
                None,
                "room:lobby",
                "shout",
                {"msg": "hey"},
            ]
