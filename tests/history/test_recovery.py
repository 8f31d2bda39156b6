"""History and recovery on one node, in process (memory transport, local adapter)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from phoenix_channels import Broadcast, Channel, Endpoint, Socket
from phoenix_channels.errors import EncodeError, UsageError
from phoenix_channels.history import History, HistorySlice, Position
from phoenix_channels.history.memory import MemoryHistory
from phoenix_channels.history.policy import HistoryPolicy

from ..support import Client, connect

SEEN: list[Any] = []


class RoomChannel(Channel):
    history = History(size=5, ttl=60.0)

    async def join(self, topic: str, payload: Any) -> Any:
        SEEN.append((payload, self.recovery))
        return None


class PlainChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return None


class UserSocket(Socket):
    channels = {"plain:vip": PlainChannel, "room:*": RoomChannel, "plain:*": PlainChannel}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make() -> Endpoint:
    return Endpoint({"/socket": UserSocket})


async def join(client: Client, topic: str, payload: dict[str, Any], join_ref: str = "1") -> None:
    client.send(join_ref, join_ref, topic, "phx_join", payload)
    await client.settle()


def pushes(client: Client, topic: str) -> list[list[Any]]:
    return [f for f in client.transport.frames() if f[2] == topic and f[3] != "phx_reply"]


async def publish(endpoint: Endpoint, topic: str, numbers: range) -> None:
    for n in numbers:
        await endpoint.broadcast(topic, "msg", {"n": n})


async def test_positions_ride_in_the_ref_on_history_topics_only() -> None:
    endpoint = make()
    client = await connect(endpoint, UserSocket)
    await join(client, "room:1", {})
    await join(client, "plain:1", {}, "2")
    await publish(endpoint, "room:1", range(1, 4))
    await publish(endpoint, "plain:1", range(1, 2))
    await client.settle()
    store = endpoint.pubsub.history_store
    assert isinstance(store, MemoryHistory)
    refs = [f[1] for f in pushes(client, "room:1")]
    assert refs == [f"{store.epoch}:{n}" for n in (1, 2, 3)]
    assert all(":" in r and not r.isdigit() for r in refs)
    assert [f[1] for f in pushes(client, "plain:1")] == [None]
    # The first matching route decides: plain:vip is served without history.
    assert endpoint.pubsub.history_policy("plain:vip") is None
    assert endpoint.pubsub.history_policy("room:x") == RoomChannel.history


async def test_rejoin_replays_missed_messages_in_order_then_goes_live() -> None:
    endpoint = make()
    first = await connect(endpoint, UserSocket)
    await join(first, "room:1", {"phx_recover": None})
    outcome = pushes(first, "room:1")[0]
    assert outcome[3] == "phx_recovery"
    assert outcome[4]["recovered"] is False and outcome[4]["reason"] == "no_position"
    await publish(endpoint, "room:1", range(1, 3))
    await first.settle()
    last = pushes(first, "room:1")[-1][1]
    first.socket.connection_lost()
    await publish(endpoint, "room:1", range(3, 6))  # missed
    SEEN.clear()
    second = await connect(endpoint, UserSocket)
    await join(second, "room:1", {"phx_recover": last, "nick": "ann"})
    # The join callback sees the position, never the reserved key.
    assert [({"nick": "ann"}, Position.parse(last))] == SEEN
    await publish(endpoint, "room:1", range(6, 7))
    await second.settle()
    frames = pushes(second, "room:1")
    assert frames[0][3] == "phx_recovery"
    epoch = last.split(":")[0]
    assert frames[0][4] == {
        "recovered": True,
        "reason": None,
        "position": f"{epoch}:5",
        "replayed": 3,
    }
    assert [f[4]["n"] for f in frames[1:]] == [3, 4, 5, 6]
    assert [f[1] for f in frames[1:]] == [f"{epoch}:{n}" for n in (3, 4, 5, 6)]
    # The reply came first, then the outcome.
    kinds = [f[3] for f in second.transport.frames()]
    assert kinds[0] == "phx_reply" and kinds[1] == "phx_recovery"


async def test_over_the_size_is_too_old_and_nothing_is_replayed() -> None:
    endpoint = make()
    await publish(endpoint, "room:1", range(1, 3))
    history = await endpoint.history("room:1")
    mark = history[-1].ref
    await publish(endpoint, "room:1", range(3, 9))  # 6 > size 5
    client = await connect(endpoint, UserSocket)
    await join(client, "room:1", {"phx_recover": mark})
    frames = pushes(client, "room:1")
    assert len(frames) == 1
    assert frames[0][4]["recovered"] is False and frames[0][4]["reason"] == "too_old"
    assert frames[0][4]["position"].endswith(":8")


async def test_older_than_the_ttl_is_too_old() -> None:
    endpoint = make()
    clock = Clock()
    endpoint.pubsub.history_store = MemoryHistory(clock)
    await publish(endpoint, "room:1", range(1, 3))
    mark = (await endpoint.history("room:1"))[0].ref
    clock.now += 61.0
    client = await connect(endpoint, UserSocket)
    await join(client, "room:1", {"phx_recover": mark})
    assert pushes(client, "room:1")[0][4]["reason"] == "too_old"
    assert await endpoint.history("room:1") == []
    # Nothing missed and nothing stored: still recovered (an empty replay).
    await join(client, "room:1", {"phx_recover": mark.replace(":1", ":2")}, "2")
    assert pushes(client, "room:1")[-1][4]["recovered"] is True


async def test_a_reset_store_says_epoch_changed() -> None:
    endpoint = make()
    await publish(endpoint, "room:1", range(1, 3))
    mark = (await endpoint.history("room:1"))[-1].ref
    store = endpoint.pubsub.history_store
    assert store is not None
    await store.reset()
    await publish(endpoint, "room:1", range(3, 4))
    client = await connect(endpoint, UserSocket)
    await join(client, "room:1", {"phx_recover": mark})
    frames = pushes(client, "room:1")
    assert frames[0][4]["reason"] == "epoch_changed"
    assert frames[0][4]["position"].endswith(":1")
    assert len(frames) == 1


@pytest.mark.parametrize(
    ("topic", "sent", "reason"),
    [
        ("plain:1", "e1:1", "history_off"),
        ("room:1", "12", "invalid_position"),
        ("room:1", {"x": 1}, "invalid_position"),
    ],
)
async def test_unusable_requests_say_why(topic: str, sent: Any, reason: str) -> None:
    endpoint = make()
    client = await connect(endpoint, UserSocket)
    await join(client, topic, {"phx_recover": sent})
    frames = pushes(client, topic)
    assert frames[0][3] == "phx_recovery" and frames[0][4]["reason"] == reason


async def test_a_position_ahead_of_the_store_is_not_found() -> None:
    endpoint = make()
    await publish(endpoint, "room:1", range(1, 2))
    mark = Position.parse((await endpoint.history("room:1"))[0].ref)
    assert mark is not None
    client = await connect(endpoint, UserSocket)
    await join(client, "room:1", {"phx_recover": str(Position(mark.epoch, 7))})
    assert pushes(client, "room:1")[0][4]["reason"] == "not_found"


async def test_joins_without_the_key_get_no_outcome() -> None:
    endpoint = make()
    client = await connect(endpoint, UserSocket)
    await join(client, "room:1", {})
    assert pushes(client, "room:1") == []


class SlowStore(MemoryHistory):
    """Lets the test broadcast while a rejoin's read is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = asyncio.Event()
        self.go = asyncio.Event()

    async def read(self, topic: str, history: History, after: int | None) -> HistorySlice:
        self.reading.set()
        await self.go.wait()
        return await super().read(topic, history, after)


