"""History across nodes: three endpoints on one engine, a client rejoining on another node."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from phoenix_channels import Channel, Endpoint, History, PubSub, Socket, reply

from ..pubsub.engines import OwnServer, reachable, shared_url, unique_prefix, wait_until
from ..support import Client, connect

ENGINES = ["redis", "nats"]
SECRET = "history-cluster-test-secret-" + "s" * 20  # one per cluster


class RoomChannel(Channel):
    history = History(size=10, ttl=60.0)

    async def join(self, topic: str, payload: Any) -> Any:
        return None

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "shout_from":
            await self.broadcast_from("msg", payload)
        return reply("ok")


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}


MakeNodes = Callable[[int], Awaitable[list[Endpoint]]]


@pytest.fixture(params=ENGINES)
async def nodes(request: pytest.FixtureRequest) -> AsyncIterator[MakeNodes]:
    engine = str(request.param)
    if engine == "nats":
        pytest.importorskip("nats")
    started: list[Endpoint] = []
    prefix = unique_prefix()

    async def make(count: int) -> list[Endpoint]:
        for _ in range(count):
            factory = PubSub.redis if engine == "redis" else PubSub.nats
            endpoint = Endpoint(
                {"/socket": UserSocket},
                pubsub=factory(shared_url(engine), prefix=prefix),
                secret_key_base=SECRET,
            )
            await endpoint.start()
            started.append(endpoint)
        return started

    yield make
    for endpoint in started:
        await endpoint.stop()


async def join(client: Client, payload: dict[str, Any], join_ref: str = "1") -> None:
    client.send(join_ref, join_ref, "room:1", "phx_join", payload)


async def messages(client: Client, count: int) -> list[list[Any]]:
    """Wait until ``count`` pushes (outcome and msg) arrived on room:1; return them."""
    async with asyncio.timeout(10):
        while True:
            got = [f for f in client.transport.frames() if f[2] == "room:1" and f[3] != "phx_reply"]
            if len(got) >= count:
                return got
            await asyncio.sleep(0.01)


async def publish(endpoint: Endpoint, numbers: range) -> None:
    for n in numbers:
        await endpoint.broadcast("room:1", "msg", {"n": n})


async def test_positions_are_the_same_on_every_node_and_a_rejoin_elsewhere_recovers(
    nodes: MakeNodes,
) -> None:
    a, b, c = await nodes(3)
    first = await connect(a, UserSocket)
    watcher = await connect(b, UserSocket)
    await join(first, {"phx_recover": None})
    await join(watcher, {})
    await messages(first, 1)
    await asyncio.sleep(0)
    await publish(a, range(1, 3))
    await publish(c, range(3, 4))
    got = await messages(first, 4)
    seen = await messages(watcher, 3)
    assert [f[4]["n"] for f in got[1:]] == [1, 2, 3]
    assert [f[1] for f in got[1:]] == [f[1] for f in seen]  # one position per broadcast
    epoch = got[1][1].split(":")[0]
    assert [f[1] for f in got[1:]] == [f"{epoch}:{n}" for n in (1, 2, 3)]
    last = got[-1][1]
    first.socket.connection_lost()
    await publish(b, range(4, 6))
    await publish(a, range(6, 8))
    second = await connect(c, UserSocket)
    await join(second, {"phx_recover": last})
    outcome = (await messages(second, 1))[0]
    assert outcome[3] == "phx_recovery"
    assert outcome[4] == {
        "recovered": True,
        "reason": None,
        "position": f"{epoch}:7",
        "replayed": 4,
    }
    await publish(b, range(8, 9))
    got = await messages(second, 6)
    assert [f[4]["n"] for f in got[1:]] == [4, 5, 6, 7, 8]
    # The stored history is the same from every node.
    for node in (a, b, c):
        assert [m.payload["n"] for m in await node.history("room:1")] == list(range(1, 9))


async def test_broadcast_from_skips_the_sender_on_its_own_node_only(nodes: MakeNodes) -> None:
    a, b = await nodes(2)
    sender = await connect(a, UserSocket)
    local = await connect(a, UserSocket)
    remote = await connect(b, UserSocket)
    for client in (sender, local, remote):
        await join(client, {})
    await asyncio.sleep(0.1)
    sender.send("1", "2", "room:1", "shout_from", {"n": 1})
    async with asyncio.timeout(10):  # stored and sent before the next one
        while not any(f[1] == "2" and f[3] == "phx_reply" for f in sender.transport.frames()):
            await asyncio.sleep(0.01)
    await publish(b, range(2, 3))
    assert [f[4]["n"] for f in await messages(local, 2)] == [1, 2]
    assert [f[4]["n"] for f in await messages(remote, 2)] == [1, 2]
    assert [f[4]["n"] for f in await messages(sender, 1)] == [2]


async def test_a_lost_history_makes_a_new_epoch(nodes: MakeNodes) -> None:
    a, b = await nodes(2)
    await publish(a, range(1, 3))
    stored = await b.history("room:1")
    assert [m.payload["n"] for m in stored] == [1, 2]
    store = a.pubsub.history_store
    assert store is not None
    await store.reset()  # what a flush or a restart without persistence does to its keys
    await publish(b, range(3, 4))
    client = await connect(b, UserSocket)
    await join(client, {"phx_recover": stored[-1].ref})
    outcome = (await messages(client, 1))[0][4]
    assert outcome["recovered"] is False and outcome["reason"] == "epoch_changed"
    assert outcome["position"].endswith(":1")
    assert outcome["position"].split(":")[0] != stored[-1].ref.split(":")[0]


async def test_over_the_size_is_too_old(nodes: MakeNodes) -> None:
    a, b = await nodes(2)
    await publish(a, range(1, 2))
    mark = (await a.history("room:1"))[-1].ref
    await publish(b, range(2, 14))  # 12 > size 10
    client = await connect(a, UserSocket)
    await join(client, {"phx_recover": mark})
    outcome = (await messages(client, 1))[0][4]
    assert outcome["recovered"] is False and outcome["reason"] == "too_old"
    assert [m.payload["n"] for m in await a.history("room:1")] == list(range(4, 14))


class EngineServer(OwnServer):
    """A private server; NATS with JetStream (memory streams do not survive a restart)."""

    async def start(self) -> None:
        if self.engine == "redis":
            await super().start()
            return
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js"]
        args += ["-sd", str(self.workdir / "js")]
        log = open(self.workdir / "nats.log", "ab")  # noqa: SIM115 - kept by Popen
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        await wait_until(lambda: reachable(self.port), "nats accepts connections")


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_engine_restart_without_persistence_changes_the_epoch(
    engine: str, tmp_path: Path
) -> None:
    if engine == "nats":
        pytest.importorskip("nats")
    server = EngineServer(engine, tmp_path)
    await server.start()
    factory = PubSub.redis if engine == "redis" else PubSub.nats
    prefix = unique_prefix()
    a, b = (
        Endpoint(
            {"/socket": UserSocket},
            pubsub=factory(server.url, prefix=prefix, max_backoff=0.2),
            secret_key_base=SECRET,
        )
        for _ in range(2)
    )
    try:
        await a.start()
        await b.start()
        await publish(a, range(1, 3))
        mark = (await b.history("room:1"))[-1].ref
        server.kill()
        await wait_until(lambda: not a.pubsub.adapter.connected, "node a sees the engine gone")  # type: ignore[attr-defined]
        await server.start()
        for node in (a, b):
            await wait_until(lambda n=node: n.pubsub.adapter.connected, "the nodes reconnect")  # type: ignore[attr-defined,misc]
        await publish(b, range(3, 4))
        client = await connect(a, UserSocket)
        await join(client, {"phx_recover": mark})
        outcome = (await messages(client, 1))[0][4]
        assert outcome["recovered"] is False and outcome["reason"] == "epoch_changed"
        assert outcome["position"].endswith(":1")
    finally:
        await a.stop()
        await b.stop()
        server.kill()


async def test_a_plain_script_building_the_same_endpoint_assigns_positions(
    nodes: MakeNodes,
) -> None:
    """``Publisher(endpoint)`` of an endpoint that never serves: the policy comes with it."""
    from phoenix_channels.publisher import Publisher

    (a,) = await nodes(1)
    engine = "redis" if type(a.pubsub.adapter).__name__ == "RedisAdapter" else "nats"
    factory = PubSub.redis if engine == "redis" else PubSub.nats
    prefix = a.pubsub.adapter.prefix  # type: ignore[attr-defined]
    script = Endpoint(
        {"/socket": UserSocket},
        pubsub=factory(shared_url(engine), prefix=prefix),
        secret_key_base=SECRET,
    )
    client = await connect(a, UserSocket)
    await join(client, {})
    await asyncio.sleep(0.1)
    with Publisher(script) as publisher:
        await asyncio.get_running_loop().run_in_executor(
            None, publisher.publish, "room:1", "msg", {"n": 1}
        )
        await publisher.apublish("room:1", "msg", {"n": 2})
    got = await messages(client, 2)
    assert [f[4]["n"] for f in got] == [1, 2]
    epoch = got[0][1].split(":")[0]
    assert [f[1] for f in got] == [f"{epoch}:1", f"{epoch}:2"]
    assert [m.ref for m in await a.history("room:1")] == [f[1] for f in got]
