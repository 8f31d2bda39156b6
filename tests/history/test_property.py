"""Property: random schedules of cuts, rejoins and broadcasts across nodes lose nothing.

Clients on several nodes (real PubSub objects: one local node, or three on
Redis and on NATS) track their position as the JS helper does and send it
when they rejoin. Whatever the schedule, each client's received sequence is
the topic's sequence over the times it was joined, plus, after each
rejoin, either every message it missed (when they were still in the
history) or, with ``too_old``, none of them but those after the position
the outcome gives: no gap, no duplicate, in order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from phoenix_channels import Channel, Endpoint, History, PubSub, Socket
from phoenix_channels.history import Position

from ..pubsub.engines import shared_url, unique_prefix
from ..support import Client, connect

SIZE = 4
TOPIC = "room:p"


class RoomChannel(Channel):
    history = History(size=SIZE, ttl=None)

    async def join(self, topic: str, payload: Any) -> Any:
        return None


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}


@dataclass
class Model:
    """One client: what it got, and what it should have got."""

    client: Client | None = None
    position: str | None = None
    received: list[int] = field(default_factory=list)
    expected: list[int] = field(default_factory=list)
    seen_frames: int = 0


def pushes(client: Client) -> list[list[Any]]:
    return [f for f in client.transport.frames() if f[2] == TOPIC and f[3] != "phx_reply"]


async def take(model: Model, until: int | None) -> dict[str, Any] | None:
    """Consume the client's new frames (until message ``until`` if given); the last outcome."""
    assert model.client is not None
    outcome = None
    async with asyncio.timeout(10):
        while True:
            frames = pushes(model.client)
            for frame in frames[model.seen_frames :]:
                if frame[3] == "phx_recovery":
                    outcome = frame[4]
                    if not outcome["recovered"]:
                        model.position = outcome["position"]
                else:
                    model.received.append(frame[4]["n"])
                    model.position = frame[1]
            model.seen_frames = len(frames)
            if until is None or (model.received and model.received[-1] >= until):
                return outcome
            await asyncio.sleep(0.002)


async def run(nodes: list[Endpoint], ops: list[tuple[str, int, int]], clients: int) -> list[Model]:
    models = [Model() for _ in range(clients)]
    top = 0
    for i, model in enumerate(models):
        model.client = await connect(nodes[i % len(nodes)], UserSocket)
        model.client.send("1", "1", TOPIC, "phx_join", {"phx_recover": None})
        outcome = None
        while outcome is None:
            outcome = await take(model, None)
            await asyncio.sleep(0.002)
    for op, who, node in ops:
        model = models[who % clients]
        if op == "broadcast":
            top += 1
            await nodes[node % len(nodes)].broadcast(TOPIC, "msg", {"n": top})
            for m in models:
                if m.client is not None:
                    m.expected.append(top)
            for m in models:
                if m.client is not None:
                    await take(m, top)
        elif op == "cut" and model.client is not None:
            model.client.socket.connection_lost()
            model.client = None
        elif op == "rejoin" and model.client is None:
            mark = Position.parse(model.position)
            assert mark is not None
            missed = top - mark.offset
            model.client = await connect(nodes[node % len(nodes)], UserSocket)
            model.seen_frames = 0
            model.client.send("1", "1", TOPIC, "phx_join", {"phx_recover": model.position})
            outcome = None
            while outcome is None:
                outcome = await take(model, None)
                await asyncio.sleep(0.002)
            if missed <= SIZE:
                assert outcome["recovered"] is True, (outcome, missed)
                model.expected.extend(range(mark.offset + 1, top + 1))
                if missed:
                    await take(model, top)
            else:
                assert outcome == {
                    "recovered": False,
                    "reason": "too_old",
                    "position": outcome["position"],
                    "replayed": 0,
                }
                # Nothing replayed; live from the outcome's position on (in a
                # cluster a message sent just before the rejoin may still be on
                # its way to this node: then the position is just before it).
                start = Position.parse(outcome["position"])
                assert start is not None and top - SIZE <= start.offset <= top
                model.expected.extend(range(start.offset + 1, top + 1))
                if start.offset < top:
                    await take(model, top)
    for model in models:
        if model.client is not None:
            await take(model, None)
    return models


OPS = st.lists(
    st.tuples(
        st.sampled_from(["broadcast", "broadcast", "broadcast", "cut", "rejoin"]),
        st.integers(0, 2),
        st.integers(0, 2),
    ),
    max_size=40,
)
# A client away for exactly SIZE messages (recovered), and for SIZE + 1 (too_old).
AWAY = [("cut", 0, 0)] + [("broadcast", 1, 1)] * SIZE + [("rejoin", 0, 1)]
AWAY += [("cut", 1, 0)] + [("broadcast", 0, 0)] * (SIZE + 1) + [("rejoin", 1, 2)]


def check(models: list[Model]) -> None:
    for model in models:
        assert model.received == model.expected
        assert len(set(model.received)) == len(model.received)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
@example(ops=AWAY)
def test_one_node_loses_nothing_recoverable(ops: list[tuple[str, int, int]]) -> None:
    async def scenario() -> None:
        endpoint = Endpoint({"/socket": UserSocket})
        await endpoint.start()
        try:
            check(await run([endpoint], ops, 3))
        finally:
            await endpoint.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("engine", ["redis", "nats"])
def test_three_nodes_lose_nothing_recoverable(engine: str) -> None:
    url = shared_url(engine)
    if engine == "nats":
        pytest.importorskip("nats")

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ops=OPS)
    @example(ops=AWAY)
    def prop(ops: list[tuple[str, int, int]]) -> None:
        async def scenario() -> None:
            prefix = unique_prefix()
            factory = PubSub.redis if engine == "redis" else PubSub.nats
            nodes = [
                Endpoint(
                    {"/socket": UserSocket},
                    pubsub=factory(url, prefix=prefix),
                    secret_key_base="history-property-secret-" + "s" * 20,
                )
                for _ in range(3)
            ]
            for node in nodes:
                await node.start()
            try:
                check(await run(nodes, ops, 3))
            finally:
                store = nodes[0].pubsub.history_store
                if store is not None:
                    await store.reset()
                for node in nodes:
                    await node.stop()

        asyncio.run(scenario())

    prop()
