"""Presence benchmark: tracking cost, payload sizes, replication traffic, failure convergence.

Run from the repository root::

    .venv/bin/python -m benchmarks.presence                       # local + Redis (if it answers)
    .venv/bin/python -m benchmarks.presence --n 10000 --adapters local --json /tmp/p.json

Every figure is measured in one process, for the local adapter and, when
Redis answers at ``--redis`` (default ``redis://127.0.0.1:6379/0``), for the
Redis adapter in the same run, side by side:

1. **track N presences in one topic** (N = 10,000 and 100,000 by default):
   ``await presence.track(owner, key, meta, topic=...)`` N times, one channel
   subscribed to the topic (so every join's ``presence_diff`` is encoded
   once, as on a real socket). Wall and CPU time in all, and per presence;
   Python memory per tracked presence (tracemalloc).
2. **presence_state**: bytes of the V2 push frame of ``presence.list(topic)``
   for N presences, and the time to list and encode it; the time to list a
   10-member topic beside the N others (it must not depend on N).
3. **replication traffic per heartbeat**, as bytes a node publishes (the
   cluster codec's encoding, big messages in parts): the heartbeat that
   carries the N new presences, and the time until a second node lists
   them; an idle heartbeat; a heartbeat during 1% churn per period; the
   full-state transfer a new node gets.
4. **convergence after a node failure**: three nodes (each its own tracker;
   for the local adapter three trackers share the one PubSub), each tracking
   ``--per-node`` presences; one stops dead (no goodbye, no last delta: as
   after SIGKILL). Measured: time until both survivors have reported every
   one of its presences as left (with ``down_period`` 1 s, broadcast period
   0.1 s), then the time until a restarted incarnation's presences are listed
   on both survivors.
5. **big rooms** (``--big``): the CPU of one ``track`` (its diff encoded for
   one subscribed channel included) in a topic that already holds M members,
   for M = 1,000 and 100,000 (``--big-sizes``), and the ratio (goal: at most
   1.5x); then the ``presence_diff`` traffic one member of a churning room
   receives (frames and bytes per second, ``--churn`` changes a second for
   ``--churn-seconds``), unbatched and with each ``diff_interval`` of
   ``--intervals``. With ``--big-churn``: ``--churn-members`` presences over
   three nodes (``--adapters``: local trackers on one PubSub, or three Redis
   PubSubs), ``--churn`` joins plus leaves a second for ``--churn-seconds``
   spread over the nodes, then the check that every node lists exactly the
   same presences as the truth kept by the driver, and the CPU per change.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import statistics
import sys
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from phoenix_channels import Endpoint, PubSub, Socket
from phoenix_channels.presence import Diff, Presence, Tracker, wire
from phoenix_channels.protocol import V2, Broadcast
from phoenix_channels.pubsub import codec
from phoenix_channels.transports.base import FrameEncoder


class _Sink:
    """A channel's place in the topic: counts the frames its socket would write."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0

    def write(self, item: Any) -> None:
        self.frames += 1
        self.bytes += len(item[0])

    def _intercepted(self, message: Broadcast) -> None:  # pragma: no cover - no intercepts
        pass


_ENCODER = FrameEncoder("bench", V2, lambda data, binary: (data, binary))


class _NoSocket(Socket):
    channels: dict[str, Any] = {}


def redis_answers(url: str) -> bool:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 1):
            return True
    except OSError:
        return False


def make_pubsub(adapter: str, redis_url: str, prefix: str, node: str) -> PubSub:
    if adapter == "redis":
        return PubSub.redis(redis_url, node_name=node, prefix=prefix)
    return PubSub()


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout} s")
        await asyncio.sleep(0.005)


def message_bytes(topic: str, message: Any) -> int:
    """What a cluster node publishes for one message: header + MessagePack body."""
    return len(codec.encode(codec.BROADCAST, b"node-1", topic, message))


def published(tracker: Tracker, message: dict[str, Any]) -> tuple[int, int]:
    """Bytes and parts a tracker publishes for ``message`` (big ones go in parts)."""
    parts = [message]
    if wire.carries_state(message):
        parts = wire.pack(message, tracker._shard.replica_id, 1, tracker.max_message_bytes)
    return sum(message_bytes(tracker.topic, p) for p in parts), len(parts)


# -- 1-3: tracking, presence_state, traffic ----------------------------------------------


