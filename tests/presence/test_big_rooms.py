"""Big rooms: batched presence_diff under churn at scale, and count mode.

Three nodes joined by the in-process hub. Node a holds a room of 20,000
presences and churns it (joins and leaves of random members, 20 per tick);
observers on both nodes take ``presence_state`` at different moments of
the churn (so some in the middle of a batch interval) and then apply every
``presence_diff`` with the JS helper's rules (:class:`HelperView`). After
the churn every observer's view equals its node's list, and each got far
fewer diffs than there were changes.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from phoenix_channels import Broadcast, ConfigurationError, Endpoint, Socket
from phoenix_channels.presence import Presence
from phoenix_channels.presence.batch import merge_diffs
from phoenix_channels.presence.tracker import Diff

from .support import Hub, eventually

ROOM = "room:big"
MEMBERS = 20_000
TICKS = 150  # each: JOINS joins and as many leaves, then a 10 ms pause (2,000 changes/s)
JOINS = 10
INTERVAL = 0.2
FAST: dict[str, Any] = {"broadcast_period": 0.05, "down_period": 5.0}


class _NoSocket(Socket):
    channels: dict[str, Any] = {}


class HelperView:
    """What the JS ``Presence`` helper holds: ``presence_state``, then diffs (syncDiff rules)."""

    def __init__(self, pubsub: Any, state: dict[str, Any], topic: str) -> None:
        self.view: dict[str, dict[str, Any]] = {
            key: {m["phx_ref"]: m for m in p["metas"]} for key, p in state.items()
        }
        self.diffs = 0
        self.counts: list[int] = []
        pubsub.subscribe(topic, self.receive)

    def receive(self, message: Any) -> None:
        assert isinstance(message, Broadcast)
        if message.event == "presence_count":
            self.counts.append(message.payload["count"])
            return
        assert message.event == "presence_diff", message.event
        self.diffs += 1
        joins, leaves = message.payload["joins"], message.payload["leaves"]
        for key, presence in joins.items():
            current = self.view.get(key, {})
            metas = {m["phx_ref"]: m for m in presence["metas"]}
            for ref, meta in current.items():
                metas.setdefault(ref, meta)
            self.view[key] = metas
        for key, presence in leaves.items():
            current = self.view.get(key)
            if current is None:
                continue
            for meta in presence["metas"]:
                current.pop(meta["phx_ref"], None)
            if not current:
                del self.view[key]

    def refs(self) -> dict[str, set[str]]:
        return {key: set(metas) for key, metas in self.view.items()}


def server_refs(presence: Presence, topic: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for key, meta in presence.tracker.list(topic):
        out.setdefault(str(key), set()).add(meta["phx_ref"])
    return out


async def observe(presence: Presence, topic: str) -> HelperView:
    """A client joining now: the state and the subscription in one step, as a channel gets them."""
    state = await presence.list(topic)
    return HelperView(presence.endpoint.pubsub, state, topic)


def test_merge_keeps_each_metas_last_operation() -> None:
    a1, a2, b1 = {"phx_ref": "a1"}, {"phx_ref": "a2", "phx_ref_prev": "a1"}, {"phx_ref": "b1"}
    diffs = [
        Diff("t", [("a", a1)], []),
        Diff("t", [("a", a2)], [("a", a1)]),  # an update
        Diff("t", [("b", b1)], []),
        Diff("t", [], [("b", b1)]),  # joined and left within the interval: still a leave
    ]
    joins, leaves = merge_diffs(diffs)
    assert joins == [("a", a2)]
    assert sorted(m["phx_ref"] for _, m in leaves) == ["a1", "b1"]
    # Left and came back (a healed partition): a join.
    joins, leaves = merge_diffs(
        [Diff("t", [], [("c", {"phx_ref": "c1"})]), Diff("t", [("c", {"phx_ref": "c1"})], [])]
    )
    assert (joins, leaves) == ([("c", {"phx_ref": "c1"})], [])


def test_options_are_checked() -> None:
    endpoint = Endpoint(sockets={"/socket": _NoSocket})
    with pytest.raises(ConfigurationError, match="diff_interval must be"):
        Presence(endpoint, diff_interval=-1)
    with pytest.raises(ConfigurationError, match="count_interval must be > 0"):
        Presence(endpoint, "p2", count_interval=0)


async def test_batched_diffs_keep_every_helper_in_sync_under_churn() -> None:
    hub = Hub()
    endpoints = [Endpoint(sockets={"/socket": _NoSocket}, pubsub=hub.pubsub(n)) for n in "abc"]
    a, b, c = (Presence(e, diff_interval=INTERVAL, **FAST) for e in endpoints)
    for endpoint in endpoints:
        await endpoint.start()
    rng = random.Random(14)
    try:
        owners: list[tuple[object, str]] = []
        for i in range(MEMBERS):
            owner = object()
            a.tracker.track_nowait(owner, ROOM, f"u{i % (MEMBERS // 2)}", {"i": i})
            owners.append((owner, f"u{i % (MEMBERS // 2)}"))
        await eventually(
            lambda: b.tracker.count(ROOM) == c.tracker.count(ROOM) == MEMBERS,
            "nodes b and c have the 20,000",
            timeout=60,
        )
        observers: list[tuple[Presence, HelperView]] = []
        held_before = a._batcher.held
        n = MEMBERS
        for tick in range(TICKS):
            if tick % 50 == 0:  # clients join during the churn, mid-interval
                observers.append((a, await observe(a, ROOM)))
                observers.append((b, await observe(b, ROOM)))
                observers.append((c, await observe(c, ROOM)))
            for _ in range(JOINS):  # one tick's changes, with no pause: one batch at most
                owner = object()
                key = f"u{rng.randrange(n * 2)}"
                n += 1
                a.tracker.track_nowait(owner, ROOM, key, {"i": n})
                owners.append((owner, key))
                gone = owners.pop(rng.randrange(len(owners)))
                a.tracker.untrack_nowait(gone[0], ROOM, gone[1])
            await asyncio.sleep(0.01)
        assert a.tracker.count(ROOM) == MEMBERS
        await eventually(
            lambda: server_refs(b, ROOM) == server_refs(c, ROOM) == server_refs(a, ROOM),
            "the replicas of nodes b and c equal node a's after the churn",
            timeout=30,
        )
        for node, observer in observers:
            await eventually(
                lambda node=node, observer=observer: observer.refs() == server_refs(node, ROOM),
                "every helper's view equals its node's list",
                timeout=10,
            )
        changes = TICKS * JOINS * 2
        assert a._batcher.held - held_before == changes
        for _, observer in observers:
            # One batch per tick at most (a tick's changes come with no pause),
            # against one diff per change without batching.
            assert 0 < observer.diffs <= TICKS, observer.diffs
        assert a._batcher.emitted <= TICKS + 1
        assert b._batcher.emitted <= a._batcher.emitted + TICKS
        assert c._batcher.emitted <= a._batcher.emitted + TICKS
    finally:
        for endpoint in endpoints:
            await endpoint.stop()


class CountedPresence(Presence):
    def counts_only(self, topic: str) -> bool:
        return topic.startswith("stadium:")


async def test_count_mode_sends_counts_and_no_lists() -> None:
    hub = Hub()
    endpoints = [Endpoint(sockets={"/socket": _NoSocket}, pubsub=hub.pubsub(n)) for n in "ab"]
    a, b = (CountedPresence(e, count_interval=0.05, **FAST) for e in endpoints)
    for endpoint in endpoints:
        await endpoint.start()
    try:
        watchers = [HelperView(p.endpoint.pubsub, {}, "stadium:1") for p in (a, b)]
        owners = [object() for _ in range(300)]
        for i, owner in enumerate(owners):
            await a.track(owner, f"fan{i}", {}, topic="stadium:1")
        await b.track(object(), "fan0", {}, topic="stadium:1")  # a second device of fan0
        await eventually(lambda: a.tracker.count("stadium:1") == 301, "a sees b's presence")
        assert await a.count("stadium:1") == 301
        assert await a.count("stadium:1", keys=True) == 300
        for owner in owners[:100]:
            await a.untrack(owner)
        for presence, watcher in zip((a, b), watchers, strict=True):
            await eventually(
                lambda w=watcher: bool(w.counts) and w.counts[-1] == 201,
                "members get the count",
            )
            assert watcher.diffs == 0, "no presence_diff in count mode"
            assert await presence.count("stadium:1") == 201
        # Counts are merged too: far fewer messages than changes.
        assert len(watchers[0].counts) < 100
        # Other topics still get lists and diffs.
        normal = HelperView(a.endpoint.pubsub, {}, "room:1")
        await a.track(object(), "x", {}, topic="room:1")
        assert normal.diffs == 1 and set(normal.view) == {"x"}
    finally:
        for endpoint in endpoints:
            await endpoint.stop()
