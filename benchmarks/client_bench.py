"""What the Python client costs, beside a bare ``websockets`` client doing the same work.

The server (``phoenix-channels serve benchmarks.client_bench:endpoint``, the
fast path; the ``bench:*`` channel of ``bench_app.py`` without the per-socket
rate limit, as one connection here pushes faster than 1,000 messages a
second) runs in a subprocess pinned to CPU 0; this process, the clients, runs
pinned to CPU 1 (``--no-pin`` to disable), on uvloop. For each scenario, two
client implementations do the same Phoenix V2 work against the same server:

* ``ours``: ``phoenix_channels.client`` (Socket, Channel, awaited pushes,
  handlers or ``async for``);
* ``bare``: the ``websockets`` library with hand-written frames, a loop that
  decodes each frame with orjson and matches refs: the floor of a Python
  client on the same WebSocket library, with no channel state, timers or
  reconnect logic.

Scenarios (counts bounded; the whole run takes under a minute):

1. ``push->reply``: sequential ``echo`` pushes (100-byte payload) on one
   connection: p50/p99 round trip and client CPU per round trip.
2. ``receive``: ``--sockets`` connections joined to one topic; a control
   connection sends ``--broadcasts`` shouts; client CPU per delivered
   broadcast (decoded and handed to application code).
3. ``idle memory``: RSS per joined idle connection, each implementation in
   a fresh process (so one does not reuse memory the other freed).

Run from the repository root::

    .venv/bin/python -m benchmarks.client_bench
    .venv/bin/python -m benchmarks.client_bench --echoes 5000 --sockets 200 --json /tmp/c.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket as socketlib
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import uvloop
import websockets

from phoenix_channels import Channel, Endpoint, reply
from phoenix_channels import Socket as ServerSocket
from phoenix_channels.client import Socket

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = {"text": "x" * 88}  # 100 bytes of JSON


class _BenchChannel(Channel):
    async def join(self, topic: str, payload: Any) -> None:
        return None

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "echo":
            return reply("ok", payload)
        if event == "shout":
            await self.broadcast("shout", payload)
        return None


class _BenchSocket(ServerSocket):
    channels = {"bench:*": _BenchChannel}
    max_messages_per_second = None


endpoint = Endpoint(sockets={"/socket": _BenchSocket}, check_origin=False)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, pin: bool) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "phoenix_channels",
        "serve",
        "benchmarks.client_bench:endpoint",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    if pin:
        command = ["taskset", "-c", "0", *command]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    proc = subprocess.Popen(command, cwd=REPO, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socketlib.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the server did not listen on {port} within 20 s")


# -- bare: websockets + hand-written frames --------------------------------------------------


class Bare:
    """One Phoenix V2 connection on ``websockets``: a join and refs, nothing else."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ref = 0

    @classmethod
    async def open(cls, url: str, topic: str) -> Bare:
        ws = await websockets.connect(
            url + "/websocket?vsn=2.0.0", compression=None, ping_interval=None, max_queue=None
        )
        bare = cls(ws)
        await bare.call(topic, "phx_join", {})
        return bare

    async def call(self, topic: str, event: str, payload: Any) -> Any:
        self.ref += 1
        ref = str(self.ref)
        await self.ws.send(orjson.dumps(["1", ref, topic, event, payload]), text=True)
        while True:
            frame = orjson.loads(await self.ws.recv())
            if frame[1] == ref:
                return frame[4]


# -- scenarios ---------------------------------------------------------------------------------


async def latency_ours(url: str, count: int) -> tuple[list[float], float]:
    async with Socket(url) as socket:
        channel = socket.channel("bench:latency", max_queued_events=0)
        await channel.join()
        for _ in range(50):
            await channel.push("echo", PAYLOAD)
        times = []
        cpu = time.process_time()
        for _ in range(count):
            start = time.perf_counter()
            await channel.push("echo", PAYLOAD)
            times.append(time.perf_counter() - start)
        return times, (time.process_time() - cpu) / count


