"""The Redis and NATS adapters against real servers: several nodes in one process.

Every test here runs once per engine. Nodes are separate :class:`PubSub`
instances with their own connections and names, exactly what separate
processes have; the multi-process suite is ``tests/cluster`` and
``tests/js/cluster.test.mjs``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from phoenix_channels import Broadcast, BroadcastError, ConfigurationError, PubSub
from phoenix_channels.pubsub import Subscription
from phoenix_channels.pubsub._cluster import EngineAdapter
from phoenix_channels.pubsub.redis import RespConnection

from .engines import (
    ENGINES,
    OwnServer,
    assert_one_outage_logged,
    shared_url,
    unique_prefix,
    wait_until,
)

MakeNode = Callable[..., Awaitable[PubSub]]
WAIT = 5.0


def adapter(node: PubSub) -> EngineAdapter:
    assert isinstance(node.adapter, EngineAdapter)
    return node.adapter


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_node(engine: str) -> AsyncIterator[MakeNode]:
    """Starts nodes on the shared engine, all with this test's own prefix."""
    started: list[PubSub] = []
    prefix = unique_prefix()

    async def make(name: str | None = None, *, url: str | None = None, **options: Any) -> PubSub:
        factory = PubSub.redis if engine == "redis" else PubSub.nats
        options.setdefault("prefix", prefix)
        node = factory(url or shared_url(engine), node_name=name, **options)
        started.append(node)
        await node.start()
        return node

    yield make
    for node in started:
        await node.stop()


async def next_message(sub: Subscription, what: str) -> Any:
    try:
        async with asyncio.timeout(WAIT):
            return await sub.get()
    except TimeoutError:
        raise AssertionError(f"no message within {WAIT} s: expected {what}") from None


async def until_marker(sub: Subscription, what: str) -> list[Any]:
    """Every message before the marker; one sender's messages arrive in order, so none is late."""
    seen = []
    while True:
        message = await next_message(sub, f"the marker after {what}")
        if message == "marker":
            return seen
        seen.append(message)


async def test_broadcast_reaches_every_node_once(make_node: MakeNode) -> None:
    a, b, c = await make_node("a"), await make_node("b"), await make_node("c")
    subs = {name: node.subscription("room:1") for name, node in zip("abc", (a, b, c), strict=True)}
    for node in (a, b, c):
        await node.prepare("room:1")
    message = Broadcast("room:1", "shout", {"body": "hi", "bin": b"\x00\x01"})
    await a.broadcast("room:1", message)
    await a.broadcast("room:1", "marker")
    for name, sub in subs.items():
        assert await until_marker(sub, f"the broadcast on node {name}") == [message]
    assert adapter(b).stats.delivered == adapter(c).stats.delivered == 2
    assert adapter(a).stats.delivered == 0  # its own messages were dispatched locally only


