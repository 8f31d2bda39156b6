"""docs/presence.md's examples, run as written.

The channel example serves a client on a memory transport; the service
discovery example runs on two nodes, joined by the in-process hub and, when
Redis answers, by real Redis PubSubs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from phoenix_channels import PubSub, token
from tests.support import connect

from .support import Hub, eventually

DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "presence.md"
FAST: dict[str, Any] = {"broadcast_period": 0.05, "down_period": 0.5, "permdown_period": 5.0}


def load(tmp_path: Path, name: str) -> Any:
    code = re.search(rf"```python\n(# {name}\.py\n.*?)```", DOC.read_text(), re.S)
    assert code, f"docs/presence.md lost its {name}.py example"
    path = tmp_path / f"{name}.py"
    path.write_text(code.group(1))
    spec = importlib.util.spec_from_file_location(f"doc_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"doc_{name}"] = module
    spec.loader.exec_module(module)
    return module


async def test_the_channel_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY_BASE", "presence-doc-secret-" + "x" * 30)
    app = load(tmp_path, "presence_app")
    try:
        signed = token.sign(app.endpoint, "user socket", "alice")
        client = await connect(app.endpoint, app.UserSocket, f"vsn=2.0.0&token={signed}")
        # The user comes from the verified token, not from what the client says it is.
        client.send("1", "1", "room:lobby", "phx_join", {"user_id": "mallory"})
        frames = await client.frames(3)
        assert [f[3] for f in frames] == ["phx_reply", "presence_diff", "presence_state"]
        (meta,) = frames[2][4]["alice"]["metas"]
        assert set(meta) == {"online_at", "phx_ref"}
        assert frames[1][4] == {"joins": {"alice": {"metas": [meta]}}, "leaves": {}}
        client.socket.connection_lost()
        await eventually(lambda: app.presence.tracker.list("room:lobby") == [], "alice leaves")
    finally:
        await app.endpoint.stop()


async def discovery_across_two_nodes(
    module: Any, pubsub_a: PubSub, pubsub_b: PubSub, cut: Any
) -> None:
    a = module.Registry(pubsub_a, node_name="node-a", **FAST)
    b = module.Registry(pubsub_b, node_name="node-b", **FAST)
    for pubsub in (pubsub_a, pubsub_b):
        await pubsub.start()
    await a.start()
    await b.start()
    stop = asyncio.Event()
    server_a = asyncio.get_running_loop().create_task(stop.wait())
    try:
        await a.announce(server_a, "billing", "http://10.0.0.5:8000")
        await b.announce("search-service", "search", "http://10.0.0.6:8000")
        await b.announce("billing-service", "billing", "http://10.0.0.6:8001")
        both = ["http://10.0.0.5:8000", "http://10.0.0.6:8001"]
        await eventually(
            lambda: a.urls("billing") == b.urls("billing") == both,
            "both nodes know both billing instances",
        )
        assert a.urls("search") == ["http://10.0.0.6:8000"]
        assert ("up", "search", "http://10.0.0.6:8000") in a.events
        stop.set()  # node a's billing task ends: its registration goes with it
        await server_a
        await eventually(
            lambda: b.urls("billing") == ["http://10.0.0.6:8001"], "b sees a's billing go away"
        )
        cut()  # node b becomes unreachable
        await eventually(
            lambda: a.urls("billing") == [] and a.urls("search") == [],
            "a drops b's services after the down period",
        )
        assert ("down", "search", "http://10.0.0.6:8000") in a.events
    finally:
        stop.set()
        await a.stop()
        await b.stop()
        for pubsub in (pubsub_a, pubsub_b):
            await pubsub.stop()


async def test_the_discovery_example_across_nodes(tmp_path: Path) -> None:
    module = load(tmp_path, "discovery")
    hub = Hub()
    await discovery_across_two_nodes(
        module, hub.pubsub("a"), hub.pubsub("b"), lambda: hub.isolate("b")
    )


async def test_the_discovery_example_over_redis(tmp_path: Path) -> None:
    from tests.pubsub.engines import shared_url

    url = shared_url("redis")  # skips without Redis (never in CI)
    module = load(tmp_path, "discovery")
    prefix = f"presence-doc-{uuid.uuid4().hex[:8]}"
    pubsub_a = PubSub.redis(url, node_name="node-a", prefix=prefix)
    pubsub_b = PubSub.redis(url, node_name="node-b", prefix=prefix)
    cuts: list[asyncio.Task[None]] = []

    def cut() -> None:
        # Node b loses Redis: nothing it sends arrives any more, as if it were killed.
        cuts.append(asyncio.get_running_loop().create_task(pubsub_b.stop()))

    await discovery_across_two_nodes(module, pubsub_a, pubsub_b, cut)


@pytest.fixture(autouse=True)
def _forget_doc_modules() -> Any:
    yield
    for name in ("doc_presence_app", "doc_discovery"):
        sys.modules.pop(name, None)


async def test_the_big_rooms_example(tmp_path: Path) -> None:
    app = load(tmp_path, "big_rooms")
    try:
        fans = []
        for user in ("alice", "bob"):
            client = await connect(app.endpoint, app.UserSocket)
            client.send("1", "1", "stadium:final", "phx_join", {"user_id": user})
            await client.frames(2)  # the join reply and the count
            fans.append(client)
        frames = fans[1].transport.frames()
        assert [f[3] for f in frames] == ["phx_reply", "presence_count"]
        assert frames[1][4] == {"count": 2}
        # A leave: the remaining fan gets the new count, never a list or a diff.
        fans[1].socket.connection_lost()
        await eventually(
            lambda: (
                [f[4] for f in fans[0].transport.frames() if f[3] == "presence_count"][-1:]
                == [{"count": 1}]
            ),
            "alice gets the count after bob leaves",
        )
        assert all(f[3] != "presence_diff" for f in fans[0].transport.frames())

        member = await connect(app.endpoint, app.UserSocket)
        member.send("1", "1", "room:1", "phx_join", {"user_id": "carol"})
        frames = await member.frames(2)
        assert [f[3] for f in frames] == ["phx_reply", "presence_state"]
        assert list(frames[1][4]) == ["carol"]
    finally:
        await app.endpoint.stop()