async def latency_bare(url: str, count: int) -> tuple[list[float], float]:
    bare = await Bare.open(url, "bench:latency")
    for _ in range(50):
        await bare.call("bench:latency", "echo", PAYLOAD)
    times = []
    cpu = time.process_time()
    for _ in range(count):
        start = time.perf_counter()
        await bare.call("bench:latency", "echo", PAYLOAD)
        times.append(time.perf_counter() - start)
    await bare.ws.close()
    return times, (time.process_time() - cpu) / count


async def receive_ours(url: str, sockets: int, broadcasts: int, iterate: bool) -> float:
    topic = f"bench:fanin-ours-{iterate}"
    clients = [Socket(url) for _ in range(sockets)]
    counts = [0] * sockets
    done = asyncio.Event()
    total = sockets * broadcasts
    received = 0

    def counter(i: int) -> Callable[[Any], None]:
        def count(payload: Any) -> None:
            nonlocal received
            counts[i] += 1
            received += 1
            if received == total:
                done.set()

        return count

    readers = []
    for i, client in enumerate(clients):
        await client.connect()
        channel = client.channel(topic, max_queued_events=broadcasts if iterate else 0)
        await channel.join()
        if iterate:
            readers.append(asyncio.ensure_future(_read_all(channel, counter(i))))
        else:
            channel.on("shout", counter(i))
    return await _shout_and_wait(url, topic, broadcasts, done, total, clients, readers)


async def _read_all(channel: Any, count: Callable[[Any], None]) -> None:
    async for message in channel:
        count(message.payload)


async def receive_bare(url: str, sockets: int, broadcasts: int) -> float:
    topic = "bench:fanin-bare"
    clients = [await Bare.open(url, topic) for _ in range(sockets)]
    total = sockets * broadcasts
    received = 0
    done = asyncio.Event()

    async def read(bare: Bare) -> None:
        nonlocal received
        async for data in bare.ws:
            frame = orjson.loads(data)
            if frame[2] == topic and frame[3] == "shout":
                received += 1
                if received == total:
                    done.set()

    readers = [asyncio.ensure_future(read(b)) for b in clients]
    return await _shout_and_wait(
        url, topic, broadcasts, done, total, [], readers, bare_clients=clients
    )


async def _shout_and_wait(
    url: str,
    topic: str,
    broadcasts: int,
    done: asyncio.Event,
    total: int,
    clients: list[Socket],
    readers: list[Any],
    bare_clients: list[Bare] | None = None,
) -> float:
    control = await Bare.open(url, topic)
    gc.collect()
    cpu = time.process_time()
    for _ in range(broadcasts):  # shouts get no reply: the wait is for the deliveries
        control.ref += 1
        await control.ws.send(
            orjson.dumps(["1", str(control.ref), topic, "shout", PAYLOAD]), text=True
        )
    await asyncio.wait_for(done.wait(), 120)
    spent = (time.process_time() - cpu) / total
    await control.ws.close()
    for reader in readers:
        reader.cancel()
    for client in clients:
        await client.close()
    for bare in bare_clients or []:
        await bare.ws.close()
    return spent


async def memory(url: str, count: int, make: Callable[[], Awaitable[Any]]) -> float:
    await make()  # warm up: imports, first allocations
    gc.collect()
    before = rss()
    held = [await make() for _ in range(count)]
    await asyncio.sleep(0.5)
    gc.collect()
    per = (rss() - before) / count
    for item in held:
        if isinstance(item, Socket):
            await item.close()
        else:
            await item.ws.close()
    return per


def memory_in_subprocess(kind: str, port: int, count: int, pin: bool) -> float:
    command = [
        sys.executable,
        "-m",
        "benchmarks.client_bench",
        "--memory-of",
        kind,
        "--port",
        str(port),
        "--idle",
        str(count),
    ]
    if pin:
        command = ["taskset", "-c", "1", *command]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    out = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return float(json.loads(out.splitlines()[-1])["bytes_per_socket"])


async def joined_ours(url: str) -> Socket:
    socket = Socket(url)
    await socket.connect()
    await socket.channel("bench:idle", max_queued_events=0).join()
    return socket