async def test_broadcast_from_skips_only_the_sender(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    got: dict[str, list[Any]] = {"sender": [], "neighbour": []}

    def sender(message: Any) -> None:
        got["sender"].append(message)

    def neighbour(message: Any) -> None:
        got["neighbour"].append(message)

    a.subscribe("t", sender)
    a.subscribe("t", neighbour)
    remote = b.subscription("t")
    await b.prepare("t")
    await a.broadcast("t", "hello", from_=sender)
    await a.broadcast("t", "marker")
    assert await until_marker(remote, "broadcast_from") == ["hello"]
    assert got == {"sender": ["marker"], "neighbour": ["hello", "marker"]}


async def test_local_broadcast_stays_on_its_node(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    local, remote = a.subscription("t"), b.subscription("t")
    await b.prepare("t")
    a.local_broadcast("t", "only here")
    await a.broadcast("t", "marker")
    assert await until_marker(remote, "a local broadcast elsewhere") == []
    assert await until_marker(local, "the local broadcast") == ["only here"]


async def test_direct_broadcast_reaches_only_the_named_node(make_node: MakeNode) -> None:
    a, b, c = await make_node("a"), await make_node("b"), await make_node("c")
    subs = {name: node.subscription("t") for name, node in zip("abc", (a, b, c), strict=True)}
    for node in (a, b, c):
        await node.prepare("t")
    await a.direct_broadcast("b", "t", "for b")
    await a.direct_broadcast("nobody-has-this-name", "t", "for nobody")  # silently nothing
    await a.direct_broadcast("a", "t", "for a itself")  # delivered locally, not via the engine
    for node in (a, b, c):
        await a.direct_broadcast(node.node_name, "t", "marker")
    assert await until_marker(subs["b"], "the direct broadcast") == ["for b"]
    assert await until_marker(subs["c"], "nothing") == []
    assert await until_marker(subs["a"], "the self-addressed one") == ["for a itself"]


async def test_a_node_receives_only_topics_it_has_subscribers_for(
    make_node: MakeNode, engine: str
) -> None:
    a, b = await make_node("a"), await make_node("b")
    sub = b.subscription("wanted")
    await b.prepare("wanted")
    for i in range(20):
        await a.broadcast("unwanted", {"i": i})
    await a.broadcast("wanted", "marker")
    assert await until_marker(sub, "nothing on 'wanted'") == []
    # Twenty messages on a topic B has no subscriber for never reached B at all.
    assert adapter(b).stats.received == 1
    if engine == "redis":  # and Redis itself says so
        conn = await RespConnection.open(shared_url("redis"))
        try:
            channels = await conn.command("PUBSUB", "CHANNELS", f"{adapter(a).prefix}:*")
        finally:
            conn.close()
        prefix = adapter(a).prefix
        assert sorted(channels) == sorted(
            [f"{prefix}:n:a".encode(), f"{prefix}:n:b".encode(), f"{prefix}:t:wanted".encode()]
        )


async def test_engine_subscription_follows_the_first_and_last_subscriber(
    make_node: MakeNode,
) -> None:
    a = await make_node("a")
    channel = adapter(a).channel_for("room:x")

    def one(message: Any) -> None: ...
    def two(message: Any) -> None: ...

    a.subscribe("room:x", one)
    a.subscribe("room:x", two)
    await a.prepare("room:x")
    assert channel in adapter(a).subscribed_channels()
    a.unsubscribe("room:x", one)
    await asyncio.sleep(0.05)
    assert channel in adapter(a).subscribed_channels(), "one subscriber is left"
    a.unsubscribe("room:x", two)
    # prepare() keeps its channel for a moment after it returns (so a join can subscribe).
    await wait_until(
        lambda: channel not in adapter(a).subscribed_channels(),
        "the engine subscription is dropped after the last local subscriber left",
    )


class CountingEncoder:
    """A frame encoder that counts how often it encodes a broadcast."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def broadcast(self, message: Broadcast) -> tuple[str, str]:
        self.calls += 1
        return (self.name, message.event)


async def test_a_message_from_the_engine_is_encoded_once_per_serializer(
    make_node: MakeNode,
) -> None:
    a, b = await make_node("a"), await make_node("b")
    v2, v1 = CountingEncoder("v2"), CountingEncoder("v1")
    frames: list[tuple[int, Any]] = []
    done = asyncio.Event()

    class Owner:
        def __init__(self, n: int) -> None:
            self.n = n

        def write(self, frame: Any) -> None:
            frames.append((self.n, frame))
            if len(frames) == 5:
                done.set()

    owners = [Owner(n) for n in range(5)]
    for owner in owners:
        encoder = v2 if owner.n < 4 else v1
        b.subscribe_fastlane("room:fast", owner, owner.write, encoder, None)
    await b.prepare("room:fast")
    await a.broadcast("room:fast", Broadcast("room:fast", "ev", {"x": 1}))
    async with asyncio.timeout(WAIT):
        await done.wait()
    assert (v2.calls, v1.calls) == (1, 1)
    assert sorted(frames) == [(0, ("v2", "ev")), (1, ("v2", "ev")), (2, ("v2", "ev")),
                              (3, ("v2", "ev")), (4, ("v1", "ev"))]  # fmt: skip
    v2_frames = [frame for n, frame in frames if n < 4]
    assert all(frame is v2_frames[0] for frame in v2_frames), "one frame object, shared"


async def test_prepare_means_nothing_published_afterwards_is_missed(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    for i in range(10):  # fresh topics: each needs a new engine subscription
        topic = f"fresh:{i}"
        sub = b.subscription(topic)
        await b.prepare(topic)
        await a.broadcast(topic, i)  # at once: no sleep, no retry
        assert await next_message(sub, f"the broadcast on {topic}") == i
        sub.close()


async def test_plain_values_cross_nodes_exactly(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    sub = b.subscription("phx_presence:room")
    await b.prepare("phx_presence:room")
    delta = {"joins": {("a", 3): [b"\x00ref", {"meta": 1.5}]}, 2: [None, True], "big": 2**90}
    await a.broadcast("phx_presence:room", delta)
    got = await next_message(sub, "the delta")
    assert got == delta and type(got["joins"][("a", 3)][0]) is bytes


@pytest.mark.parametrize(
    "topic",
    ["room:lobby", "a b", "x.y.z", "*", ">", "", "ünïcødé:✓", "t" * 1000, "user_socket:42"],
)
async def test_any_topic_string_works(make_node: MakeNode, topic: str) -> None:
    a, b = await make_node("a"), await make_node("b")
    sub, neighbour = b.subscription(topic), b.subscription(topic + "-other")
    await b.prepare(topic)
    await b.prepare(topic + "-other")
    await a.broadcast(topic, "for the topic")
    await a.broadcast(topic + "-other", "marker")
    assert await next_message(sub, f"the broadcast on {topic[:20]!r}") == "for the topic"
    assert await next_message(neighbour, "the marker") == "marker"
    assert sub.dropped == 0 and neighbour.dropped == 0


async def test_shards_bound_the_engine_subscriptions(make_node: MakeNode) -> None:
    a, b = await make_node("a", shards=4), await make_node("b", shards=4)
    subs = [b.subscription(f"room:{i}") for i in range(40)]
    for i in range(40):
        await b.prepare(f"room:{i}")
    assert len(adapter(b).subscribed_channels()) <= 4
    for i in range(40):
        await a.broadcast(f"room:{i}", i)
    for i, sub in enumerate(subs):
        assert await next_message(sub, f"room:{i}") == i


async def test_a_malformed_message_is_logged_and_dropped(
    make_node: MakeNode, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await make_node("a"), await make_node("b")
    sub = b.subscription("t")
    await b.prepare("t")
    channel = adapter(b).channel_for("t")
    garbage = [b"\x00garbage", b"\x09future-version", b"\x01\x00\x01x\xc1"]
    caplog.set_level(logging.WARNING, logger="phoenix_channels.pubsub")
    await publish_raw(engine, channel, garbage)
    await a.broadcast("t", "still fine")
    assert await next_message(sub, "the valid message after the garbage") == "still fine"
    assert adapter(b).stats.malformed == 3
    assert adapter(b).connected
    warnings = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warnings) == 1, "one line, not one per message"
    assert "dropped a malformed message" in warnings[0] and "too short" not in warnings[0]


async def publish_raw(engine: str, channel: str, payloads: list[bytes]) -> None:
    if engine == "redis":
        conn = await RespConnection.open(shared_url("redis"))
        try:
            for payload in payloads:
                await conn.command("PUBLISH", channel, payload)
        finally:
            conn.close()
    else:
        import nats

        nc = await nats.connect(shared_url("nats"))
        try:
            for payload in payloads:
                await nc.publish(channel, payload)
            await nc.flush()
        finally:
            await nc.close()


async def test_an_unsendable_message_fails_the_broadcast_for_everyone(
    make_node: MakeNode,
) -> None:
    a = await make_node("a")
    local: list[Any] = []
    a.subscribe("t", local.append)
    with pytest.raises(BroadcastError, match=r"builtins\.set cannot be sent"):
        await a.broadcast("t", {"a", "set"})
    assert local == [], "as in Phoenix: no local delivery when the adapter fails"


async def test_broadcast_while_the_engine_is_unreachable_fails_at_once(
    engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    from .engines import free_port

    url = f"{engine}://127.0.0.1:{free_port()}"  # nothing listens there
    factory = PubSub.redis if engine == "redis" else PubSub.nats
    node = factory(url, prefix=unique_prefix(), timeout=1.0)
    caplog.set_level(logging.WARNING, logger="phoenix_channels.pubsub")
    await node.start()  # starts anyway: local clients are served
    try:
        assert not adapter(node).connected
        local: list[Any] = []
        node.subscribe("t", local.append)
        async with asyncio.timeout(WAIT):  # a bound, so a hang fails clearly
            with pytest.raises(BroadcastError, match=f"{engine} at {url} is unreachable"):
                await node.broadcast("t", "lost")
            await node.prepare("t")  # returns: nothing to wait for while down
        assert local == []
        node.local_broadcast("t", "local still works")
        assert local == ["local still works"]
        outage_lines = [r for r in caplog.records if "cannot reach" in r.getMessage()]
        assert len(outage_lines) == 1
    finally:
        await node.stop()


@pytest.fixture
async def own_server(engine: str, tmp_path: Path) -> AsyncIterator[OwnServer]:
    server = OwnServer(engine, tmp_path)
    await server.start()
    yield server
    server.kill()


async def test_nodes_survive_an_engine_restart(
    own_server: OwnServer, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="phoenix_channels.pubsub")
    factory = PubSub.redis if engine == "redis" else PubSub.nats
    prefix = unique_prefix()
    a = factory(own_server.url, node_name="a", prefix=prefix, max_backoff=0.2)
    b = factory(own_server.url, node_name="b", prefix=prefix, max_backoff=0.2)
    await a.start()
    await b.start()
    try:
        sub = b.subscription("room:1")
        await b.prepare("room:1")
        await a.broadcast("room:1", "before")
        assert await next_message(sub, "the broadcast before the restart") == "before"

        own_server.kill()
        await wait_until(
            lambda: not adapter(a).connected and not adapter(b).connected,
            "both nodes notice the engine is gone",
        )
        for _ in range(3):
            with pytest.raises(BroadcastError, match="unreachable"):
                await a.broadcast("room:1", "during")
        b.local_broadcast("room:1", "local during the outage")
        assert await next_message(sub, "a local broadcast") == "local during the outage"
        await asyncio.sleep(0.5)  # several reconnection attempts fail meanwhile

        await own_server.start()
        channel = adapter(b).channel_for("room:1")
        await wait_until(
            lambda: adapter(a).connected and channel in adapter(b).subscribed_channels(),
            "both nodes reconnect and b resubscribes room:1",
        )
        await a.broadcast("room:1", "after")
        assert await next_message(sub, "the broadcast after the restart") == "after"
    finally:
        await a.stop()
        await b.stop()

    nodes = {"a": adapter(a), "b": adapter(b)}
    lines = assert_one_outage_logged(nodes, caplog.records, failed_broadcasts=3)
    assert "at most once" in next(m for m in lines if m.startswith("node b reconnected"))


async def test_configuration_errors_say_what_to_do(engine: str) -> None:
    factory = PubSub.redis if engine == "redis" else PubSub.nats
    with pytest.raises(ConfigurationError, match="unsupported"):
        factory("http://127.0.0.1:1")
    with pytest.raises(ConfigurationError, match="prefix must be"):
        factory(prefix="bad prefix")
    with pytest.raises(ConfigurationError, match="shards must be"):
        factory(shards=0)
    with pytest.raises(ConfigurationError, match="node_name must be at most 255"):
        factory(node_name="x" * 256)
    with pytest.raises(ConfigurationError, match="timeout must be a positive"):
        factory(timeout=0)


async def test_two_redis_nodes_cannot_share_a_name() -> None:
    # (NATS cannot see another connection's subscriptions, so it cannot check this.)
    url, prefix = shared_url("redis"), unique_prefix()
    first = PubSub.redis(url, node_name="twin", prefix=prefix)
    await first.start()
    try:
        second = PubSub.redis(url, node_name="twin", prefix=prefix)
        with pytest.raises(ConfigurationError, match="'twin' is already used by another node"):
            await second.start()
        await second.stop()
    finally:
        await first.stop()


def test_nats_connect_options_cannot_override_what_the_adapter_manages() -> None:
    with pytest.raises(ConfigurationError, match="cannot set \\['allow_reconnect'\\]"):
        PubSub.nats(connect_options={"allow_reconnect": True})
