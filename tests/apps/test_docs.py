"""The examples of docs/integrations.md, run as written."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import websockets

from phoenix_channels import PubSub
from tests.apps.support import ROOT, child_env
from tests.pubsub.engines import shared_url, unique_prefix
from tests.support import Server, load_doc_example

DOC = "docs/integrations.md"


async def test_the_typed_room_example(tmp_path: Path) -> None:
    app = load_doc_example(DOC, "typed_room.py", tmp_path)
    async with Server(app.endpoint) as srv, websockets.connect(srv.url + "?vsn=2.0.0") as ws:

        async def ask(frame: list[object]) -> object:
            await ws.send(json.dumps(frame))
            while True:
                answer = json.loads(await ws.recv())
                if answer[3] == "phx_reply":
                    return answer[4]

        assert await ask(["1", "1", "room:doc", "phx_join", {}]) == {"status": "ok", "response": {}}
        assert await ask(["1", "2", "room:doc", "new_msg", {"body": "hi"}]) == {
            "status": "ok",
            "response": {},
        }
        documented = re.search(r"```json\n(.*?)```", (ROOT / DOC).read_text(), re.S)
        assert documented is not None
        assert await ask(["1", "3", "room:doc", "new_msg", {"tags": ["a", 2]}]) == json.loads(
            documented.group(1)
        )
        assert (await ask(["1", "4", "room:doc", "rename", {"title": ""}]))["response"][  # type: ignore[index]
            "errors"
        ][0]["type"] == "string_too_short"
        assert await ask(["1", "5", "room:doc", "what", {}]) == {
            "status": "error",
            "response": {"reason": "unknown event what"},
        }


async def test_the_publish_script_example(tmp_path: Path) -> None:
    text = (ROOT / DOC).read_text()
    found = re.search(r"```python\n(# publish_script\.py\n.*?)```", text, re.S)
    assert found is not None
    script = tmp_path / "publish_script.py"
    script.write_text(found.group(1))
    url, prefix = shared_url("redis"), unique_prefix()
    pubsub = PubSub.redis(url, prefix=prefix)
    await pubsub.start()
    try:
        async with pubsub.subscription("job:42") as sub:
            await pubsub.prepare("job:42")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(script), env=child_env(REDIS_URL=url, PHX_PREFIX=prefix),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            async with asyncio.timeout(30):
                out, _ = await proc.communicate()
                assert proc.returncode == 0, out.decode()
                message = await sub.get()
        assert (message.topic, message.event, message.payload) == (
            "job:42",
            "progress",
            {"percent": 100},
        )
    finally:
        await pubsub.stop()


async def test_the_readme_publisher_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = shared_url("redis")
    monkeypatch.setenv("REDIS_URL", url)
    tasks = load_doc_example("README.md", "tasks.py", tmp_path)
    pubsub = PubSub.redis(url)  # the default prefix, as the example uses
    await pubsub.start()
    try:
        async with pubsub.subscription("orders:main") as sub:
            await pubsub.prepare("orders:main")
            order = SimpleNamespace(shop="main", id=6)
            await asyncio.to_thread(tasks.on_order_paid, order)
            await tasks.elsewhere()
            async with asyncio.timeout(10):
                got = [(await sub.get()).payload, (await sub.get()).payload]
        assert got == [{"id": 6}, {"id": 7}]
    finally:
        await asyncio.to_thread(tasks.publisher.close)
        await pubsub.stop()