async def test_live_messages_during_the_replay_wait_and_are_not_doubled() -> None:
    endpoint = make()
    store = SlowStore()
    endpoint.pubsub.history_store = store
    await publish(endpoint, "room:1", range(1, 3))
    store.go.set()
    mark = (await endpoint.history("room:1"))[0].ref
    store.go.clear()
    client = await connect(endpoint, UserSocket)
    client.send("1", "1", "room:1", "phx_join", {"phx_recover": mark})
    await asyncio.wait_for(store.reading.wait(), 2)
    await publish(endpoint, "room:1", range(3, 5))  # stored, and held for the client
    store.go.set()
    await client.settle()
    await publish(endpoint, "room:1", range(5, 6))
    await client.settle()
    frames = pushes(client, "room:1")
    assert frames[0][4]["recovered"] is True
    assert [f[4]["n"] for f in frames[1:]] == [2, 3, 4, 5]


async def test_binary_broadcasts_are_refused_on_history_topics() -> None:
    endpoint = make()
    with pytest.raises(EncodeError, match="no ref to carry"):
        await endpoint.broadcast("room:1", "bin", b"\x00")
    await endpoint.broadcast("plain:1", "bin", b"\x00")  # no history: fine


async def test_history_reads() -> None:
    endpoint = make()
    await publish(endpoint, "room:1", range(1, 4))
    stored = await endpoint.history("room:1")
    assert [b.payload["n"] for b in stored] == [1, 2, 3]
    assert all(type(b) is Broadcast and b.topic == "room:1" for b in stored)
    after = await endpoint.history("room:1", after=stored[0].ref)
    assert [b.payload["n"] for b in after] == [2, 3]
    with pytest.raises(UsageError, match="no history"):
        await endpoint.history("plain:1")
    with pytest.raises(UsageError, match="not a position"):
        await endpoint.history("room:1", after="7")


