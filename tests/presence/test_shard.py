"""The replication protocol of one replica (presence/shard.py), message by message, no I/O."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from phoenix_channels import ConfigurationError
from phoenix_channels.presence import AlreadyTrackedError, NotTrackedError, TrackerOptions, wire
from phoenix_channels.presence.shard import Outgoing, Shard
from phoenix_channels.presence.state import Entry

FAST = TrackerOptions(
    broadcast_period=1.0, max_silent_periods=3, down_period=8.0, permdown_period=20.0
)


class Node:
    def __init__(self, name: str, vsn: int = 1, options: TrackerOptions = FAST) -> None:
        self.diffs: list[tuple[list[Any], list[Any]]] = []
        self.shard = Shard(name, vsn, f"pubsub-{name}", self.report, options)

    def report(self, joins: list[Entry], leaves: list[Entry]) -> None:
        self.diffs.append(([e.key for e in joins], [e.key for e in leaves]))

    def visible(self, topic: str = "t") -> list[Any]:
        return sorted(e.key for e in self.shard.state.get_by_topic(topic))

    def take(self) -> list[tuple[list[Any], list[Any]]]:
        diffs, self.diffs = self.diffs, []
        return diffs


def kinds(out: list[Outgoing]) -> list[tuple[str | None, str]]:
    return [(target, message["type"]) for target, message in out]


def deliver(out: list[Outgoing], *nodes: Node, now: float = 0.0) -> list[Outgoing]:
    """Hand each message to the nodes it is for (through JSON); returns their answers."""
    answers: list[Outgoing] = []
    for target, message in out:
        for node in nodes:
            if target is None or target == node.shard.node:
                decoded = wire.decode(orjson.loads(orjson.dumps(message)))
                answers.extend(node.shard.handle(decoded, now))
    return answers


# -- options ------------------------------------------------------------------------------


def test_defaults_are_phoenixs() -> None:
    options = TrackerOptions()
    assert options.broadcast_period == 1.5
    assert options.max_silent_periods == 10
    assert options.down_period == 30.0
    assert options.permdown_period == 1200.0
    assert options.clock_sample_periods == 2
    assert options.max_delta_sizes == (100, 1000, 10_000)
    assert options.permdown_on_shutdown is False


def test_an_idle_replica_heartbeats_often_enough_for_a_short_down_period() -> None:
    assert TrackerOptions().silent_periods == 10  # Phoenix's: every 16.5 s, down after 30 s
    short = TrackerOptions(broadcast_period=0.1, down_period=1.0)
    assert short.silent_periods == 4  # an empty heartbeat every 0.5 s, not every 1.1 s
    a = Node("a", options=short)
    beats = [t for t in range(40) if a.shard.tick(t / 10)]
    assert all(later - earlier <= 5 for earlier, later in itertools.pairwise(beats))
    assert TrackerOptions(broadcast_period=1.0, down_period=2.0).silent_periods == 0


def test_down_period_follows_the_broadcast_period_unless_given() -> None:
    assert TrackerOptions(broadcast_period=0.1).down_period == pytest.approx(2.0)
    assert TrackerOptions(broadcast_period=0.1, down_period=0.5).down_period == 0.5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"broadcast_period": 1.0, "down_period": 1.5},
            "down_period (1.5) must be at least twice as large as the broadcast_period (1.0)",
        ),
        (
            {"down_period": 30.0, "permdown_period": 30.0},
            "permdown_period (30.0) must be larger than the down_period (30.0)",
        ),
        ({"broadcast_period": 0}, "broadcast_period must be a positive number"),
        ({"broadcast_period": True}, "broadcast_period must be a positive number"),
        ({"max_silent_periods": 1.5}, "max_silent_periods must be a positive number"),
        ({"max_delta_sizes": ()}, "max_delta_sizes must be a non-empty list"),
        ({"max_delta_sizes": (10, 0)}, "max_delta_sizes must be a non-empty list"),
    ],
)
def test_bad_options_are_refused_with_a_message(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrackerOptions(**options)


# -- local changes ----------------------------------------------------------------------------


def test_track_twice_is_refused_and_update_of_nothing_too() -> None:
    a = Node("a")
    a.shard.track(1, "t", "k", {"phx_ref": "r1"})
    with pytest.raises(AlreadyTrackedError, match="'k' is already tracked under 't'"):
        a.shard.track(1, "t", "k", {"phx_ref": "r2"})
    a.shard.track(2, "t", "k", {"phx_ref": "r3"})  # another owner: fine
    a.shard.track(1, "u", "k", {"phx_ref": "r4"})  # another topic: fine
    with pytest.raises(NotTrackedError, match="'x' is not tracked under 't'"):
        a.shard.update(1, "t", "x", {})
    assert a.shard.untrack(1, "t", "nothing") is None  # untrack of nothing: no error
    assert a.take() == [(["k"], []), (["k"], []), (["k"], [])]


def test_untrack_all_reports_every_entry_of_the_owner_in_one_diff() -> None:
    a = Node("a")
    a.shard.track(1, "t", "k1", {})
    a.shard.track(1, "u", "k2", {})
    a.shard.track(2, "t", "k3", {})
    a.take()
    a.shard.untrack_all(1)
    assert a.take() == [([], ["k1", "k2"])]
    assert a.visible() == ["k3"]


# -- heartbeats ---------------------------------------------------------------------------------


def test_the_first_tick_announces_then_quiet_ticks_are_silent_until_the_limit() -> None:
    a = Node("a")
    assert kinds(a.shard.tick(0.0)) == [(None, "heartbeat")]
    quiet = [kinds(a.shard.tick(float(t))) for t in range(1, 5)]
    # max_silent_periods=3: three quiet ticks, then an empty heartbeat.
    assert quiet == [[], [], [], [(None, "heartbeat")]]
    a.shard.track(1, "t", "k", {})
    (out,) = [m for _, m in a.shard.tick(6.0)]
    assert out["delta"] is not None  # a change goes out on the next tick


def test_heartbeat_from_an_unseen_node_then_transfer_brings_its_entries() -> None:
    a, b = Node("a"), Node("b")
    a.shard.track(1, "t", "ka", {})
    a.shard.tick(0.0)  # a's first delta is lost: b never saw it
    deliver(a.shard.tick(1.0) + a.shard.tick(2.0) + a.shard.tick(3.0) + a.shard.tick(4.0), b)
    assert b.shard.peer_status() == {"a": "up"}
    assert b.visible() == []
    # b's next transfer decision asks a, whose clock dominates b's.
    out = b.shard.tick(0.0) + b.shard.tick(1.0)
    assert ("pubsub-a", "transfer_req") in kinds(out)
    acks = deliver(out, a)
    assert kinds(acks) == [("pubsub-b", "transfer_ack")]
    deliver(acks, b)
    assert b.visible() == ["ka"]
    assert b.take()[-1] == (["ka"], [])


def test_transfer_requests_go_only_to_the_peers_whose_clocks_dominate() -> None:
    a, b, c = Node("a"), Node("b"), Node("c")
    nodes = (a, b, c)
    for n in nodes:  # everyone meets everyone
        deliver(n.shard.tick(0.0), *nodes)
    a.shard.track(1, "t", "ka", {})
    b.shard.track(1, "t", "kb", {})
    deliver(b.shard.tick(1.0), a, now=1.0)  # only a hears of kb
    deliver(a.shard.tick(1.0), c, now=1.0)  # only c hears of ka, and a's clock (knows kb)
    # b's next (empty) heartbeat reaches c: b knows kb but not ka.
    quiet = [m for t in (2.0, 3.0, 4.0, 5.0) for m in b.shard.tick(t)]
    assert kinds(quiet) == [(None, "heartbeat")]
    deliver(quiet, c, now=5.0)
    # a's clock dominates b's and c's: c asks a, and only a.
    out = c.shard.tick(5.0) + c.shard.tick(5.5)
    requests = [target for target, kind in kinds(out) if kind == "transfer_req"]
    assert requests == ["pubsub-a"]
    deliver(deliver(out, a, b, now=5.5), c, now=5.5)
    assert c.visible() == ["ka", "kb"]


def test_a_peer_silent_past_down_period_leaves_and_comes_back_with_the_same_vsn() -> None:
    a, b = Node("a"), Node("b")
    a.shard.track(1, "t", "ka", {})
    deliver(a.shard.tick(0.0), b, now=0.0)
    assert b.visible() == ["ka"]
    b.take()
    b.shard.tick(7.0)
    assert b.shard.peer_status() == {"a": "up"}
    b.shard.tick(8.5)  # more than 8 s since a's last heartbeat
    assert b.shard.peer_status() == {"a": "down"}
    assert b.take() == [([], ["ka"])]
    assert b.visible() == []
    # a is back (same incarnation): its entries join again, no transfer needed.
    deliver(
        a.shard.tick(9.0) + a.shard.tick(10.0) + a.shard.tick(11.0) + a.shard.tick(12.0),
        b,
        now=12.0,
    )
    assert b.shard.peer_status() == {"a": "up"}
    assert b.take() == [(["ka"], [])]


def test_a_peer_silent_past_permdown_period_is_forgotten() -> None:
    a, b = Node("a"), Node("b")
    a.shard.track(1, "t", "ka", {})
    deliver(a.shard.tick(0.0), b, now=0.0)
    b.take()
    b.shard.tick(21.0)  # past permdown (20 s) directly: down, then gone
    assert b.shard.peer_status() == {}
    assert b.take() == [([], ["ka"])]
    assert b.shard.state.size() == 0 and ("a", 1) not in b.shard.state.context


def test_a_restarted_peer_replaces_its_old_incarnation_at_once() -> None:
    a, b = Node("a", vsn=1), Node("b")
    a.shard.track(1, "t", "old", {})
    deliver(a.shard.tick(0.0), b)
    b.take()
    a2 = Node("a", vsn=2)
    a2.shard.track(1, "t", "new", {})
    deliver(a2.shard.tick(1.0), b, now=1.0)
    assert b.take() == [([], ["old"]), (["new"], [])]
    assert b.visible() == ["new"]
    assert ("a", 1) not in b.shard.state.context
    # A late heartbeat of the old incarnation changes nothing.
    deliver(a.shard.tick(2.0) + a.shard.tick(3.0) + a.shard.tick(4.0) + a.shard.tick(5.0), b)
    assert b.visible() == ["new"] and b.take() == []


def test_graceful_permdown_drops_the_peer_at_once_and_for_good() -> None:
    a, b = Node("a"), Node("b")
    a.shard.track(1, "t", "ka", {})
    deliver(a.shard.tick(0.0), b)
    b.take()
    a.shard.track(1, "t", "late", {})
    in_flight = a.shard.tick(1.0)  # sent before the goodbye, arrives after it
    deliver([a.shard.goodbye()], b)
    assert b.take() == [([], ["ka"])]
    assert b.shard.peer_status() == {}
    deliver(in_flight, b, now=1.0)
    assert b.shard.peer_status() == {} and b.take() == []
    # A new incarnation of the node is welcome.
    a2 = Node("a", vsn=2)
    a2.shard.track(1, "t", "back", {})
    deliver(a2.shard.tick(2.0), b, now=2.0)
    assert b.visible() == ["back"]


def test_messages_of_a_node_using_our_own_name_are_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, twin = Node("a", vsn=1), Node("a", vsn=2)
    twin.shard.track(1, "t", "k", {})
    deliver(twin.shard.tick(0.0), a)
    assert a.shard.peer_status() == {}
    assert a.visible() == []
    assert "node names must be unique in a cluster" in caplog.text


def test_transfer_messages_for_another_node_are_ignored() -> None:
    a, b, c = Node("a"), Node("b"), Node("c")
    for n in (a, b, c):
        deliver(n.shard.tick(0.0), a, b, c)
    request = wire.encode_transfer_req(c.shard.replica_id, c.shard.node, "b", 7, {})
    assert deliver([(None, request)], a) == []
    extract = c.shard.state.extract(b.shard.replica_id, {})
    ack = wire.encode_transfer_ack(c.shard.replica_id, "b", 7, extract)
    assert deliver([(None, ack)], a) == []


# -- the wire -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("a string", "expected a map"),
        ({"phx_tracker": 2, "type": "heartbeat"}, "version 2, this node speaks 1"),
        ({"phx_tracker": 1, "type": "heartbeat", "from": ["a"]}, "from must be"),
        ({"phx_tracker": 1, "type": "nope", "from": ["a", 1]}, "unknown type 'nope'"),
        (
            {
                "phx_tracker": 1,
                "type": "heartbeat",
                "from": ["a", 1],
                "node": "n",
                "clock": [["a", 1, -1]],
                "delta": None,
            },
            "clock must be a non-negative int",
        ),
        (
            {
                "phx_tracker": 1,
                "type": "heartbeat",
                "from": ["a", 1],
                "node": "n",
                "clock": [],
                "delta": {"replicas": [], "start": [[3, 0]], "end": [], "clouds": [], "values": []},
            },
            "replica index 3 out of range",
        ),
        (
            {
                "phx_tracker": 1,
                "type": "heartbeat",
                "from": ["a", 1],
                "node": "n",
                "clock": [],
                "delta": {
                    "replicas": [["a", 1]],
                    "start": [],
                    "end": [],
                    "clouds": [],
                    "values": [[0, "t", [[1, 1, "k", "not a map"]]]],
                },
            },
            "an entry's meta must be a map",
        ),
        (
            {
                "phx_tracker": 1,
                "type": "heartbeat",
                "from": ["a", 1],
                "node": "n",
                "clock": [],
                "delta": {
                    "replicas": [["a", 1]],
                    "start": [],
                    "end": [],
                    "clouds": [],
                    "values": [[0, "t", [[1, 1, 1.5, {}]]]],
                },
            },
            "a key must be a str or an int",
        ),
    ],
)
def test_malformed_messages_raise_replication_errors(message: Any, error: str) -> None:
    with pytest.raises(wire.ReplicationError, match=error):
        wire.decode(message)


def test_every_message_kind_round_trips_through_json() -> None:
    a = Node("a")
    a.shard.track(7, "room:1", "alice", {"n": [1, {"x": None}]})
    a.shard.track(7, "room:1", 42, {})
    delta = a.shard.state.take_delta()
    ref = a.shard.replica_id
    clock = a.shard.state.clocks()[1]
    messages = [
        wire.encode_heartbeat(ref, "pubsub-a", clock, delta),
        wire.encode_heartbeat(ref, "pubsub-a", clock, None),
        wire.encode_transfer_req(ref, "pubsub-a", "b", 3, clock),
        wire.encode_transfer_ack(ref, "b", 3, delta),
        wire.encode_transfer_ack(ref, "b", 3, a.shard.state.extract(("b", 1), clock)),
        wire.encode_permdown(ref),
    ]
    for message in messages:
        decoded = wire.decode(orjson.loads(orjson.dumps(message)))
        assert decoded.sender == ref
    hb = wire.decode(orjson.loads(orjson.dumps(messages[0])))
    assert isinstance(hb, wire.Heartbeat) and hb.delta is not None
    assert {(e.key, e.owner, e.topic) for e in hb.delta.values.values()} == {
        (42, 7, "room:1"),
        ("alice", 7, "room:1"),
    }
    assert hb.delta.clouds == delta.clouds and hb.delta.end == delta.end


def test_chunks_are_put_back_together_in_any_order_once() -> None:
    a = Node("a")
    for i in range(50):
        a.shard.track(i, "t", f"k{i}", {"pad": "p" * 40})
    (heartbeat,) = [m for _, m in a.shard.tick(0.0)]
    parts = wire.pack(heartbeat, a.shard.replica_id, 1, 500)
    assert len(parts) > 3 and all(len(p["data"]) <= 500 for p in parts)
    chunks = [wire.decode(p) for p in parts]
    reassembler = wire.Reassembler()
    order = [*reversed(chunks), chunks[0]]  # out of order, one part twice
    results = [reassembler.add(c) for c in order]  # type: ignore[arg-type]
    whole = [r for r in results if r is not None]
    assert len(whole) == 1 and reassembler.pending_bytes == 0
    decoded = wire.decode(whole[0])
    assert isinstance(decoded, wire.Heartbeat) and decoded.delta is not None
    assert len(decoded.delta.values) == 50


def test_incomplete_chunked_messages_are_bounded() -> None:
    reassembler = wire.Reassembler(max_messages=2, max_bytes=1000)
    sender = ("a", 1)
    for ident in range(5):  # five messages, only their first part ever arrives
        assert reassembler.add(wire.Chunk(sender, None, ident, 0, 2, b"x" * 100)) is None
    assert reassembler.dropped == 3 and reassembler.pending_bytes == 200
    assert reassembler.add(wire.Chunk(sender, None, 9, 0, 2, b"y" * 2000)) is None
    assert reassembler.pending_bytes <= 1000
    with pytest.raises(wire.ReplicationError, match="not JSON"):
        reassembler.add(wire.Chunk(sender, None, 10, 0, 1, b"{nope"))


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"data": "text"}, "chunk data must be bytes"),
        ({"seq": 3, "total": 3}, "chunk 3 of 3"),
        ({"to": 5}, "to must be a str"),
    ],
)
def test_malformed_chunks_are_refused(fields: dict[str, Any], error: str) -> None:
    chunk = {
        "phx_tracker": 1,
        "type": "chunk",
        "from": ["a", 1],
        "to": None,
        "id": 1,
        "seq": 0,
        "total": 1,
        "data": b"{}",
        **fields,
    }
    with pytest.raises(wire.ReplicationError, match=error):
        wire.decode(chunk)