# -- main ------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{args.port}/socket"
    results: dict[str, Any] = {}
    # Interleaved repeats, medians reported: the machine is shared.
    lat: dict[str, list[tuple[list[float], float]]] = {"ours": [], "bare": []}
    for _ in range(args.repeat):
        lat["ours"].append(await latency_ours(url, args.echoes))
        lat["bare"].append(await latency_bare(url, args.echoes))
    for name, runs in lat.items():
        results[f"push_reply_{name}"] = {
            "p50_us": statistics.median(pct(t, 0.5) for t, _ in runs) * 1e6,
            "p99_us": statistics.median(pct(t, 0.99) for t, _ in runs) * 1e6,
            "cpu_us": statistics.median(c for _, c in runs) * 1e6,
        }
    recv: dict[str, list[float]] = {"ours_handler": [], "ours_iterator": [], "bare": []}
    for _ in range(args.repeat):
        recv["ours_handler"].append(await receive_ours(url, args.sockets, args.broadcasts, False))
        recv["ours_iterator"].append(await receive_ours(url, args.sockets, args.broadcasts, True))
        recv["bare"].append(await receive_bare(url, args.sockets, args.broadcasts))
    for name, values in recv.items():
        results[f"receive_{name}"] = {"cpu_us_per_message": statistics.median(values) * 1e6}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--echoes", type=int, default=2000)
    parser.add_argument("--sockets", type=int, default=100)
    parser.add_argument("--broadcasts", type=int, default=100)
    parser.add_argument("--idle", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--memory-of", choices=["ours", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:  # a child process measuring one implementation
        url = f"ws://127.0.0.1:{args.port}/socket"
        make: Callable[[], Awaitable[Any]] = (
            (lambda: joined_ours(url))
            if args.memory_of == "ours"
            else (lambda: Bare.open(url, "bench:idle"))
        )
        print(json.dumps({"bytes_per_socket": uvloop.run(memory(url, args.idle, make))}))
        return
    for name in ("echoes", "sockets", "broadcasts", "idle", "repeat"):
        if not 1 <= getattr(args, name) <= 100_000:
            raise SystemExit(f"--{name} must be between 1 and 100000")
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    args.port = free_port()
    server = start_server(args.port, pin)
    try:
        if pin:
            os.sched_setaffinity(0, {1})
        results = uvloop.run(run(args))
        for kind in ("ours", "bare"):
            results[f"idle_{kind}"] = {
                "bytes_per_socket": memory_in_subprocess(kind, args.port, args.idle, pin)
            }
    finally:
        server.kill()
        server.wait(10)
    ours, bare = results["push_reply_ours"], results["push_reply_bare"]
    print(f"push->reply ({args.echoes} sequential, median of {args.repeat}):")
    for name, row in (("ours", ours), ("bare", bare)):
        print(
            f"  {name:5} p50 {row['p50_us']:7.1f} us  p99 {row['p99_us']:7.1f} us  "
            f"client CPU {row['cpu_us']:6.1f} us/push"
        )
    print(
        f"  ratio ours/bare: p50 {ours['p50_us'] / bare['p50_us']:.2f}x, "
        f"CPU {ours['cpu_us'] / bare['cpu_us']:.2f}x"
    )
    base = results["receive_bare"]["cpu_us_per_message"]
    print(f"receive ({args.sockets} sockets x {args.broadcasts} broadcasts):")
    for name in ("ours_handler", "ours_iterator", "bare"):
        value = results[f"receive_{name}"]["cpu_us_per_message"]
        print(f"  {name:13} client CPU {value:6.1f} us/message  ({value / base:.2f}x bare)")
    idle_ours = results["idle_ours"]["bytes_per_socket"]
    idle_bare = results["idle_bare"]["bytes_per_socket"]
    print(
        f"idle joined connection ({args.idle}): ours {idle_ours / 1024:.1f} KiB, "
        f"bare {idle_bare / 1024:.1f} KiB ({idle_ours / idle_bare:.2f}x)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
