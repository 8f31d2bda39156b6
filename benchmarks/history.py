"""History and recovery: what positions cost, a mass reconnect, and a chaos run.

What it answers (issue 11, ``docs/recovery.md``):

* ``cpu``: server CPU per delivered broadcast with history on versus off,
  in the same run, at each N, on one node with the local adapter and with
  Redis (goal: at most 1.15x the history-off figure). It reuses the fan-out
  measurement of ``benchmarks/cluster.py`` (one node, lean clients, every
  copy counted) with ``PHX_BENCH_HISTORY=1`` for the history runs;
* ``reconnect``: N clients joined with recovery lose their connections for
  5 s, 50 messages are broadcast meanwhile, and all N rejoin at once with their
  position: the time until every client has its outcome (recovered) and
  all 50 messages, the server's CPU over that time, and (Redis) the engine's
  memory per stored message (``MEMORY USAGE`` of the topic's stream);
* ``chaos``: C clients whose connections are cut at random every ~2 s
  while a publisher broadcasts R messages per second for S seconds; each
  client rejoins with its position at once. Printed: the share of messages
  delivered (goal 100%), duplicates (goal 0), out-of-order deliveries, and
  how many rejoins were not recovered.

    .venv/bin/python -m benchmarks.history                     # everything, default sizes
    .venv/bin/python -m benchmarks.history --phases cpu --n 1000,5000 --engines local,redis
    .venv/bin/python -m benchmarks.history --phases reconnect --reconnect-n 10000 --engines redis
    .venv/bin/python -m benchmarks.history --phases chaos --chaos-clients 200 --chaos-seconds 60
    .venv/bin/python -m benchmarks.history --smoke             # tiny sizes: does it run?

Servers are ``phoenix-channels serve benchmarks.cluster:endpoint`` processes
(one node), engines private redis-server / nats-server processes on free
ports (``cluster.Setup``). The driver's clients for ``reconnect`` and
``chaos`` use the ``websockets`` library (they read every frame to check
positions), so the driver, not the server, bounds how large N can be.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import websockets

from benchmarks import procstat
from benchmarks.cluster import HOST, Setup, measure, pin
from benchmarks.loadgen import BenchError

TOPIC = "bench:lobby"


@contextlib.contextmanager
def history_env(on: bool) -> Any:
    before = os.environ.get("PHX_BENCH_HISTORY")
    if on:
        os.environ["PHX_BENCH_HISTORY"] = "1"
    else:
        os.environ.pop("PHX_BENCH_HISTORY", None)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PHX_BENCH_HISTORY", None)
        else:
            os.environ["PHX_BENCH_HISTORY"] = before


# -- cpu ----------------------------------------------------------------------------------------


async def phase_cpu(opts: argparse.Namespace, logs: Path) -> None:
    print(
        f"\n== CPU per delivered broadcast, history off vs on ({opts.broadcasts} broadcasts of "
        f"{opts.payload} B, one node) =="
    )
    print(f"{'engine':<8} {'N':>6} {'off µs/delivery':>16} {'on µs/delivery':>15} {'ratio':>7}")
    for engine in opts.engines.split(","):
        for n in [int(x) for x in opts.n.split(",")]:
            sub = argparse.Namespace(**{**vars(opts), "n": n})
            figures: dict[bool, float] = {}
            for round_ in range(opts.repeat):
                for on in (False, True):
                    with history_env(on):
                        name = f"{engine}-{n}-{'on' if on else 'off'}-r{round_}"
                        r = await measure(name, engine, 1, sub, logs)
                    cpu = sum(r.node_cpu) / r.deliveries
                    figures[on] = min(figures.get(on, cpu), cpu)
            ratio = figures[True] / figures[False]
            print(
                f"{engine:<8} {n:>6,} {figures[False] * 1e6:>16.2f} {figures[True] * 1e6:>15.2f} "
                f"{ratio:>6.2f}x  {'PASS' if ratio <= 1.15 else 'over the 1.15x goal'}"
            )


# -- shared client bits -------------------------------------------------------------------------


@dataclass
class Peer:
    """One recovering client: its position and what it got."""

    position: str | None = None
    got: list[int] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    ws: Any = None
    expect: int = 0  # messages to wait for (reconnect phase)


async def open_peer(url: str, peer: Peer) -> None:
    peer.ws = await websockets.connect(url, max_size=None, compression=None, open_timeout=60)
    join = ["1", "1", TOPIC, "phx_join", {"phx_recover": peer.position}]
    await peer.ws.send(orjson.dumps(join).decode())


def take(peer: Peer, frame: Any) -> None:
    _jr, ref, _topic, event, payload = orjson.loads(frame)
    if event == "phx_recovery":
        peer.outcomes.append(payload)
        if not payload["recovered"]:
            peer.position = payload["position"]
    elif event == "shout":
        peer.got.append(payload["n"])
        peer.position = ref


async def read_until(peer: Peer, done: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not done(peer):
            take(peer, await peer.ws.recv())


class Publisher:
    def __init__(self, url: str) -> None:
        self.url = url
        self.n = 0
        self.ws: Any = None
        self.ref = 10

    async def open(self) -> None:
        self.ws = await websockets.connect(self.url, max_size=None, compression=None)
        await self.ws.send(orjson.dumps(["1", "1", TOPIC, "phx_join", {}]).decode())
        await self.ws.recv()
        asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        with contextlib.suppress(Exception):
            async for _ in self.ws:
                pass

    async def shout(self) -> int:
        self.n += 1
        self.ref += 1
        msg = ["1", str(self.ref), TOPIC, "shout", {"n": self.n, "body": "x" * 60}]
        await self.ws.send(orjson.dumps(msg).decode())
        return self.n


def socket_url(port: int) -> str:
    return f"ws://{HOST}:{port}/socket/websocket?vsn=2.0.0"


# -- reconnect ----------------------------------------------------------------------------------


async def phase_reconnect(opts: argparse.Namespace, logs: Path) -> None:
    n, missed = opts.reconnect_n, opts.outage_messages
    print(
        f"\n== Mass reconnect: {n:,} clients rejoin at once after a {opts.outage_seconds:g} s "
        f"outage with {missed} missed messages =="
    )
    for engine in opts.engines.split(","):
        setup = Setup(f"reconnect-{engine}", logs / f"reconnect-{engine}")
        setup.logs.mkdir(parents=True)
        peers = [Peer() for _ in range(n)]
        try:
            with history_env(True):
                await setup.start(engine, 1, not opts.no_pin)
            proc, port = setup.nodes[0]
            url = socket_url(port)
            pub = Publisher(url)
            await pub.open()
            sem = asyncio.Semaphore(opts.concurrency)

            async def join(
                peer: Peer, want: int, sem: asyncio.Semaphore = sem, url: str = url
            ) -> None:
                async with sem:
                    await open_peer(url, peer)
                await read_until(
                    peer, lambda q: len(q.outcomes) >= want and len(q.got) >= q.expect, 120
                )

            for peer in peers:
                peer.expect = 0
            await asyncio.gather(*(join(p, 1) for p in peers))
            for peer in peers:
                peer.expect = 1
            await pub.shout()  # once every client is joined: every position is now 1
            await asyncio.gather(
                *(read_until(p, lambda q: len(q.got) >= q.expect, 120) for p in peers)
            )
            for peer in peers:
                peer.ws.transport.abort()
            outage = time.monotonic()
            await asyncio.sleep(min(1.0, opts.outage_seconds))  # the server notices the cuts
            for _ in range(missed):
                await pub.shout()
            await asyncio.sleep(max(0.0, outage + opts.outage_seconds - time.monotonic()))
            for peer in peers:
                peer.expect = 1 + missed
            cpu0 = procstat.cpu(proc.pid)
            t0 = time.perf_counter()
            await asyncio.gather(*(join(p, 2) for p in peers))
            seconds = time.perf_counter() - t0
            cpu = procstat.cpu(proc.pid) - cpu0
            recovered = sum(1 for p in peers if p.outcomes[-1]["recovered"])
            exact = sum(1 for p in peers if p.got == list(range(1, missed + 2)))
            memory = await redis_memory(setup) if engine == "redis" else None
            print(
                f"{engine:<8} all recovered in {seconds:6.2f} s; server CPU {cpu:6.2f} s "
                f"({cpu / n * 1e3:.3f} ms per client); recovered {recovered:,}/{n:,}; exact "
                f"sequences {exact:,}/{n:,}"
                + (f"; redis {memory:,.0f} B per stored message" if memory else "")
            )
            for peer in peers:
                peer.ws.transport.abort()
        finally:
            await setup.stop()


async def redis_memory(setup: Setup) -> float | None:
    from phoenix_channels.pubsub.redis import RespConnection

    conn = await RespConnection.open(f"redis://{HOST}:{setup.engine_port}")
    try:
        key = f"bench:h:s:{TOPIC}"
        used = await conn.command("MEMORY", "USAGE", key, "SAMPLES", "0")
        count = await conn.command("XLEN", key)
        return used / count if count else None
    finally:
        conn.close()


# -- chaos --------------------------------------------------------------------------------------


async def phase_chaos(opts: argparse.Namespace, logs: Path) -> None:
    c, seconds, rate, cut = opts.chaos_clients, opts.chaos_seconds, opts.chaos_rate, opts.chaos_cut
    print(
        f"\n== Chaos: {c} clients cut every ~{cut:g} s for {seconds:g} s, {rate} msg/s broadcast =="
    )
    for engine in opts.engines.split(","):
        setup = Setup(f"chaos-{engine}", logs / f"chaos-{engine}")
        setup.logs.mkdir(parents=True)
        try:
            with history_env(True):
                await setup.start(engine, 1, not opts.no_pin)
            _proc, port = setup.nodes[0]
            url = socket_url(port)
            pub = Publisher(url)
            await pub.open()
            peers = [Peer() for _ in range(c)]
            stop = asyncio.Event()
            cuts = [0]
            for peer in peers:  # every client joined before the first message
                await open_peer(url, peer)
                await read_until(peer, lambda p: bool(p.outcomes), 30)

            async def life(
                peer: Peer, stop: asyncio.Event = stop, url: str = url, cuts: list[int] = cuts
            ) -> None:
                while not stop.is_set():
                    ends = time.monotonic() + random.uniform(0.2, 2 * cut)
                    with contextlib.suppress(TimeoutError):
                        await read_until(
                            peer, lambda p, ends=ends: time.monotonic() > ends, 2 * cut + 1
                        )
                    peer.ws.transport.abort()
                    cuts[0] += 1
                    await open_peer(url, peer)

            lives = [asyncio.create_task(life(p)) for p in peers]
            first = pub.n + 1
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                await pub.shout()
                await asyncio.sleep(max(0.0, t0 + (pub.n - first + 1) / rate - time.monotonic()))
            stop.set()
            await asyncio.gather(*lives, return_exceptions=True)
            total = pub.n
            for peer in peers:  # one last rejoin collects what is left
                peer.ws.transport.abort()
                await open_peer(url, peer)
            await asyncio.gather(
                *(
                    read_until(p, lambda q, t=total: bool(q.got) and q.got[-1] >= t, 30)
                    for p in peers
                ),
                return_exceptions=True,
            )
            wanted = set(range(first, total + 1))
            delivered = sum(len(wanted & set(p.got)) for p in peers) / (len(wanted) * c)
            dups = sum(len(p.got) - len(set(p.got)) for p in peers)
            disorder = sum(
                sum(1 for a, b in zip(p.got, p.got[1:], strict=False) if b <= a) for p in peers
            )
            lost = sum(1 for p in peers for o in p.outcomes if not o["recovered"]) - c
            print(
                f"{engine:<8} delivered {delivered * 100:7.3f}% of {len(wanted):,} messages x "
                f"{c} clients; duplicates {dups}; out of order {disorder}; cuts {cuts[0]:,}; "
                f"rejoins not recovered {lost}"
            )
            for peer in peers:
                peer.ws.transport.abort()
        finally:
            await setup.stop()


async def main_async(opts: argparse.Namespace) -> int:
    pin(os.getpid(), 1, not opts.no_pin)
    logs = Path(tempfile.mkdtemp(prefix="phx-bench-history-"))
    print(f"logs: {logs}", file=sys.stderr)
    phases = opts.phases.split(",")
    try:
        if "cpu" in phases:
            await phase_cpu(opts, logs)
        if "reconnect" in phases:
            await phase_reconnect(opts, logs)
        if "chaos" in phases:
            await phase_chaos(opts, logs)
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", default="cpu,reconnect,chaos")
    parser.add_argument("--engines", default="local,redis")
    parser.add_argument("--n", default="1000,5000", help="subscribers for the cpu phase")
    parser.add_argument("--broadcasts", type=int, default=200)
    parser.add_argument("--payload", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1, help="cpu phase: best of R")
    parser.add_argument("--reconnect-n", type=int, default=10000)
    parser.add_argument("--outage-messages", type=int, default=50)
    parser.add_argument("--outage-seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=500, help="connects in flight")
    parser.add_argument("--chaos-clients", type=int, default=200)
    parser.add_argument("--chaos-seconds", type=float, default=60.0)
    parser.add_argument("--chaos-rate", type=int, default=100)
    parser.add_argument("--chaos-cut", type=float, default=2.0)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a check that it runs")
    opts = parser.parse_args(argv)
    if opts.smoke:
        opts.n, opts.broadcasts, opts.reconnect_n, opts.outage_seconds = "50", 20, 30, 1.5
        opts.chaos_clients, opts.chaos_seconds, opts.chaos_rate = 10, 3.0, 20
    raise SystemExit(asyncio.run(main_async(opts)))


if __name__ == "__main__":
    main()