async def bench_tracking(n: int, adapter: str, redis_url: str) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    pubsub = make_pubsub(adapter, redis_url, prefix, "bench-a")
    endpoint = Endpoint(
        sockets={"/socket": _NoSocket}, pubsub=pubsub, secret_key_base="bench-presence-" + "p" * 24
    )
    slow: dict[str, Any] = {"broadcast_period": 60.0, "permdown_period": 7200.0}
    presence = Presence(endpoint, f"bench{n}", **slow)
    # A second node, to measure what replicating the burst costs and takes.
    other_pubsub = pubsub if adapter == "local" else make_pubsub(adapter, redis_url, prefix, "b")
    other = Tracker(other_pubsub, f"bench{n}", node_name="bench-b", **slow)
    await endpoint.start()
    await other_pubsub.start()
    await other.start()
    tracker = presence.tracker
    shard = tracker._shard
    for t in (tracker, other):  # heartbeats are sent by hand below, when measured
        assert t._timer is not None
        t._timer.cancel()
    for t in (tracker, other):  # introduce them
        for target, message in t._shard.tick(0.0):
            await t._send(target, message)
    await eventually(
        lambda: (
            tracker.peers().get("bench-b") == "up" and other.peers().get(tracker.node_name) == "up"
        ),
        10,
        "the nodes meet",
    )
    topic = "room:bench"
    sink = _Sink()
    pubsub.subscribe_fastlane(topic, sink, sink.write, _ENCODER, None)
    owners = [f"owner-{i}" for i in range(n)]
    metas = [{"online_at": 1_795_810_789 + i, "name": f"user {i}"} for i in range(n)]
    try:
        gc.collect()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for i in range(n):
            await presence.track(owners[i], f"user-{i}", metas[i], topic=topic)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        assert sink.frames == n, (sink.frames, n)

        # presence_state: list + encode, as the after-join push does.
        t0 = time.perf_counter()
        listed = await presence.list(topic)
        frame = _ENCODER.push("1", None, topic, "presence_state", listed)
        state_time = time.perf_counter() - t0
        state_bytes = len(frame[0])

        # A small topic beside the big one: listing it does not walk the N others.
        for i in range(10):
            await presence.track(f"small-{i}", f"small-{i}", {}, topic="room:small")
        t0 = time.perf_counter()
        for _ in range(1000):
            await presence.list("room:small")
        small_list_us = (time.perf_counter() - t0) / 1000 * 1e6

        # Replication: the heartbeat that carries the N new presences, sent and merged.
        wall0, cpu0 = time.perf_counter(), time.process_time()
        (heartbeat,) = shard.tick(1.0)
        hb_bytes, hb_parts = published(tracker, heartbeat[1])
        await tracker._send(*heartbeat)
        await eventually(
            lambda: other.count(topic) == n and other.count("room:small") == 10,
            120,
            "the second node has them all",
        )
        replicate_wall = time.perf_counter() - wall0
        replicate_cpu = time.process_time() - cpu0
        # An idle heartbeat (sent every max_silent_periods + 1 periods when nothing changes).
        out: list[Any] = []
        for t in range(2, 14):
            out = shard.tick(float(t)) or out
        idle_bytes = published(tracker, out[0][1])[0] if out else 0
        # 1% churn in one period: that many leave, that many join.
        churn = max(1, n // 100)
        for i in range(churn):
            await presence.untrack(owners[i])
            await presence.track(owners[i] + "-again", f"user-{i}", metas[i], topic=topic)
        (churn_hb,) = shard.tick(20.0)
        churn_bytes = published(tracker, churn_hb[1])[0]
        # The full state a new node gets on its first transfer request.
        snapshot = shard.state.extract(("new-node", 1), {("new-node", 1): 0, shard.replica_id: 0})
        ack = wire.encode_transfer_ack(shard.replica_id, "new-node", 1, snapshot)
        transfer_bytes, transfer_parts = published(tracker, ack)
    finally:
        await other.stop()
        await endpoint.stop()
        if other_pubsub is not pubsub:
            await other_pubsub.stop()
    return {
        "adapter": adapter,
        "n": n,
        "py_bytes_per_presence": await memory_per_presence(n),
        "track_wall_s": wall,
        "track_cpu_s": cpu,
        "track_cpu_us_each": cpu / n * 1e6,
        "diff_frames": sink.frames,
        "state_bytes": state_bytes,
        "state_list_encode_ms": state_time * 1e3,
        "small_topic_list_us": small_list_us,
        "heartbeat_bytes_n_joins": hb_bytes,
        "heartbeat_parts": hb_parts,
        "replicated_wall_s": replicate_wall,
        "replicated_cpu_s": replicate_cpu,
        "idle_heartbeat_bytes": idle_bytes,
        "churn_1pct_heartbeat_bytes": churn_bytes,
        "transfer_bytes": transfer_bytes,
        "transfer_parts": transfer_parts,
    }


async def memory_per_presence(n: int) -> float:
    """Python memory a tracked presence holds (entry, meta, indexes), by tracemalloc.

    A separate pass: tracing slows allocation several times, so the timed
    pass runs without it. The meta is the benchmark's two-field dict.
    """
    tracker = Tracker(PubSub(), "memory", broadcast_period=60.0, permdown_period=7200.0)
    owners = [f"owner-{i}" for i in range(n)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            tracker.track_nowait(
                owners[i],
                "room:bench",
                f"user-{i}",
                {"online_at": 1_795_810_789 + i, "name": f"user {i}"},
            )
        tracker._shard.state.take_delta()  # what stays once the delta has been gossiped
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()


# -- 4: failure convergence --------------------------------------------------------------


def crash(tracker: Tracker) -> None:
    """Stop a tracker dead, as SIGKILL would: no last delta, no goodbye."""
    from phoenix_channels.presence.tracker import _running

    tracker._started = False
    tracker.pubsub.unsubscribe(tracker.topic, tracker._on_message)
    _running.get(tracker.pubsub, set()).discard((tracker.name, tracker.node_name))
    if tracker._timer is not None:
        tracker._timer.cancel()
    if tracker._sender is not None:
        tracker._sender.cancel()
    tracker._outbox.clear()


async def bench_failure(per_node: int, adapter: str, redis_url: str) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {"broadcast_period": 0.1, "down_period": 1.0, "permdown_period": 60}
    shared = PubSub() if adapter == "local" else None
    pubsubs: list[PubSub] = []

    def pubsub_for(node: str) -> PubSub:
        if shared is not None:
            return shared
        ps = make_pubsub(adapter, redis_url, prefix, node)
        pubsubs.append(ps)
        return ps

    nodes: dict[str, Tracker] = {}
    for name in ("a", "b", "c"):
        ps = pubsub_for(name)
        await ps.start()
        nodes[name] = Tracker(ps, "failover", node_name=name, **options)
    for t in nodes.values():
        await t.start()
    topic = "room:failover"
    for name, t in nodes.items():
        for i in range(per_node):
            await t.track(f"{name}-{i}", topic, f"{name}-user-{i}", {"i": i})
    total = 3 * per_node
    try:
        await eventually(
            lambda: all(t.count(topic) == total for t in nodes.values()), 60, "initial convergence"
        )
        left: dict[str, int] = {"a": 0, "b": 0}
        done: dict[str, float] = {}

        def counter(name: str) -> Callable[[Diff], None]:
            def on_diff(diff: Diff) -> None:
                left[name] += sum(1 for key, _ in diff.leaves if str(key).startswith("c-"))
                if left[name] >= per_node and name not in done:
                    done[name] = time.perf_counter()

            return on_diff

        nodes["a"].subscribe(counter("a"))
        nodes["b"].subscribe(counter("b"))
        crashed_at = time.perf_counter()
        crash(nodes["c"])
        await eventually(lambda: len(done) == 2, 30, "survivors report the leaves")
        leaves_s = max(done.values()) - crashed_at

        # c restarts: a new incarnation with the same name tracks its presences again.
        restarted_at = time.perf_counter()
        ps_c = pubsub_for("c2") if shared is None else shared
        if shared is None:
            await ps_c.start()
        c2 = Tracker(ps_c, "failover", node_name="c", **options)
        await c2.start()
        for i in range(per_node):
            await c2.track(f"c-{i}", topic, f"c-user-{i}", {"i": i, "again": True})
        await eventually(
            lambda: nodes["a"].count(topic) == total and nodes["b"].count(topic) == total,
            60,
            "survivors list the restarted node's presences",
        )
        rejoin_s = time.perf_counter() - restarted_at
        nodes["c2"] = c2
    finally:
        for name, t in nodes.items():
            if name != "c":
                await t.stop()
        for ps in pubsubs:
            await ps.stop()
    return {
        "adapter": adapter,
        "per_node": per_node,
        "down_period_s": options["down_period"],
        "broadcast_period_s": options["broadcast_period"],
        "leaves_after_crash_s": leaves_s,
        "rejoin_listed_s": rejoin_s,
    }


# -- 5: big rooms ---------------------------------------------------------------------------


async def bench_track_in_room(members: int, probes: int = 1000) -> dict[str, Any]:
    """CPU of one track in a topic that already holds ``members`` presences."""
    endpoint = Endpoint(sockets={"/socket": _NoSocket})
    presence = Presence(endpoint, f"big{members}", broadcast_period=60.0, permdown_period=7200.0)
    await endpoint.start()
    topic = "room:big"
    sink = _Sink()
    endpoint.pubsub.subscribe_fastlane(topic, sink, sink.write, _ENCODER, None)
    try:
        tracker = presence.tracker
        for i in range(members):
            tracker.track_nowait(f"m-{i}", topic, f"user-{i}", {"i": i})
        tracker._shard.state.take_delta()  # as after a heartbeat: the room is settled
        gc.collect()
        cpus = []
        for round_ in range(3):  # best of three: the machine is shared
            cpu0 = time.process_time()
            for i in range(probes):
                await presence.track(f"p-{round_}-{i}", f"probe-{i}", {"i": i}, topic=topic)
            cpus.append((time.process_time() - cpu0) / probes)
            for i in range(probes):
                await presence.untrack(f"p-{round_}-{i}")
    finally:
        await endpoint.stop()
    return {"members": members, "track_cpu_us": min(cpus) * 1e6}


async def bench_diff_traffic(
    members: int, rate: int, seconds: float, interval: float
) -> dict[str, Any]:
    """What one member of a churning room receives, with ``diff_interval`` = ``interval``."""
    endpoint = Endpoint(sockets={"/socket": _NoSocket})
    presence = Presence(
        endpoint,
        f"traffic{interval}",
        broadcast_period=60.0,
        permdown_period=7200.0,
        diff_interval=interval,
    )
    await endpoint.start()
    topic = "room:churn"
    tracker = presence.tracker
    for i in range(members):
        tracker.track_nowait(f"m-{i}", topic, f"user-{i}", {"i": i})
    presence._batcher.flush_all()  # the room's own joins are not part of the churn
    sink = _Sink()
    endpoint.pubsub.subscribe_fastlane(topic, sink, sink.write, _ENCODER, None)
    tick = 0.01
    per_tick = max(1, round(rate * tick / 2))  # joins per tick, and as many leaves
    ticks = max(1, round(seconds / tick))
    changes = 0
    try:
        wall0 = time.perf_counter()
        for t in range(ticks):
            for j in range(per_tick):
                n = t * per_tick + j
                tracker.track_nowait(f"c-{n}", topic, f"user-c{n}", {"i": n})
                tracker.untrack_nowait(f"m-{n % members}" if n < members else f"c-{n - members}")
                changes += 2
            await asyncio.sleep(tick)
        presence._batcher.flush_all()
        wall = time.perf_counter() - wall0
    finally:
        await endpoint.stop()
    return {
        "members": members,
        "interval_s": interval,
        "changes_per_s": changes / wall,
        "frames_per_member_per_s": sink.frames / wall,
        "bytes_per_member_per_s": sink.bytes / wall,
        "frames_per_s_whole_room": sink.frames / wall * members,
    }


async def bench_churn_nodes(
    members: int, rate: int, seconds: float, adapter: str, redis_url: str
) -> dict[str, Any]:
    """Three nodes, ``members`` presences, ``rate`` changes/s: are the lists right after?"""
    import random

    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {"broadcast_period": 0.5, "down_period": 30.0}
    shared = PubSub() if adapter == "local" else None
    pubsubs: list[PubSub] = []
    nodes: list[Tracker] = []
    for name in ("a", "b", "c"):
        ps = shared if shared is not None else make_pubsub(adapter, redis_url, prefix, name)
        if shared is None:
            pubsubs.append(ps)
        await ps.start()
        nodes.append(Tracker(ps, "churn", node_name=name, **options))
    for t in nodes:
        await t.start()
    if shared is not None:
        await shared.start()
    topic = "room:churn"
    rng = random.Random(14)
    truth: dict[str, tuple[Tracker, str]] = {}  # owner -> (node, key)
    serial = 0

    def join() -> None:
        nonlocal serial
        serial += 1
        owner = f"o{serial}"
        node = nodes[serial % 3]
        node.track_nowait(owner, topic, f"user-{rng.randrange(members)}", {"s": serial})
        truth[owner] = (node, f"user-{serial}")

    try:
        for _ in range(members):
            join()
        await eventually(
            lambda: all(t.count(topic) == members for t in nodes), 300, "the nodes converge"
        )
        owners = list(truth)
        tick = 0.01
        per_tick = max(1, round(rate * tick / 2))
        changes = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - wall0 < seconds:
            for _ in range(per_tick):
                join()
                owners.append(f"o{serial}")
                index = rng.randrange(len(owners))
                owners[index], owners[-1] = owners[-1], owners[index]
                gone = owners.pop()
                node, _key = truth.pop(gone)
                node.untrack_nowait(gone)
                changes += 2
            await asyncio.sleep(tick)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        want = sorted(int(owner[1:]) for owner in truth)

        def agree() -> bool:
            return all(sorted(m["s"] for _, m in t.list(topic)) == want for t in nodes)

        t0 = time.perf_counter()
        try:
            await eventually(agree, 120, "every node lists exactly the truth")
            same = True
        except TimeoutError:
            same = False
        converge = time.perf_counter() - t0
    finally:
        for t in nodes:
            await t.stop()
        for ps in pubsubs:
            await ps.stop()
    return {
        "adapter": adapter,
        "members": members,
        "changes_per_s": changes / wall,
        "seconds": wall,
        "cpu_us_per_change": cpu / max(changes, 1) * 1e6,
        "cpu_share": cpu / wall,
        "converged_after_s": converge,
        "lists_equal": same,
    }


def print_big(tracks: list[dict[str, Any]], traffic: list[dict[str, Any]]) -> None:
    print("\n## big rooms: one track in a room of M members (best of 3 rounds of 1,000)")
    base = tracks[0]["track_cpu_us"]
    for r in tracks:
        ratio = r["track_cpu_us"] / base
        print(f"M={r['members']:>9,}  track CPU {r['track_cpu_us']:6.1f} µs  x{ratio:.2f}")
    print("\n## big rooms: presence_diff traffic per member while the room churns")
    for r in traffic:
        label = "unbatched" if not r["interval_s"] else f"diff_interval {r['interval_s']:g} s"
        print(
            f"{label:>20}  {r['changes_per_s']:7,.0f} changes/s  "
            f"{r['frames_per_member_per_s']:8,.1f} frames/s/member  "
            f"{r['bytes_per_member_per_s'] / 1024:8,.1f} KiB/s/member  "
            f"(a room of {r['members']:,}: {r['frames_per_s_whole_room']:,.0f} frames/s)"
        )


# -- the report ---------------------------------------------------------------------------


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def print_tracking(results: list[dict[str, Any]]) -> None:
    head = [
        "adapter",
        "N",
        "track wall",
        "track CPU",
        "CPU/presence",
        "py mem/presence",
        "presence_state",
        "list+encode",
        "list 10 beside N",
        "hb with N joins",
        "to a 2nd node (CPU)",
        "idle hb",
        "1% churn hb",
        "full transfer",
    ]
    rows = [
        [
            r["adapter"],
            f"{r['n']:,}",
            f"{r['track_wall_s']:.2f} s",
            f"{r['track_cpu_s']:.2f} s",
            f"{r['track_cpu_us_each']:.1f} µs",
            f"{r['py_bytes_per_presence']:.0f} B",
            f"{r['state_bytes'] / 1024:,.0f} KiB",
            f"{r['state_list_encode_ms']:.0f} ms",
            f"{r['small_topic_list_us']:.1f} µs",
            f"{r['heartbeat_bytes_n_joins'] / 1024:,.0f} KiB/{r['heartbeat_parts']}",
            f"{r['replicated_wall_s']:.2f} s ({r['replicated_cpu_s']:.2f} s)",
            f"{r['idle_heartbeat_bytes']} B",
            f"{r['churn_1pct_heartbeat_bytes'] / 1024:,.1f} KiB",
            f"{r['transfer_bytes'] / 1024:,.0f} KiB/{r['transfer_parts']}",
        ]
        for r in results
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    print(_row(head, widths))
    for row in rows:
        print(_row(row, widths))


def print_failure(results: list[dict[str, Any]]) -> None:
    head = [
        "adapter",
        "presences/node",
        "down_period",
        "leaves seen after crash",
        "restarted node listed after",
    ]
    rows = [
        [
            r["adapter"],
            f"{r['per_node']:,}",
            f"{r['down_period_s']:.1f} s",
            f"{r['leaves_after_crash_s']:.2f} s",
            f"{r['rejoin_listed_s']:.2f} s",
        ]
        for r in results
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    print(_row(head, widths))
    for row in rows:
        print(_row(row, widths))


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="10000,100000", help="presences in one topic")
    parser.add_argument("--per-node", type=int, default=1000, help="presences per node (failure)")
    parser.add_argument("--adapters", default="local,redis")
    parser.add_argument(
        "--redis", default=os.environ.get("PHX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--repeat", type=int, default=1, help="failure runs (median shown)")
    parser.add_argument("--json", help="write the raw figures here")
    parser.add_argument("--big", action="store_true", help="only the big-room figures (5.)")
    parser.add_argument("--big-sizes", default="1000,100000", help="room sizes for track CPU")
    parser.add_argument("--churn", type=int, default=2000, help="changes a second (big rooms)")
    parser.add_argument("--churn-seconds", type=float, default=5.0)
    parser.add_argument("--churn-members", type=int, default=10_000)
    parser.add_argument("--intervals", default="0,0.5,1", help="diff_interval values to compare")
    parser.add_argument("--big-churn", action="store_true", help="3 nodes under churn (5.)")
    args = parser.parse_args(argv)
    if args.big_churn:
        adapters = [a for a in args.adapters.split(",") if a]
        if "redis" in adapters and not redis_answers(args.redis):
            adapters.remove("redis")
        print("\n## three nodes under churn: lists checked against the driver's truth")
        rows = []
        for a in adapters:
            r = await bench_churn_nodes(
                args.churn_members, args.churn, args.churn_seconds, a, args.redis
            )
            rows.append(r)
            print(
                f"{a:>6}  {r['members']:,} presences, {r['changes_per_s']:,.0f} changes/s for "
                f"{r['seconds']:.0f} s: {r['cpu_us_per_change']:.1f} µs CPU per change (all "
                f"three nodes), {r['cpu_share']:.0%} of a core; nodes agree "
                f"{r['converged_after_s']:.2f} s after; lists equal to the truth: "
                f"{r['lists_equal']}"
            )
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"churn_nodes": rows}, f, indent=1)
        return 0 if all(r["lists_equal"] for r in rows) else 1
    if args.big:
        tracks = [await bench_track_in_room(int(m)) for m in args.big_sizes.split(",")]
        traffic = [
            await bench_diff_traffic(args.churn_members, args.churn, args.churn_seconds, float(i))
            for i in args.intervals.split(",")
        ]
        print_big(tracks, traffic)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"track_in_room": tracks, "diff_traffic": traffic}, f, indent=1)
        return 0
    adapters = [a for a in args.adapters.split(",") if a]
    if "redis" in adapters and not redis_answers(args.redis):
        print(f"Redis does not answer at {args.redis}: local adapter only", file=sys.stderr)
        adapters.remove("redis")
    sizes = [int(x) for x in args.n.split(",")]
    print(f"# presence benchmark, python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}")
    tracking = [await bench_tracking(n, a, args.redis) for n in sizes for a in adapters]
    print("\n## tracking N presences in one topic (one subscribed channel), sizes on the wire")
    print_tracking(tracking)
    failures = []
    for a in adapters:
        runs = [await bench_failure(args.per_node, a, args.redis) for _ in range(args.repeat)]
        best = dict(runs[0])
        for key in ("leaves_after_crash_s", "rejoin_listed_s"):
            best[key] = statistics.median(r[key] for r in runs)
        failures.append(best)
    print(f"\n## convergence after a node failure (3 nodes, medians of {args.repeat})")
    print_failure(failures)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tracking": tracking, "failure": failures}, f, indent=1)
    return 0


def run(coro: Awaitable[int]) -> int:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(run(main()))
