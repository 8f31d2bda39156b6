"""Benchmark harness: each server against the floor, at several connection counts.

For every N and every server it starts a fresh server process and a fresh
load generator process (``loadgen.py``), drives the phases over the load
generator's stdin/stdout, reads the server's CPU time and RSS from /proc
around each phase (``procstat.py``), and prints one table per N with every
figure beside the floor's (a bare uvloop server, ``floor_server.py``) measured
in the same run.

    .venv/bin/python -m benchmarks.run --servers floor,uvicorn-starlette --n 1000,5000

Observability: ``--servers ours,ours-telemetry,ours-prometheus`` compares the
fast path with nothing listening, with a no-op handler on every telemetry
event, with Prometheus metrics on (goal: 1.10x of ``ours``), and with the
dashboard on and watched (``ours-dashboard``; add it to ``--servers``).

Phases: warm-up connection; control connection; baseline RSS; connect+join N
connections (server CPU / N); RSS after ~1 s idle ((RSS - baseline) / N);
broadcasts (server CPU / deliveries, deliveries/s); sequential echo pushes
(push->reply p50/p99). Servers are only ever on 127.0.0.1; every wait has a
timeout and every process started here is killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from benchmarks.procstat import cpu, rss_kib

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
UVICORN_FLAGS = ["--ws", "websockets", "--loop", "uvloop", "--http", "httptools"]
UVICORN_FLAGS += ["--log-level", "warning"]


def server_command(name: str, python: str, port: int) -> list[str]:
    where = ["--host", HOST, "--port", str(port)]
    if name == "floor":
        return [python, "benchmarks/floor_server.py", *where]
    if name == "ours":
        return [python, "-m", "phoenix_channels", "serve", "benchmarks.bench_app:endpoint", *where]
    if name in ("ours-telemetry", "ours-prometheus", "ours-dashboard"):
        app = f"benchmarks.bench_app:endpoint_{name.removeprefix('ours-')}"
        return [python, "-m", "phoenix_channels", "serve", app, *where]
    if name == "ours-asgi":
        return [python, "-m", "uvicorn", "benchmarks.bench_app:endpoint", *where, *UVICORN_FLAGS]
    if name == "ours-uvicorn-cli":  # the user's own uvicorn command with the one setting
        fast = ["--http", "phoenix_channels.uvicorn:HttpProtocol", "--loop", "uvloop"]
        app = "benchmarks.bench_app:endpoint"
        return [python, "-m", "uvicorn", app, *where, *fast, "--log-level", "warning"]
    if name == "uvicorn-starlette":
        app = "benchmarks.baselines.starlette_app:app"
        return [python, "-m", "uvicorn", app, *where, *UVICORN_FLAGS]
    raise ValueError(f"unknown server {name!r}")


SERVERS = (
    "floor",
    "ours",
    "ours-uvicorn-cli",
    "ours-asgi",
    "uvicorn-starlette",
    "ours-telemetry",
    "ours-prometheus",
    "ours-dashboard",
)


class RunFailed(Exception):
    """A server did not start, or a phase failed or timed out."""


@dataclass
class Result:
    server: str
    n: int
    error: str | None = None
    baseline_rss_kib: int = 0
    joined_rss_kib: int = 0
    rss_per_conn_kib: float = 0.0
    connect_cpu_us: float = 0.0
    connect_seconds: float = 0.0
    broadcast_cpu_us: float = 0.0
    client_broadcast_cpu_us: float = 0.0  # the load generator's own cost, for reference
    deliveries: int = 0
    deliveries_per_s: float = 0.0
    latency: dict[str, float] = field(default_factory=dict)
    echo_cpu_us: float = 0.0


@dataclass
class Options:
    python: str
    broadcasts: int
    batch: int
    payload: int
    echoes: int
    echo_conns: int
    concurrency: int
    idle: float
    per_address: int
    pin: bool
    start_timeout: float
    log_dir: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "    (empty log)"


def pin(pid: int, core: int, enabled: bool) -> None:
    if enabled and (os.cpu_count() or 1) >= 2:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {core})


async def stop(proc: asyncio.subprocess.Process | None) -> None:
    """SIGTERM, then SIGKILL to the process group this harness created for it."""
    if proc is None:
        return
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: pgid == pid
    if proc.returncode is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)


async def wait_ready(proc: asyncio.subprocess.Process, port: int, timeout: float) -> None:
    """Poll the TCP port until it accepts, the process exits, or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.returncode is not None:
            raise RunFailed(f"exited with code {proc.returncode} before listening")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 1)
        except (OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise RunFailed(f"not listening on {HOST}:{port} after {timeout:g} s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class LoadGen:
    """The load generator subprocess, driven one JSON command at a time."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    async def call(self, cmd: str, timeout: float = 120.0, **args: Any) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(orjson.dumps({"cmd": cmd, **args}) + b"\n")
            await stdin.drain()
            line = await asyncio.wait_for(stdout.readline(), timeout)
        except TimeoutError:
            raise RunFailed(f"load generator: {cmd} took more than {timeout:g} s") from None
        except (BrokenPipeError, ConnectionResetError):
            line = b""
        if not line:
            last = tail(self.log, 1).strip()
            raise RunFailed(f"load generator exited during {cmd}: {last}\n{tail(self.log)}")
        answer: dict[str, Any] = orjson.loads(line)
        if not answer.pop("ok"):
            raise RunFailed(f"{cmd}: {answer.get('error')}")
        return answer


async def measure(
    gen: LoadGen,
    pid: int,
    gen_pid: int,
    n: int,
    opts: Options,
    say: Callable[[str], None],
    result: Result,
) -> None:
    """The phases of one run; fills ``result`` (``pid`` is the server's)."""
    await gen.call("warmup")
    await asyncio.sleep(0.5)
    await gen.call("control")
    await asyncio.sleep(0.5)
    result.baseline_rss_kib = rss_kib(pid)

    say(f"connect+join {n:,}")
    c0 = cpu(pid)
    answer = await gen.call("connect", 60 + n * 0.02, n=n, concurrency=opts.concurrency)
    result.connect_cpu_us = (cpu(pid) - c0) / n * 1e6
    result.connect_seconds = answer["seconds"]
    await asyncio.sleep(opts.idle)
    result.joined_rss_kib = rss_kib(pid)
    result.rss_per_conn_kib = (result.joined_rss_kib - result.baseline_rss_kib) / n

    # the server may close connections that send nothing for 60 s (Phoenix's
    # idle timeout): heartbeats go out between measured batches
    await gen.call("heartbeat")
    last_heartbeat = time.monotonic()
    say(f"{opts.broadcasts} broadcasts to {n + 1:,}")
    cpu_seconds = client_seconds = wall = 0.0
    done = 0
    while done < opts.broadcasts:
        if time.monotonic() - last_heartbeat > 20:
            await gen.call("heartbeat")
            last_heartbeat = time.monotonic()
        count = min(opts.batch, opts.broadcasts - done)
        c0, g0 = cpu(pid), cpu(gen_pid)
        answer = await gen.call(
            "broadcast", 60 + count * n * 1e-3, count=count, reset=done == 0, size=opts.payload
        )
        cpu_seconds += cpu(pid) - c0
        client_seconds += cpu(gen_pid) - g0
        wall += answer["seconds"]
        result.deliveries += answer["deliveries"]
        done += count
    await gen.call("broadcast_check")
    result.broadcast_cpu_us = cpu_seconds / result.deliveries * 1e6
    result.client_broadcast_cpu_us = client_seconds / result.deliveries * 1e6
    result.deliveries_per_s = result.deliveries / wall

    if time.monotonic() - last_heartbeat > 20:
        await gen.call("heartbeat")
    say(f"{opts.echoes} echoes")
    c0 = cpu(pid)
    result.latency = await gen.call(
        "latency",
        60 + opts.echoes * 0.05,
        count=opts.echoes,
        conns=opts.echo_conns,
        size=opts.payload,
    )
    result.echo_cpu_us = (cpu(pid) - c0) / opts.echoes * 1e6


def split_server(server: str) -> tuple[str, Path]:
    """``"ours@/path/to/checkout"`` -> ("ours", that checkout); plain names run this tree.

    Naming another checkout (e.g. a ``git worktree`` of the previous commit)
    measures the code before and after a change in one interleaved run.
    """
    kind, _, tree = server.partition("@")
    return kind, Path(tree).resolve() if tree else ROOT


async def run_one(server: str, n: int, opts: Options, say: Callable[[str], None]) -> Result:
    result = Result(server, n)
    port = free_port()
    kind, tree = split_server(server)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(tree / "src"), str(tree), env.get("PYTHONPATH")) if p
    )
    label = server.replace("/", "_")
    server_log = opts.log_dir / f"{label}-{n}.server.log"
    client_log = opts.log_dir / f"{label}-{n}.loadgen.log"
    srv: asyncio.subprocess.Process | None = None
    gen_proc: asyncio.subprocess.Process | None = None
    try:
        with server_log.open("wb") as log:
            srv = await asyncio.create_subprocess_exec(
                *server_command(kind, opts.python, port),
                cwd=tree,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        pin(srv.pid, 0, opts.pin)
        try:
            await wait_ready(srv, port, opts.start_timeout)
        except RunFailed as exc:
            raise RunFailed(
                f"server {server!r} failed to start: {exc}\n{tail(server_log)}"
            ) from None
        with client_log.open("wb") as log:
            gen_proc = await asyncio.create_subprocess_exec(
                opts.python,
                "-m",
                "benchmarks.loadgen",
                "--host",
                HOST,
                "--port",
                str(port),
                "--per-address",
                str(opts.per_address),
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},  # the same load tool for every tree
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        pin(gen_proc.pid, 1, opts.pin)
        gen = LoadGen(gen_proc, client_log)

        try:
            await measure(gen, srv.pid, gen_proc.pid, n, opts, say, result)
        except RunFailed as exc:
            raise RunFailed(f"{exc}\n  server log {server_log}:\n{tail(server_log)}") from None
        await gen.call("quit", 30)
        if srv.returncode is not None:
            raise RunFailed(f"server exited with code {srv.returncode}:\n{tail(server_log)}")
    finally:
        await stop(gen_proc)
        await stop(srv)
    return result


# --- report -------------------------------------------------------------------


def combine(results: list[Result]) -> Result:
    """The median of each figure over the successful repeats of one server and N."""
    ok = [r for r in results if r.error is None]
    if not ok:
        return results[-1]
    out = Result(ok[0].server, ok[0].n)
    for name in ("baseline_rss_kib", "joined_rss_kib", "deliveries"):
        setattr(out, name, int(statistics.median(getattr(r, name) for r in ok)))
    for name in (
        "rss_per_conn_kib", "connect_cpu_us", "connect_seconds", "broadcast_cpu_us",
        "client_broadcast_cpu_us",
        "deliveries_per_s", "echo_cpu_us",
    ):  # fmt: skip
        setattr(out, name, statistics.median(getattr(r, name) for r in ok))
    out.latency = {k: statistics.median(r.latency[k] for r in ok) for k in ok[0].latency}
    return out


def ratio(value: float, floor: float | None) -> str:
    return f"{value / floor:5.2f}x" if floor else "    - "


METRICS: list[tuple[str, Callable[[Result], float], str, str]] = [
    ("connect+join CPU/conn", lambda r: r.connect_cpu_us, "µs", "8.1f"),
    ("RSS/idle joined conn", lambda r: r.rss_per_conn_kib, "KiB", "7.2f"),
    ("CPU/delivered msg", lambda r: r.broadcast_cpu_us, "µs", "7.2f"),
    ("push->reply p50", lambda r: r.latency.get("p50_us", 0.0), "µs", "8.1f"),
    ("push->reply p99", lambda r: r.latency.get("p99_us", 0.0), "µs", "8.1f"),
]


def table(n: int, results: list[Result], opts: Options) -> str:
    floor = next((r for r in results if r.server == "floor" and r.error is None), None)
    head = ["server", *(m[0] for m in METRICS), "deliveries/s"]
    rows = [head]
    for r in results:
        if r.error is not None:
            rows.append([r.server, "FAILED: " + r.error.splitlines()[0]])
            continue
        cells = [r.server]
        for _, get, unit, fmt in METRICS:
            cells.append(f"{get(r):{fmt}} {unit} {ratio(get(r), get(floor) if floor else None)}")
        rows.append([*cells, f"{r.deliveries_per_s:,.0f}"])
    widths = [max(len(row[i]) for row in rows if len(row) > 2) for i in range(len(head))]
    lines = [
        f"N = {n:,} joined connections (+1 control): {opts.broadcasts} broadcasts of a "
        f"{opts.payload} B payload, each delivered to all {n + 1:,}; {opts.echoes} "
        "sequential echoes; ratios against the floor"
    ]
    for row in rows:
        if len(row) == 2:
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]}")
        else:
            lines.append(
                "  ".join(
                    c.rjust(w) if i else c.ljust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
    for r in results:
        if r.server.startswith("ours") and r.error is None and floor is not None:
            lines.append(goals(r, floor))
    ours = next((r for r in results if r.server == "ours" and r.error is None), None)
    for r in results:
        if r.server in OBSERVED and r.error is None and ours is not None:
            lines.append(observed_goals(r, ours, OBSERVED[r.server]))
    return "\n".join(lines)


# Observability variants against plain "ours", measured in the same run: the
# goal ratio of CPU per delivered message and per connect+join.
# (None: reported, no goal). "Nothing listening" is ``ours`` itself: its 1.03x
# goal is against the release before telemetry, compared across runs.
OBSERVED: dict[str, float | None] = {
    "ours-telemetry": None,
    "ours-prometheus": 1.10,
    "ours-dashboard": None,
}


def observed_goals(r: Result, ours: Result, limit: float | None) -> str:
    checks = [
        ("CPU/delivered", r.broadcast_cpu_us / ours.broadcast_cpu_us),
        ("connect+join", r.connect_cpu_us / ours.connect_cpu_us),
    ]
    if limit is None:
        parts = [f"{name} {value:.3f}x ours" for name, value in checks]
        return f"  {r.server}: " + "; ".join(parts)
    parts = [
        f"{name} <= {limit:.2f}x ours: {'PASS' if value <= limit else 'FAIL'} ({value:.3f}x)"
        for name, value in checks
    ]
    return f"  goals for {r.server}: " + "; ".join(parts)


def goals(r: Result, floor: Result) -> str:
    checks = [
        ("CPU/delivered <= 1.3x floor", r.broadcast_cpu_us / floor.broadcast_cpu_us, 1.3, "x"),
        ("RSS/idle conn <= 4 KiB", r.rss_per_conn_kib, 4.0, " KiB"),
        ("connect+join <= 2x floor", r.connect_cpu_us / floor.connect_cpu_us, 2.0, "x"),
    ]
    parts = [
        f"{name}: {'PASS' if value <= limit else 'FAIL'} ({value:.2f}{unit})"
        for name, value, limit, unit in checks
    ]
    return f"  goals for {r.server}: " + "; ".join(parts)


def parse_list(text: str, cast: Callable[[str], Any]) -> list[Any]:
    return [cast(part.strip().replace("_", "")) for part in text.split(",") if part.strip()]


async def main_async(args: argparse.Namespace) -> int:
    servers: list[str] = parse_list(args.servers, str)
    for name in servers:
        kind, tree = split_server(name)
        if kind not in SERVERS:
            raise SystemExit(f"unknown server {name!r}; known: {', '.join(SERVERS)}")
        if not (tree / "src" / "phoenix_channels").is_dir():
            raise SystemExit(f"{name!r}: {tree} is not a checkout of this project")
    if "floor" not in servers:
        servers.insert(0, "floor")  # every figure is reported beside the floor
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="phx-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    opts = Options(
        python=args.python,
        broadcasts=args.broadcasts,
        batch=args.batch,
        payload=args.payload,
        echoes=args.echoes,
        echo_conns=args.echo_conns,
        concurrency=args.concurrency,
        idle=args.idle,
        per_address=args.per_address,
        pin=not args.no_pin,
        start_timeout=args.start_timeout,
        log_dir=log_dir,
    )
    print(f"# logs in {log_dir}", file=sys.stderr)
    all_results: list[Result] = []
    tables = []
    for n in parse_list(args.n, int):
        runs: dict[str, list[Result]] = {server: [] for server in servers}
        for rep in range(args.repeat):
            for server in servers:
                if runs[server] and runs[server][-1].error is not None:
                    continue  # failed once at this N: do not try again
                label = f"{server} N={n:,}" + (f" #{rep + 1}" if args.repeat > 1 else "")
                t0 = time.monotonic()

                def say(what: str, label: str = label, t0: float = t0) -> None:
                    line = f"# [{time.monotonic() - t0:6.1f}s] {label}: {what}"
                    print(line, file=sys.stderr, flush=True)

                budget = args.run_timeout or 120 + n * 0.012
                try:
                    result = await asyncio.wait_for(run_one(server, n, opts, say), budget)
                    say("done")
                except (RunFailed, TimeoutError, OSError) as exc:
                    message = str(exc) or f"run exceeded {budget:g} s"
                    say(f"FAILED: {message}")
                    result = Result(server, n, error=message)
                runs[server].append(result)
                all_results.append(result)
        tables.append(table(n, [combine(runs[server]) for server in servers], opts))
        print("\n" + tables[-1], flush=True)
    if args.json:
        Path(args.json).write_bytes(
            orjson.dumps([asdict(r) for r in all_results], option=orjson.OPT_INDENT_2)
        )
    return 1 if any(r.error for r in all_results) else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--servers",
        default="floor,ours,ours-asgi,uvicorn-starlette",
        help=f"comma-separated, from {', '.join(SERVERS)} (floor is always run); "
        "NAME@PATH runs NAME from the checkout at PATH (before/after comparisons)",
    )
    parser.add_argument("--n", default="1000,5000,19500", help="joined connection counts")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per server and N (interleaved); medians shown"
    )
    parser.add_argument("--broadcasts", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10, help="broadcasts per measured batch")
    parser.add_argument("--payload", type=int, default=100, help="payload JSON size in bytes")
    parser.add_argument("--echoes", type=int, default=1000)
    parser.add_argument("--echo-conns", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=200, help="connects in flight")
    parser.add_argument("--idle", type=float, default=1.0, help="seconds idle before RSS")
    parser.add_argument(
        "--per-address",
        type=int,
        default=5000,
        help="client connections per source address 127.0.0.X",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the server to CPU 0 and the load generator to CPU 1",
    )
    parser.add_argument("--start-timeout", type=float, default=30.0)
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=0.0,
        help="seconds per server and N (default 120 + 0.012 * N)",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for subprocesses")
    parser.add_argument("--log-dir", default="", help="default: a new folder under /tmp")
    parser.add_argument("--json", default="", help="also write raw results to this file")
    args = parser.parse_args(argv)
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
