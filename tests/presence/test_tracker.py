"""The Tracker runtime: replicas replicating over real PubSubs in one process.

Either several trackers share one PubSub (each with its own node name), or
each node has its own PubSub and a hub carries messages between them
through the cluster codec, and can cut them apart (tests/presence/support.py).
Periods are short so failures are detected in well under a second; every
wait is bounded and says what it waited for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from phoenix_channels import ConfigurationError, PubSub, UsageError
from phoenix_channels.presence import AlreadyTrackedError, Diff, NotTrackedError, Tracker

from .support import Hub, eventually

FAST: dict[str, Any] = {"broadcast_period": 0.05, "down_period": 0.5, "permdown_period": 3.0}


def keys(tracker: Tracker, topic: str = "t") -> list[Any]:
    return sorted(key for key, _meta in tracker.list(topic))


@pytest.fixture
async def trackers() -> AsyncIterator[list[Tracker]]:
    started: list[Tracker] = []
    yield started
    for t in started:
        await t.stop()


async def start(trackers: list[Tracker], pubsub: PubSub, node: str, **options: Any) -> Tracker:
    tracker = Tracker(pubsub, "test", node_name=node, **{**FAST, **options})
    await tracker.start()
    trackers.append(tracker)
    return tracker


async def test_entries_replicate_both_ways(trackers: list[Tracker]) -> None:
    pubsub = PubSub()
    a = await start(trackers, pubsub, "a")
    b = await start(trackers, pubsub, "b")
    ref = await a.track("owner-1", "t", "alice", {"device": "phone"})
    await b.track("owner-2", "t", "bob", {})
    await eventually(lambda: keys(a) == keys(b) == ["alice", "bob"], "both see both")
    (meta,) = b.get_by_key("t", "alice")
    assert meta == {"device": "phone", "phx_ref": ref}
    new_ref = await a.update("owner-1", "t", "alice", lambda m: {**m, "device": "laptop"})
    await eventually(
        lambda: [m.get("device") for m in b.get_by_key("t", "alice")] == ["laptop"],
        "b sees the update",
    )
    (meta,) = b.get_by_key("t", "alice")
    assert meta["phx_ref"] == new_ref != ref and meta["phx_ref_prev"] == ref
    await a.untrack("owner-1", "t", "alice")
    await eventually(lambda: keys(b) == ["bob"], "b sees alice leave")


async def test_subscribers_get_local_diffs_at_once_and_remote_ones_after_a_heartbeat(
    trackers: list[Tracker],
) -> None:
    pubsub = PubSub()
    a = await start(trackers, pubsub, "a")
    b = await start(trackers, pubsub, "b")
    seen_a: list[Diff] = []
    seen_b: list[Diff] = []
    a.subscribe(seen_a.append)
    unsubscribe = b.subscribe(seen_b.append, topic="t")
    await a.track("o", "t", "k", {"x": 1})
    await a.track("o", "other", "k", {})
    # Reported inside the call, before it returned.
    assert [(d.topic, [k for k, _ in d.joins]) for d in seen_a] == [("t", ["k"]), ("other", ["k"])]
    await eventually(lambda: len(seen_b) == 1, "b's subscriber hears the remote join")
    assert seen_b[0].topic == "t" and seen_b[0].joins[0][0] == "k"  # topic filter: no "other"
    unsubscribe()
    await a.untrack("o")
    await eventually(lambda: keys(b) == [], "b sees the leave")
    assert len(seen_b) == 1


async def test_a_late_node_gets_the_whole_state(trackers: list[Tracker]) -> None:
    pubsub = PubSub()
    a = await start(trackers, pubsub, "a")
    for i in range(300):  # more than the small delta generation holds
        await a.track(f"o{i}", "t", f"k{i:03}", {})
    for i in range(0, 300, 3):
        await a.untrack(f"o{i}")
    await asyncio.sleep(0.2)  # a's deltas go out before b exists
    b = await start(trackers, pubsub, "b")
    await eventually(
        lambda: keys(b) == keys(a),
        "b catches up by transfer",
        describe=lambda: (len(keys(b)), b.stats()),
    )
    assert len(keys(b)) == 200
    assert a.stats()["transfers_sent"] >= 1


async def test_large_messages_travel_in_parts_no_larger_than_the_limit(
    trackers: list[Tracker],
) -> None:
    hub = Hub()
    a = await start(trackers, hub.pubsub("a"), "a", max_message_bytes=2048)
    for i in range(400):
        await a.track(f"o{i}", "t", f"k{i:03}", {"text": "x" * 50})
    await asyncio.sleep(0.2)  # the big delta has gone out (to nobody yet)
    b = await start(trackers, hub.pubsub("b"), "b", max_message_bytes=2048)
    await eventually(
        lambda: keys(b) == keys(a),
        "b gets the whole state, in parts",
        describe=lambda: (len(keys(b)), b.stats()),
    )
    # Every message on the wire, header and codec included, stays near the limit.
    assert 2048 < hub.largest < 2048 + 512, hub.largest
    assert b.stats()["bad_messages"] == 0


async def test_a_silent_node_leaves_after_the_down_period_and_a_restart_rejoins(
    trackers: list[Tracker],
) -> None:
    pubsub = PubSub()
    a = await start(trackers, pubsub, "a")
    b = await start(trackers, pubsub, "b")
    leaves: list[str] = []
    b.subscribe(lambda d: leaves.extend(k for k, _ in d.leaves))
    await a.track("o", "t", "alice", {})
    await eventually(lambda: keys(b) == ["alice"], "b sees alice")
    await a.stop()  # no permdown: a simply falls silent, as if it crashed
    trackers.remove(a)
    assert keys(b) == ["alice"]  # not at once: the down period must pass
    await eventually(lambda: leaves == ["alice"], "b reports alice's leave after down_period")
    assert keys(b) == [] and b.peers() == {"a": "down"}
    again = await start(trackers, pubsub, "a")  # the node restarts: a new incarnation
    await again.track("o", "t", "alice-again", {})
    await eventually(lambda: keys(b) == ["alice-again"], "b sees the new incarnation")
    assert b.peers() == {"a": "up"}


async def test_graceful_permdown_makes_peers_drop_the_node_at_once(trackers: list[Tracker]) -> None:
    pubsub = PubSub()
    # A long down period: only the permdown message can explain a quick leave.
    a = await start(trackers, pubsub, "a", down_period=60.0, permdown_period=120.0)
    b = await start(trackers, pubsub, "b", down_period=60.0, permdown_period=120.0)
    await a.track("o", "t", "alice", {})
    await eventually(lambda: keys(b) == ["alice"], "b sees alice")
    await a.graceful_permdown()
    trackers.remove(a)
    await eventually(lambda: keys(b) == [] and b.peers() == {}, "b drops a at once")


async def test_a_partition_hides_entries_and_healing_shows_them(trackers: list[Tracker]) -> None:
    hub = Hub()
    a = await start(trackers, hub.pubsub("a"), "a")
    b = await start(trackers, hub.pubsub("b"), "b")
    c = await start(trackers, hub.pubsub("c"), "c")
    await a.track("o", "t", "ka", {})
    await b.track("o", "t", "kb", {})
    await c.track("o", "t", "kc", {})
    everyone = ["ka", "kb", "kc"]
    await eventually(lambda: all(keys(t) == everyone for t in (a, b, c)), "all see all")
    hub.isolate("c")
    await eventually(
        lambda: keys(a) == keys(b) == ["ka", "kb"] and keys(c) == ["kc"],
        "both sides of the split drop the other side",
    )
    await c.untrack("o")  # a change during the split
    await c.track("o", "t", "kc2", {})
    hub.heal()
    await eventually(
        lambda: all(keys(t) == ["ka", "kb", "kc2"] for t in (a, b, c)),
        "everyone converges after the heal",
        describe=lambda: [(t.node_name, keys(t), t.peers()) for t in (a, b, c)],
    )
    assert hub.delivered > 0


async def test_a_task_owner_is_untracked_when_it_finishes(trackers: list[Tracker]) -> None:
    a = await start(trackers, PubSub(), "a")
    release = asyncio.Event()
    task = asyncio.get_running_loop().create_task(release.wait())
    await a.track(task, "services", "worker", {"pid": 1})
    assert a.tracked(task) == [("services", "worker", a.list("services")[0][1])]
    release.set()
    await task
    await eventually(lambda: a.list("services") == [], "the finished task's entry is gone")
    assert a.stats()["owners"] == 0
    with pytest.raises(UsageError, match="is done; it cannot be tracked"):
        await a.track(task, "services", "worker", {})


async def test_plain_owners_untrack_everything_and_leave_no_trace(trackers: list[Tracker]) -> None:
    a = await start(trackers, PubSub(), "a")
    await a.track("svc", "t1", "k", {})
    await a.track("svc", "t2", "k", {})
    with pytest.raises(AlreadyTrackedError):
        await a.track("svc", "t1", "k", {})
    with pytest.raises(NotTrackedError):
        await a.update("nobody", "t1", "k", {})
    await a.untrack("nobody")  # nothing tracked: nothing happens
    await a.untrack("svc")
    assert a.topics() == [] and a.stats()["owners"] == 0 and a.stats()["entries"] == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda t: t.track_nowait("o", "t", "k", {"when": object()}),
            "meta value at meta.when is a object; metas hold JSON values only",
        ),
        (lambda t: t.track_nowait("o", "t", "k", {1: "x"}), "meta keys must be str"),
        (lambda t: t.track_nowait("o", "t", "k", {"f": float("nan")}), "which JSON cannot carry"),
        (lambda t: t.track_nowait("o", "t", "k", ["not", "a", "dict"]), "a meta must be a dict"),
        (lambda t: t.track_nowait("o", "t", 1.5, {}), "a presence key must be a str or an int"),
        (lambda t: t.track_nowait("o", b"t", "k", {}), "a topic must be a str"),
        (lambda t: t.track_nowait(["unhashable"], "t", "k", {}), "an owner must be hashable"),
        (lambda t: t.untrack_nowait("o", "t"), "give the key too"),
    ],
)
async def test_bad_input_is_refused_before_anything_changes(
    trackers: list[Tracker], call: Any, message: str
) -> None:
    a = await start(trackers, PubSub(), "a")
    await a.track("o", "t", "existing", {})
    with pytest.raises(UsageError, match=message):
        call(a)
    assert keys(a) == ["existing"] and a.stats()["owners"] == 1


async def test_deeply_nested_metas_are_refused(trackers: list[Tracker]) -> None:
    a = await start(trackers, PubSub(), "a")
    meta: dict[str, Any] = {}
    inner = meta
    for _ in range(40):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(UsageError, match="nested deeper than 32 levels"):
        await a.track("o", "t", "k", meta)


async def test_two_trackers_with_one_name_and_node_on_one_pubsub_are_refused(
    trackers: list[Tracker],
) -> None:
    pubsub = PubSub()
    await start(trackers, pubsub, "a")
    with pytest.raises(ConfigurationError, match="already runs on this PubSub as node 'a'"):
        await Tracker(pubsub, "test", node_name="a", **FAST).start()
    other = Tracker(pubsub, "other-name", node_name="a", **FAST)  # another name is fine
    await other.start()
    trackers.append(other)


def test_options_are_checked_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="at least twice as large"):
        Tracker(PubSub(), "t", broadcast_period=1.0, down_period=1.0)
    with pytest.raises(ConfigurationError, match="tracker name must be a non-empty str"):
        Tracker(PubSub(), "")
    with pytest.raises(ConfigurationError, match="node_name must be a non-empty str"):
        Tracker(PubSub(), "t", node_name="")


async def test_garbage_on_the_gossip_topic_is_dropped_and_counted(
    trackers: list[Tracker], caplog: pytest.LogCaptureFixture
) -> None:
    pubsub = PubSub()
    a = await start(trackers, pubsub, "a")
    b = await start(trackers, pubsub, "b")
    caplog.set_level(logging.WARNING, "phoenix_channels.presence")
    pubsub.local_broadcast(a.topic, {"phx_tracker": 1, "type": "heartbeat", "from": "bad"})
    pubsub.local_broadcast(a.topic, {"phx_tracker": 99})
    pubsub.local_broadcast(a.topic, "not a tracker message at all")  # not ours: ignored
    assert a.stats()["bad_messages"] == 2 == b.stats()["bad_messages"]
    assert "dropped a message: bad tracker message: from must be a list" in caplog.text
    await a.track("o", "t", "k", {})
    await eventually(lambda: keys(b) == ["k"], "replication still works")


async def test_a_raising_subscriber_does_not_stop_the_others(
    trackers: list[Tracker], caplog: pytest.LogCaptureFixture
) -> None:
    a = await start(trackers, PubSub(), "a")
    seen: list[Diff] = []

    def boom(diff: Diff) -> None:
        raise RuntimeError("subscriber bug")

    a.subscribe(boom)
    a.subscribe(seen.append)
    await a.track("o", "t", "k", {})
    assert len(seen) == 1
    assert "diff callback" in caplog.text and "subscriber bug" in caplog.text


async def test_tracking_before_start_is_gossiped_once_started() -> None:
    pubsub = PubSub()
    a = Tracker(pubsub, "early", node_name="a", **FAST)
    b = Tracker(pubsub, "early", node_name="b", **FAST)
    await a.track("o", "t", "k", {})
    assert keys(a) == ["k"]
    await a.start()
    await b.start()
    try:
        await eventually(lambda: keys(b) == ["k"], "b learns what a tracked before starting")
    finally:
        await a.stop()
        await b.stop()


async def test_a_stopping_tracker_sends_its_last_changes(trackers: list[Tracker]) -> None:
    pubsub = PubSub()
    a = await start(
        trackers, pubsub, "a", broadcast_period=5.0, down_period=60.0, permdown_period=120.0
    )
    b = await start(
        trackers, pubsub, "b", broadcast_period=5.0, down_period=60.0, permdown_period=120.0
    )
    await a.track("o", "t", "k", {})
    await eventually(lambda: keys(b) == ["k"], "b sees k", timeout=20)
    await a.untrack("o")
    await a.stop()  # long before the next heartbeat: the change goes out now
    trackers.remove(a)
    await eventually(lambda: keys(b) == [], "b sees the untrack sent on stop", timeout=2.0)