def test_policy_is_first_match_and_validated() -> None:
    h = History(size=3, ttl=None)
    policy = HistoryPolicy([("a:b", None), ("a:*", h)])
    assert policy("a:b") is None and policy("a:c") is h and policy("b") is None
    assert not HistoryPolicy([("a:*", None)])
    with pytest.raises(Exception, match="size"):
        History(size=0)
    with pytest.raises(Exception, match="ttl"):
        History(ttl=-1)


def test_positions_parse_strictly() -> None:
    assert Position.parse("abc:12") == Position("abc", 12)
    assert str(Position("abc", 12)) == "abc:12"
    for bad in ("12", ":1", "a:", "a:-1", "a:1.5", "a b:1", 12, None, "a:\u0661"):
        assert Position.parse(bad) is None


def test_positioned_messages_round_trip_and_refuse_garbage() -> None:
    from phoenix_channels.pubsub import codec

    head = codec.positioned_head(b"node-a")
    body = codec.encode_value(["room:1", Broadcast("room:1", "msg", {"n": 1}), 7])
    data = head + bytes((len(b"e1:5"),)) + b"e1:5" + body
    topic, broadcast, token = codec.decode_positioned(data, b"node-a")
    assert (topic, broadcast, token) == ("room:1", Broadcast("room:1", "msg", {"n": 1}, "e1:5"), 7)
    assert codec.decode_positioned(data, b"node-b")[2] is None  # a token is the sender's only
    with pytest.raises(codec.MalformedMessage):
        codec.decode(data, b"node-b")  # never read as a plain broadcast
    for bad in (data[:5], head + b"\x09e1:5", head + b"\x04e1:5" + b"\xc1"):
        with pytest.raises(codec.MalformedMessage):
            codec.decode_positioned(bad, b"node-a")
    # A Broadcast with a position keeps it across nodes; one without stays as before.
    assert codec.decode_value(codec.encode_value(Broadcast("t", "e", {}, "e1:2"))).ref == "e1:2"
    assert codec.decode_value(codec.encode_value(Broadcast("t", "e", {}))).ref is None


def test_a_store_with_a_gap_is_never_presented_as_complete() -> None:
    from phoenix_channels.history.recovery import decide

    def stored(*offsets: int) -> list[Broadcast]:
        return [Broadcast("t", "m", {}, f"e:{n}") for n in offsets]

    asked = Position("e", 2)
    whole = decide(asked, HistorySlice("e", 5, 1, stored(3, 4, 5)))
    assert whole.recovered and whole.replayed == 3
    for messages in (stored(3, 5), stored(3, 4), stored(4, 5, 6), stored(3, 4, 5, 5)):
        outcome = decide(asked, HistorySlice("e", 5, 1, messages))
        assert (outcome.recovered, outcome.reason) == (False, "not_found")


async def test_a_recovery_emits_channel_recover() -> None:
    from phoenix_channels import telemetry

    seen: list[tuple[Any, Any]] = []
    telemetry.attach(
        "history-test", [telemetry.CHANNEL_RECOVER], lambda e, m, d: seen.append((m, d))
    )
    try:
        endpoint = make()
        await publish(endpoint, "room:1", range(1, 3))
        mark = (await endpoint.history("room:1"))[0].ref
        client = await connect(endpoint, UserSocket)
        await join(client, "room:1", {"phx_recover": mark})
        await join(client, "plain:1", {}, "2")  # no key: no event
    finally:
        telemetry.detach("history-test")
    assert len(seen) == 1
    measurements, metadata = seen[0]
    assert measurements["replayed"] == 1 and measurements["duration"] >= 0
    assert metadata["topic"] == "room:1" and metadata["route"] == "room:*"
    assert (metadata["recovered"], metadata["reason"]) == (True, None)
