"""Cross-node fan-out: one publisher, subscribers spread over three nodes sharing Redis or NATS.

What it answers: what a delivered broadcast costs when the subscribers are
on other nodes, per node and in all, beside the single-node figure measured
in the same run, and what the engine itself (redis-server, nats-server)
spends per broadcast.

    .venv/bin/python -m benchmarks.cluster                    # N = 1500 subscribers, 200 broadcasts
    .venv/bin/python -m benchmarks.cluster --n 3000 --broadcasts 300 --engines redis

For each setup a fresh set of processes:

* ``single``: one node (local adapter) with all N subscribers;
* ``redis`` / ``nats``: three nodes (``phoenix-channels serve`` of this
  module's ``endpoint``, configured by environment) on a private
  redis-server / nats-server started on a free port, N/3 subscribers on
  each node.

The driver (this process) holds every client connection (the lean clients
of ``loadgen.py``) and a control connection on node 0, which sends
``shout`` pushes one at a time (a 100-byte JSON payload); after each, it
waits until every subscriber (and the control connection) has its copy, so
each figure counts complete fan-outs only. The count per connection is
checked at the end. CPU is read from /proc (``procstat.py``) for each node
and for the engine over the broadcast phase. By default the servers and the
engine are pinned to CPU 0 and the driver to CPU 1 (``--no-pin``): on a
two-core machine the three nodes share one core, so *deliveries/s* shows
the overhead of the cluster, not its scaling; *CPU per delivery* is what
carries over to real machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from benchmarks import procstat
from benchmarks.loadgen import TRACK, BenchError, Client, LoadGen, wait

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
_endpoint: Any = None


def __getattr__(name: str) -> Any:
    """``benchmarks.cluster:endpoint``: the bench app, with the PubSub named by the environment."""
    global _endpoint
    if name != "endpoint":
        raise AttributeError(name)
    if _endpoint is None:
        from benchmarks.bench_app import BenchSocket, HistoryBenchSocket
        from phoenix_channels import Endpoint, PubSub

        socket_cls = HistoryBenchSocket if os.environ.get("PHX_BENCH_HISTORY") else BenchSocket

        engine = os.environ.get("PHX_BENCH_ENGINE", "local")
        url = os.environ.get("PHX_BENCH_URL", "")
        pubsub = (
            PubSub.redis(url, prefix="bench")
            if engine == "redis"
            else PubSub.nats(url, prefix="bench")
            if engine == "nats"
            else PubSub()
        )
        _endpoint = Endpoint(
            sockets={"/socket": socket_cls},
            pubsub=pubsub,
            check_origin=False,
            secret_key_base="bench-cluster-secret-" + "b" * 24,  # one per cluster
        )
    return _endpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def pin(pid: int, core: int, enabled: bool) -> None:
    if enabled and (os.cpu_count() or 1) >= 2:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {core})


async def wait_port(proc: asyncio.subprocess.Process, port: int, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.returncode is not None:
            raise BenchError(f"{what} exited with code {proc.returncode} before listening")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 1)
        except (OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise BenchError(f"{what} is not listening on {port} after 30 s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


@dataclass
class Setup:
    """The processes of one measured setup."""

    name: str
    logs: Path
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    nodes: list[tuple[asyncio.subprocess.Process, int]] = field(default_factory=list)
    engine: asyncio.subprocess.Process | None = None
    engine_port: int = 0

    async def spawn(self, args: list[str], log_name: str, env: dict[str, str] | None = None) -> Any:
        log = open(self.logs / log_name, "wb")  # noqa: SIM115 - handed to the process
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=log, stderr=asyncio.subprocess.STDOUT, env=env, cwd=ROOT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        self.procs.append(proc)
        return proc

    async def start(self, engine: str, nodes: int, pin_enabled: bool) -> None:
        url = ""
        if engine in ("redis", "nats"):
            port = free_port()
            binary = shutil.which(f"{engine}-server") or f"/usr/sbin/{engine}-server"
            args = (
                [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
                 "--dir", str(self.logs)]
                if engine == "redis"
                else [binary, "-a", HOST, "-p", str(port), "-js", "-sd", str(self.logs)]
            )  # fmt: skip
            self.engine = await self.spawn(args, f"{engine}.log")
            self.engine_port = port
            pin(self.engine.pid, 0, pin_enabled)
            await wait_port(self.engine, port, engine)
            url = f"{engine}://{HOST}:{port}"
        env = {**os.environ, "PHX_BENCH_ENGINE": engine, "PHX_BENCH_URL": url}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
        for i in range(nodes):
            port = free_port()
            proc = await self.spawn(
                [sys.executable, "-m", "phoenix_channels", "serve", "benchmarks.cluster:endpoint",
                 "--port", str(port), "--log-level", "warning"],
                f"node{i}.log",
                env,
            )  # fmt: skip
            pin(proc.pid, 0, pin_enabled)
            self.nodes.append((proc, port))
        for i, (proc, port) in enumerate(self.nodes):
            await wait_port(proc, port, f"node {i}")

    async def stop(self) -> None:
        for proc in reversed(self.procs):
            await stop(proc)


@dataclass
class Figures:
    name: str
    connections: int
    broadcasts: int
    seconds: float
    node_cpu: list[float]
    node_deliveries: list[int]
    engine_cpu: float | None

    @property
    def deliveries(self) -> int:
        return sum(self.node_deliveries)


async def measure(
    name: str, engine: str, nodes: int, opts: argparse.Namespace, logs: Path
) -> Figures:
    setup = Setup(name, logs / name)
    setup.logs.mkdir(parents=True)
    gens: list[LoadGen] = []
    try:
        await setup.start(engine, nodes, not opts.no_pin)
        gens = [LoadGen(HOST, port, 5000, 2 + 10 * i) for i, (_, port) in enumerate(setup.nodes)]
        await gens[0].cmd_warmup()
        await gens[0].cmd_control()
        per_node = [opts.n // nodes + (1 if i < opts.n % nodes else 0) for i in range(nodes)]
        for gen, count in zip(gens, per_node, strict=True):
            await gen.cmd_connect(count)
        control = gens[0].control
        assert control is not None
        everyone: list[Client] = [c for gen in gens for c in gen.everyone()]
        per_node[0] += 1  # the control connection is a subscriber on node 0 too
        payload = orjson.dumps({"body": "x" * (opts.payload - 11)})
        for client in everyone:
            client.broadcasts = 0
        await asyncio.sleep(0.5)  # let the nodes settle (engine subscriptions, GC)
        idle = await idle_rate(setup.engine)

        node_cpu0 = [procstat.cpu(proc.pid) for proc, _ in setup.nodes]
        engine_cpu0 = procstat.cpu(setup.engine.pid) if setup.engine else None
        TRACK.start(broadcast=True)
        t0 = time.perf_counter()
        try:
            for i in range(opts.broadcasts):
                TRACK.count = 0
                done = TRACK.arm(len(everyone))
                control.send_text(
                    b'["1","' + str(i + 10).encode() + b'","bench:lobby","shout",' + payload + b"]"
                )
                await wait(done, 30, f"every copy of broadcast {i + 1}")
        finally:
            TRACK.stop()
        seconds = time.perf_counter() - t0
        node_cpu = [
            procstat.cpu(proc.pid) - c0
            for (proc, _), c0 in zip(setup.nodes, node_cpu0, strict=True)
        ]
        engine_cpu = (
            procstat.cpu(setup.engine.pid) - engine_cpu0 - idle * seconds
            if setup.engine is not None and engine_cpu0 is not None
            else None
        )
        wrong = [c.broadcasts for c in everyone if c.broadcasts != opts.broadcasts]
        if wrong:
            raise BenchError(f"{len(wrong)} connections got other than {opts.broadcasts} copies")
        return Figures(
            name,
            len(everyone),
            opts.broadcasts,
            seconds,
            node_cpu,
            [count * opts.broadcasts for count in per_node],
            engine_cpu,
        )
    finally:
        for gen in gens:
            gen.close_all()
        await asyncio.sleep(0.1)
        await setup.stop()


async def idle_rate(proc: asyncio.subprocess.Process | None, seconds: float = 2.0) -> float:
    """CPU seconds per second the engine spends with no traffic (its timers), to subtract."""
    if proc is None:
        return 0.0
    before = procstat.cpu(proc.pid)
    await asyncio.sleep(seconds)
    return (procstat.cpu(proc.pid) - before) / seconds


@dataclass
class EngineFigures:
    engine: str
    broadcasts: int
    seconds: float
    engine_cpu: float
    nodes_cpu: float


async def measure_engine(
    engine: str, count: int, opts: argparse.Namespace, logs: Path
) -> EngineFigures:
    """The adapter and engine alone: node A broadcasts, nodes B and C (this process) get it."""
    from phoenix_channels import PubSub

    setup = Setup(f"engine-{engine}", logs / f"engine-{engine}")
    setup.logs.mkdir(parents=True)
    try:
        await setup.start(engine, 0, not opts.no_pin)
        assert setup.engine is not None
        port = setup.engine_port
        make = PubSub.redis if engine == "redis" else PubSub.nats
        nodes = [make(f"{engine}://{HOST}:{port}", prefix="bench-engine") for _ in range(3)]
        for node in nodes:
            await node.start()
        got = 0
        last: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def receive(message: Any) -> None:
            nonlocal got
            got += 1
            if got == 2 * count and not last.done():
                last.set_result(None)

        for node in nodes[1:]:
            node.subscribe("bench:engine", receive)
            await node.prepare("bench:engine")
        idle = await idle_rate(setup.engine)
        me = os.getpid()
        cpu0, engine0 = procstat.cpu(me), procstat.cpu(setup.engine.pid)
        t0 = time.perf_counter()
        for i in range(count):
            await nodes[0].broadcast("bench:engine", {"body": "x" * 89, "i": i})
        await wait(last, 30, "every copy of the engine-only broadcasts")
        seconds = time.perf_counter() - t0
        nodes_cpu = procstat.cpu(me) - cpu0
        engine_cpu = procstat.cpu(setup.engine.pid) - engine0 - idle * seconds
        for node in nodes:
            await node.stop()
        return EngineFigures(engine, count, seconds, engine_cpu, nodes_cpu)
    finally:
        await setup.stop()


def engine_report(results: list[EngineFigures]) -> str:
    lines = [
        f"{'engine':<8} {'broadcasts/s':>13} {'engine CPU/broadcast':>21} "
        f"{'nodes CPU/broadcast (1 publish + 2 deliveries)':>48}"
    ]
    for r in results:
        lines.append(
            f"{r.engine:<8} {r.broadcasts / r.seconds:>13,.0f} "
            f"{r.engine_cpu / r.broadcasts * 1e6:>18.1f} µs "
            f"{r.nodes_cpu / r.broadcasts * 1e6:>45.1f} µs"
        )
    return "\n".join(lines)


def report(results: list[Figures]) -> str:
    single = next((r for r in results if r.name == "single"), None)
    base = sum(single.node_cpu) / single.deliveries if single else None
    lines = [
        f"{'setup':<8} {'deliveries/s':>13} {'CPU/delivery (all nodes)':>26}   "
        f"{'CPU/delivery per node (node 0 publishes)':<44} {'engine CPU/broadcast':>21}"
    ]
    for r in results:
        total = sum(r.node_cpu) / r.deliveries
        ratio = f" {total / base:5.2f}x" if base else ""
        per_node = "  ".join(
            f"{cpu / d * 1e6:6.2f} µs" for cpu, d in zip(r.node_cpu, r.node_deliveries, strict=True)
        )
        engine = f"{r.engine_cpu / r.broadcasts * 1e6:8.1f} µs" if r.engine_cpu is not None else "-"
        lines.append(
            f"{r.name:<8} {r.deliveries / r.seconds:>13,.0f} {total * 1e6:>16.2f} µs{ratio:>7}   "
            f"{per_node:<44} {engine:>21}"
        )
    return "\n".join(lines)


async def main_async(opts: argparse.Namespace) -> int:
    pin(os.getpid(), 1, not opts.no_pin)
    logs = Path(tempfile.mkdtemp(prefix="phx-bench-cluster-"))
    print(f"logs: {logs}", file=sys.stderr)
    setups = [("single", "local", 1)] + [(e, e, 3) for e in opts.engines.split(",")]
    results = []
    engines: list[EngineFigures] = []
    for round_ in range(opts.repeat):
        for name, engine, nodes in setups:
            print(f"round {round_ + 1}: {name} ...", file=sys.stderr)
            results.append(await measure(f"{name}", engine, nodes, opts, logs / f"r{round_}"))
        for engine in opts.engines.split(","):
            print(f"round {round_ + 1}: {engine} alone ...", file=sys.stderr)
            engines.append(
                await measure_engine(engine, opts.engine_broadcasts, opts, logs / f"r{round_}")
            )
    print(
        f"N = {opts.n:,} subscribers (+1 control) spread over the nodes; {opts.broadcasts} "
        f"broadcasts of a {opts.payload} B payload from node 0; ratios against 'single'"
    )
    for round_ in range(opts.repeat):
        print(report(results[round_ * len(setups) : (round_ + 1) * len(setups)]))
    print(
        f"\nThe engine alone: {opts.engine_broadcasts:,} broadcasts one at a time from node A "
        "to a topic subscribed on nodes B and C (three PubSub nodes in the driver process)"
    )
    print(engine_report(engines))
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1500, help="subscribers in all (1500)")
    parser.add_argument("--broadcasts", type=int, default=200)
    parser.add_argument("--payload", type=int, default=100, help="bytes of JSON payload (100)")
    parser.add_argument("--engines", default="redis,nats")
    parser.add_argument(
        "--engine-broadcasts", type=int, default=5000, help="for the engine-alone phase (5000)"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true")
    opts = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    raise SystemExit(asyncio.run(main_async(opts)))


if __name__ == "__main__":
    main()
