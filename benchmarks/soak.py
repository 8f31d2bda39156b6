"""Soak: clients connect, join, push, leave and vanish in churn; afterwards nothing is left.

    .venv/bin/python -m benchmarks.soak                          # 5 minutes, 32 workers, fast path
    .venv/bin/python -m benchmarks.soak --seconds 60 --path asgi --workers 16

The server (``tests/trust/apps.py``) runs in its own process. Each worker
loops until the time is up: connect, join one to three of ten shared
``churn:*`` topics (each join tracks a presence), push a few echoes, then end
one of three ways: leave every topic and close, close without leaving, or
drop the TCP connection without a close frame. A monitor connection asks the
server for its counts (channels, sockets, subscriptions, presences, tasks)
after a warm-up phase (the baseline) and after the measured phase, once the
server has settled; its RSS is read from /proc at the same two points.

What must hold at the end: no churn subscriber, presence, channel or socket
left, as many topics and tasks as at the baseline, and RSS back near the
baseline (the tests/trust/test_soak.py version of this asserts it; this
script prints the figures, and exits 1 if a count did not come back).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import websockets

from tests.trust.process import ServerProcess

APP = "tests.trust.apps:endpoint"
TOPICS = [f"churn:{n}" for n in range(10)]
MONITOR = "blast:monitor"


@dataclass
class Tally:
    sessions: int = 0
    joins: int = 0
    pushes: int = 0
    leaves: int = 0
    closes: int = 0
    aborts: int = 0
    errors: list[str] = field(default_factory=list)


async def _reply(ws: Any, ref: str) -> Any:
    """Read frames (presence diffs and state included) until the reply to ``ref``."""
    async with asyncio.timeout(15):
        while True:
            frame = json.loads(await ws.recv())
            if frame[3] == "phx_reply" and frame[1] == ref:
                return frame[4]


async def _session(url: str, worker: int, rng: random.Random, tally: Tally) -> None:
    ws = await websockets.connect(url, ping_interval=None, open_timeout=15)
    tally.sessions += 1
    ref = 0
    joined: dict[str, str] = {}
    try:
        for topic in rng.sample(TOPICS, rng.randint(1, 3)):
            ref += 1
            await ws.send(
                json.dumps([str(ref), str(ref), topic, "phx_join", {"user": f"user{worker}"}])
            )
            if (await _reply(ws, str(ref)))["status"] != "ok":
                raise RuntimeError(f"join of {topic} refused")
            joined[topic] = str(ref)
            tally.joins += 1
        for _ in range(rng.randint(1, 5)):
            topic = rng.choice(list(joined))
            ref += 1
            await ws.send(json.dumps([joined[topic], str(ref), topic, "echo", {"n": ref}]))
            if (await _reply(ws, str(ref)))["response"] != {"n": ref}:
                raise RuntimeError("wrong echo")
            tally.pushes += 1
        ending = rng.random()
        if ending < 0.4:
            for topic, join_ref in joined.items():
                ref += 1
                await ws.send(json.dumps([join_ref, str(ref), topic, "phx_leave", {}]))
                await _reply(ws, str(ref))
                tally.leaves += 1
            await ws.close()
            tally.closes += 1
        elif ending < 0.7:
            await ws.close()
            tally.closes += 1
        else:
            ws.transport.abort()  # gone without a close frame
            tally.aborts += 1
    finally:
        if ws.transport is not None and not ws.transport.is_closing():
            ws.transport.abort()


async def churn(url: str, seconds: float, workers: int, seed: int = 1) -> Tally:
    """Run ``workers`` concurrent session loops for ``seconds``."""
    tally = Tally()
    deadline = time.monotonic() + seconds

    async def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        while time.monotonic() < deadline:
            try:
                await _session(url, n, rng, tally)
            except Exception as exc:  # recorded, and the soak goes on
                tally.errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(worker(n) for n in range(workers)))
    return tally


async def stats(ws: Any, ref: str) -> dict[str, Any]:
    await ws.send(json.dumps(["1", ref, MONITOR, "stats", {"topics": TOPICS}]))
    return (await _reply(ws, ref))["response"]  # type: ignore[no-any-return]


async def settled(ws: Any, baseline: dict[str, Any], wait: float = 15.0) -> dict[str, Any]:
    """Stats once the server has let go of the churn (bounded by ``wait`` seconds)."""
    deadline = time.monotonic() + wait
    n = 0
    while True:
        n += 1
        now = await stats(ws, f"settle{n}")
        if not leaks(now, baseline) or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.2)


def leaks(now: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """What did not come back to the baseline."""
    found = []
    for name in ("watched_subscribers", "presences"):
        if now[name]:
            found.append(f"{name}={now[name]}")
    for name in ("channels", "sockets", "connections", "topics", "tasks"):
        if now[name] > baseline[name]:
            found.append(f"{name}={now[name]} (baseline {baseline[name]})")
    return found


async def soak(
    seconds: float, workers: int, fast: bool = True, warmup: float | None = None
) -> dict[str, Any]:
    """Warm up, take the baseline, churn for ``seconds``, settle; the figures."""
    async with (
        ServerProcess(APP, fast=fast) as server,
        websockets.connect(server.url, ping_interval=None) as monitor,
    ):
        await monitor.send(json.dumps(["1", "1", MONITOR, "phx_join", {}]))
        await _reply(monitor, "1")
        warm = await churn(server.url, warmup if warmup is not None else seconds / 4, workers)
        baseline = await settled(monitor, await stats(monitor, "base0"))
        baseline_rss = server.rss_kib()

        async def heartbeat() -> None:  # the monitor idles through the churn
            while True:
                await asyncio.sleep(20)
                await monitor.send(json.dumps([None, "hb", "phoenix", "heartbeat", {}]))

        beating = asyncio.ensure_future(heartbeat())
        try:
            tally = await churn(server.url, seconds, workers, seed=2)
        finally:
            beating.cancel()
        end = await settled(monitor, baseline)
        end_rss = server.rss_kib()
        return {
            "path": "fast" if fast else "asgi",
            "seconds": seconds,
            "workers": workers,
            "warmup_sessions": warm.sessions,
            "tally": tally,
            "baseline": baseline,
            "end": end,
            "leaks": leaks(end, baseline),
            "baseline_rss_kib": baseline_rss,
            "end_rss_kib": end_rss,
            "peak_rss_kib": server.peak_kib(),
            "errors": warm.errors + tally.errors,
        }


def report(result: dict[str, Any]) -> str:
    t: Tally = result["tally"]
    rate = t.sessions / result["seconds"]
    lines = [
        f"path {result['path']}: {result['seconds']:g} s, {result['workers']} workers, "
        f"{t.sessions} sessions ({rate:.0f}/s), {t.joins} joins, {t.pushes} pushes, "
        f"{t.leaves} leaves, {t.closes} closes, {t.aborts} dropped connections",
        f"  RSS: baseline {result['baseline_rss_kib'] / 1024:.1f} MiB, end "
        f"{result['end_rss_kib'] / 1024:.1f} MiB "
        f"({(result['end_rss_kib'] - result['baseline_rss_kib']) / 1024:+.1f} MiB), peak "
        f"{result['peak_rss_kib'] / 1024:.1f} MiB",
        "  counts at the end: "
        + json.dumps({k: v for k, v in result["end"].items() if k != "rss_kib"}),
        f"  leaks: {', '.join(result['leaks']) or 'none'}; client errors: {len(result['errors'])}",
    ]
    lines += [f"    {error}" for error in result["errors"][:5]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--path", choices=["fast", "asgi", "both"], default="fast")
    args = parser.parse_args(argv)
    failed = False
    for fast in {"fast": [True], "asgi": [False], "both": [True, False]}[args.path]:
        result = asyncio.run(soak(args.seconds, args.workers, fast))
        print(report(result), flush=True)
        failed = failed or bool(result["leaks"]) or bool(result["errors"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
