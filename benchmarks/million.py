"""A million joined connections on one box, reproducible with one command.

    sudo .venv/bin/python -m benchmarks.million --n 1000000     # the lead's run
    .venv/bin/python -m benchmarks.million --n 10000 --workers 4  # anywhere, any N

What it does, bounded by ``--max-seconds`` (everything it starts is killed
by PID at the end, whatever happens):

1. **Plans** the processes: W server workers and L load generators, each
   under the per-process open-files limit (``RLIMIT_NOFILE``, 20,000 on the
   reference machine; workers get head room because the kernel spreads
   connections over them by hash, not exactly evenly).
2. **Checks the machine**: the kernel limits N connections need (both ends
   are on this box: 2N sockets) and raises those that are too low when run
   as root, printing each change (``fs.file-max``, ``fs.nr_open``,
   ``net.ipv4.ip_local_port_range``, ``net.core.somaxconn``,
   ``net.ipv4.tcp_max_syn_backlog``, ``net.ipv4.tcp_mem``,
   ``net.netfilter.nf_conntrack_max``); refuses with a clear message when one
   is too low and cannot be raised, or when ``MemAvailable`` is below
   N x the per-connection estimate plus the processes' base.
3. Starts a private ``redis-server`` and ``phoenix-channels serve
   benchmarks.million_app:endpoint --workers W`` on one port; waits until
   W sockets listen (startup time).
4. Starts L ``benchmarks.loadgen`` processes; each spreads its sockets over
   its own source addresses in 127.0.0.0/8 (``--per-address`` each, bound
   before connect) so ephemeral ports never run out; every connection
   joins ``bench:lobby``. Connect+join rate.
5. Measures, idle: server RSS summed over the workers (per connection:
   minus the idle baseline before connecting), kernel memory
   (``/proc/net/sockstat`` TCP pages, ``/proc/meminfo`` Slab), the Redis
   subscriptions (each worker subscribes once per topic, not per client).
6. ``--broadcasts`` times: this harness, a node of the cluster, calls
   ``PubSub.broadcast`` (what ``endpoint.broadcast`` does) once; every
   client time-stamps its copy; reported: time to the last delivery, p50 and
   p99 across clients, server CPU per delivery, and whether every client got
   it exactly once.
7. A heartbeat round (every client sends one and gets its reply).
8. Worker death (``--kill-worker``, on with W >= 2): SIGKILL one worker;
   its clients see their connections close and reconnect (the harness tells
   the load generators to), landing on the other workers; the supervisor
   starts a replacement; one more broadcast must reach every connection
   exactly once.
9. Drain: SIGTERM to the supervisor; time until it exits, and every client
   connection closed.

Before the main run, unless ``--no-baseline``, the same steps run at 19,500
connections on one worker: the server CPU per delivery there is the
reference the main run's figure is compared with.

``--json PATH`` writes every figure; ``tests/scale/test_million_small.py``
runs this script at a small N and asserts its correctness fields only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procstat import cpu, process_tree, rss_kib
from benchmarks.run import LoadGen, RunFailed, free_port, stop, tail
from phoenix_channels import Broadcast, PubSub
from phoenix_channels._workers import _die_with_parent
from phoenix_channels.pubsub.redis import RespConnection

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TOPIC = "bench:lobby"
BASELINE_N = 19_500
# Estimates for the room check (measured on the reference machine at 10-20k,
# rounded up): per connection, server + client + kernel (both sockets); per process.
EST_CONN_BYTES = 3 * 1024 + 3 * 1024 + 9 * 1024
EST_PROCESS_BYTES = 40 * 1024 * 1024


class Refused(Exception):
    """The machine cannot run this N as configured: the message says why and what to do."""


# -- planning and the machine ----------------------------------------------------------------


@dataclass
class Plan:
    n: int
    workers: int
    loadgens: int
    per_loadgen: list[int]
    first_address: list[int]
    per_address: int
    nofile: int


def plan(n: int, workers: int | None, loadgens: int | None, per_address: int) -> Plan:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # children inherit the raised soft limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    nofile = soft
    # A worker's share varies (SO_REUSEPORT hashes connections onto workers):
    # aim at 92% of the limit, minus what a process holds besides its sockets.
    per_worker = int((nofile - 200) * 0.92)
    per_gen = nofile - 500
    if per_worker < 100:
        raise Refused(f"the open-files limit is {nofile}: raise it (ulimit -n)")
    w = workers or max(1, math.ceil(n / per_worker))
    if w == 1:  # no hashing over workers: one process may use its whole limit
        per_worker = nofile - 200
    if n / w > per_worker:
        raise Refused(
            f"{n:,} connections over {w} workers is {n / w:,.0f} each, above the "
            f"{per_worker:,} a worker can hold under its {nofile:,} open files: use "
            f"--workers {math.ceil(n / per_worker)} or more"
        )
    g = loadgens or max(1, math.ceil(n / per_gen))
    if math.ceil(n / g) > per_gen:
        raise Refused(f"--loadgens {g} is too few: each may hold {per_gen:,} connections")
    shares = [n // g + (1 if i < n % g else 0) for i in range(g)]
    firsts = []
    address = 2
    for share in shares:
        firsts.append(address)
        address += math.ceil(share / per_address)
    return Plan(n, w, g, shares, firsts, per_address, nofile)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def kernel_needs(p: Plan, concurrency: int) -> list[tuple[str, list[int], str]]:
    """``(/proc/sys path, minimum values, why)`` for this plan."""
    sockets = 2 * p.n  # both ends of every connection are on this machine
    in_flight = min(65535, concurrency * p.loadgens)  # connects in flight at once
    needs: list[tuple[str, list[int], str]] = [
        ("fs/file-max", [sockets + 100_000], "open files in the whole system"),
        ("fs/nr_open", [p.nofile], "open files a process may be given"),
        ("net/core/somaxconn", [in_flight], "accept queue of each listening worker"),
        ("net/ipv4/tcp_max_syn_backlog", [in_flight], "half-open connections while connecting"),
    ]
    ports = _read("/proc/sys/net/ipv4/ip_local_port_range")
    if ports is not None:
        low, high = (int(x) for x in ports.split())
        if high - low + 1 < p.per_address + 1000:
            needs.append(
                (
                    "net/ipv4/ip_local_port_range",
                    [1024, 65535],
                    f"{p.per_address} ports per source address",
                )
            )
    tcp_mem = _read("/proc/sys/net/ipv4/tcp_mem")
    if tcp_mem is not None:
        pages = [int(x) for x in tcp_mem.split()]
        # Idle sockets hold little; bursts (a broadcast) hold a frame each for a moment.
        want = sockets * 2  # pages: 8 KiB per socket at the pressure limit
        if pages[2] < want:
            needs.append(
                ("net/ipv4/tcp_mem", [pages[0], max(pages[1], want // 2), want], "TCP memory")
            )
    if _read("/proc/sys/net/netfilter/nf_conntrack_max") is not None:
        needs.append(
            ("net/netfilter/nf_conntrack_max", [p.n + 100_000], "tracked loopback connections")
        )
    return needs


def raise_limits(p: Plan, concurrency: int, apply: bool, say: Any) -> list[str]:
    """Raise what is too low (as root, never lowering anything); refuse if one cannot be."""
    changed = []
    problems = []
    for path, minimum, why in kernel_needs(p, concurrency):
        full = f"/proc/sys/{path}"
        current_text = _read(full)
        if current_text is None:
            continue
        current = [int(x) for x in current_text.split()]
        name = path.replace("/", ".")
        if path.endswith("ip_local_port_range"):
            too_low = (current[1] - current[0]) < (minimum[1] - minimum[0]) and (
                current[1] - current[0] + 1 < p.per_address + 1000
            )
        else:
            too_low = any(c < m for c, m in zip(current, minimum, strict=False))
        if not too_low:
            continue
        value = " ".join(str(x) for x in minimum)
        if not apply or os.geteuid() != 0:
            problems.append(f"{name} is {current_text}, needs {value} ({why})")
            continue
        try:
            Path(full).write_text(value)
        except OSError as exc:
            problems.append(f"{name} is {current_text}, needs {value} ({why}); writing: {exc}")
            continue
        changed.append(f"{name}: {current_text} -> {value} ({why})")
        say(f"kernel: {name} {current_text} -> {value} ({why})")
    if problems:
        how = (
            "run as root to let this script raise them"
            if os.geteuid()
            else "they could not be raised"
        )
        raise Refused("kernel limits too low for this N (" + how + "):\n  " + "\n  ".join(problems))
    return changed


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, value = line.split(":", 1)
        out[name] = int(value.split()[0]) * 1024
    return out


def check_room(p: Plan) -> dict[str, int]:
    available = meminfo()["MemAvailable"]
    need = p.n * EST_CONN_BYTES + (p.workers + p.loadgens + 2) * EST_PROCESS_BYTES
    if need > available:
        raise Refused(
            f"{p.n:,} connections need about {need / 2**30:.1f} GiB ({EST_CONN_BYTES / 1024:.0f} "
            f"KiB per connection, both ends and the kernel, plus "
            f"{EST_PROCESS_BYTES / 2**20:.0f} MiB per process for {p.workers} workers and "
            f"{p.loadgens} load generators); MemAvailable is {available / 2**30:.1f} GiB. "
            "Use a smaller --n or a bigger machine"
        )
    return {"need_bytes": need, "available_bytes": available}


def kernel_memory() -> dict[str, int]:
    """TCP socket buffer memory (sockstat, bytes) and slab memory (meminfo, bytes)."""
    tcp_pages = 0
    inuse = 0
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            values = dict(zip(fields[1::2], fields[2::2], strict=False))
            tcp_pages = int(values.get("mem", 0))
            inuse = int(values.get("inuse", 0))
    info = meminfo()
    return {
        "tcp_mem_bytes": tcp_pages * os.sysconf("SC_PAGE_SIZE"),
        "tcp_inuse": inuse,
        "slab_bytes": info.get("Slab", 0),
        "sunreclaim_bytes": info.get("SUnreclaim", 0),
    }


def listeners(port: int) -> int:
    """Sockets listening on ``port`` (each SO_REUSEPORT worker has its own)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        text = _read(table)
        if text is None:
            continue
        for line in text.splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def children(pid: int) -> set[int]:
    return set(process_tree(pid)[1:])


# -- one run -----------------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    n: int
    workers: int
    loadgens: int
    figures: dict[str, Any] = field(default_factory=dict)


def pct(sorted_values: list[int], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(p * (len(sorted_values) - 1)))]


async def wait_for(check: Any, what: str, timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise RunFailed(f"timed out after {timeout:g} s waiting until {what}")
        await asyncio.sleep(interval)


class Harness:
    def __init__(self, args: argparse.Namespace, say: Any) -> None:
        self.args = args
        self.say = say
        self.log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="million-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.redis: subprocess.Popen[bytes] | None = None
        self.redis_url = ""
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            x for x in (str(ROOT / "src"), str(ROOT), self.env.get("PYTHONPATH")) if x
        )

    async def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise Refused("redis-server is not installed (apt-get install redis-server)")
        port = free_port()
        log = open(self.log_dir / "redis.log", "wb")  # noqa: SIM115 - kept by Popen
        self.redis = subprocess.Popen(
            [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--maxclients", "50000", "--dir", str(self.log_dir)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent,  # bounded even if this harness is killed
        )  # fmt: skip
        log.close()
        self.redis_url = f"redis://{HOST}:{port}"

        async def up() -> bool:
            try:
                conn = await RespConnection.open(self.redis_url)
            except OSError:
                return False
            conn.close()
            return True

        await wait_for(up, "redis-server answers", 15)

    def stop_redis(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.kill()
            self.redis.wait(10)

    async def run(self, label: str, n: int, workers: int | None, full: bool) -> Run:
        args = self.args
        p = plan(n, workers, args.loadgens, args.per_address)
        result = Run(label, n, p.workers, p.loadgens)
        fig = result.figures
        fig["plan"] = {
            "workers": p.workers,
            "loadgens": p.loadgens,
            "per_loadgen": p.per_loadgen[0],
            "per_address": p.per_address,
            "nofile": p.nofile,
        }
        say = self.say
        say(f"[{label}] {n:,} connections: {p.workers} workers, {p.loadgens} load generators")
        prefix = f"million-{uuid.uuid4().hex[:8]}"
        port = free_port()
        env = dict(self.env)
        env["PHX_MILLION_REDIS"] = self.redis_url
        env["PHX_MILLION_PREFIX"] = prefix
        server_log = self.log_dir / f"{label}.server.log"
        server: asyncio.subprocess.Process | None = None
        gens: list[tuple[asyncio.subprocess.Process, LoadGen]] = []
        node: PubSub | None = None
        try:
            t0 = time.monotonic()
            with server_log.open("wb") as log:
                server = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "phoenix_channels", "serve",
                    "benchmarks.million_app:endpoint", "--host", HOST, "--port", str(port),
                    "--workers", str(p.workers), "--log-level", "warning",
                    cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=log, stderr=log, start_new_session=True,
                    preexec_fn=_die_with_parent,  # SIGTERM (a drain) if this harness dies
                )  # fmt: skip
            server_pid = server.pid

            def listening() -> bool:
                if server.returncode is not None:
                    raise RunFailed(f"the server exited:\n{tail(server_log)}")
                return listeners(port) >= p.workers

            await wait_for(listening, f"{p.workers} workers listen on {port}", 60 + p.workers)
            fig["startup_s"] = time.monotonic() - t0
            workers0 = children(server_pid)
            say(f"[{label}] {p.workers} workers listening after {fig['startup_s']:.1f} s")

            node = PubSub.redis(self.redis_url, prefix=prefix, node_name=f"harness-{label}")
            await node.start()
            await asyncio.sleep(1.0)  # let the workers settle after startup
            rss0 = rss_kib(server_pid)
            kmem0 = kernel_memory()

            for i in range(p.loadgens):
                gen_log = self.log_dir / f"{label}.loadgen{i}.log"
                with gen_log.open("wb") as log:
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "benchmarks.loadgen", "--host", HOST,
                        "--port", str(port), "--per-address", str(p.per_address),
                        "--first-address", str(p.first_address[i]),
                        "--max-seconds", str(args.max_seconds),
                        cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE, stderr=log, start_new_session=True,
                        limit=1 << 26,  # a line of receive times: 20 bytes per connection
                        preexec_fn=_die_with_parent,
                    )  # fmt: skip
                gens.append((proc, LoadGen(proc, gen_log)))

            async def each(cmd: str, timeout: float, **kw: Any) -> list[dict[str, Any]]:
                return list(await asyncio.gather(*(g.call(cmd, timeout, **kw) for _, g in gens)))

            # Connect and join, all load generators at once.
            cpu0 = cpu(server_pid)
            t0 = time.monotonic()
            connect_timeout = 60 + n / 500
            await asyncio.gather(
                *(
                    g.call("connect", connect_timeout, n=share, concurrency=args.concurrency)
                    for (_, g), share in zip(gens, p.per_loadgen, strict=True)
                )
            )
            took = time.monotonic() - t0
            fig["connect_s"] = took
            fig["connect_rate_per_s"] = n / took
            fig["connect_server_cpu_us_each"] = (cpu(server_pid) - cpu0) / n * 1e6
            status = await each("status", 60)
            fig["joined"] = sum(s["clients"] for s in status)
            fig["closed_after_connect"] = sum(s["closed"] for s in status)
            say(f"[{label}] {fig['joined']:,} joined in {took:.1f} s ({n / took:,.0f}/s)")

            await asyncio.sleep(args.settle)
            rss1 = rss_kib(server_pid)
            kmem1 = kernel_memory()
            fig["server_rss_total_bytes"] = rss1 * 1024
            fig["server_rss_idle_bytes"] = rss0 * 1024
            fig["server_bytes_per_conn"] = (rss1 - rss0) * 1024 / n
            fig["server_total_bytes_per_conn"] = rss1 * 1024 / n
            fig["kernel_tcp_mem_bytes_per_conn"] = (
                kmem1["tcp_mem_bytes"] - kmem0["tcp_mem_bytes"]
            ) / n
            fig["kernel_slab_bytes_per_conn"] = (kmem1["slab_bytes"] - kmem0["slab_bytes"]) / n
            fig["kernel_tcp_inuse"] = kmem1["tcp_inuse"]
            fig["loadgen_bytes_per_conn"] = sum(rss_kib(proc.pid) for proc, _ in gens) * 1024 / n
            fig["engine"] = await self.engine_figures(prefix, p.workers)
            # What the idle workers spend anyway (timers), subtracted from broadcasts' CPU.
            c0, t0 = cpu(server_pid), time.monotonic()
            await asyncio.sleep(1.0)
            idle_cpu_per_s = (cpu(server_pid) - c0) / (time.monotonic() - t0)
            fig["server_idle_cpu_per_s"] = idle_cpu_per_s

            # Broadcasts from this node, one at a time.
            latencies = []
            for k in range(args.broadcasts):
                await each("arm", 60)
                c0, m0 = cpu(server_pid), time.monotonic()
                t_sent = time.time_ns()
                await node.broadcast(TOPIC, Broadcast(TOPIC, "shout", {"k": k}))
                got = await each(
                    "collect", args.broadcast_timeout + 30, within=args.broadcast_timeout
                )
                spent = (cpu(server_pid) - c0) - idle_cpu_per_s * (time.monotonic() - m0)
                stamps = sorted(s for g in got for s in g["stamps"])
                wrong = sum(g["wrong"] for g in got)
                lat = [(s - t_sent) / 1e6 for s in stamps]
                one = {
                    "deliveries": len(stamps),
                    "wrong": wrong,
                    "last_ms": lat[-1] if lat else None,
                    "p50_ms": pct(lat, 0.5) if lat else None,
                    "p99_ms": pct(lat, 0.99) if lat else None,
                    "server_cpu_s": spent,  # the idle workers' own CPU subtracted
                    "server_cpu_us_per_delivery": spent / max(len(stamps), 1) * 1e6,
                }
                latencies.append(one)
                say(
                    f"[{label}] broadcast {k}: {one['deliveries']:,} deliveries, last after "
                    f"{one['last_ms']:.0f} ms (p50 {one['p50_ms']:.0f}, p99 {one['p99_ms']:.0f}), "
                    f"{one['server_cpu_us_per_delivery']:.2f} µs server CPU each, "
                    f"{wrong} connections with other than one copy"
                )
            fig["broadcasts"] = latencies
            fig["every_client_exactly_once"] = all(
                b["wrong"] == 0 and b["deliveries"] == n for b in latencies
            )
            fig["server_cpu_us_per_delivery"] = statistics.median(
                b["server_cpu_us_per_delivery"] for b in latencies
            )
            fig["workers_restarted"] = len(workers0 - children(server_pid))
            if not full:
                return result

            # A heartbeat from every client.
            c0 = cpu(server_pid)
            t0 = time.monotonic()
            await each("heartbeat", 120 + n / 2000)
            fig["heartbeat_round_s"] = time.monotonic() - t0
            fig["heartbeat_server_cpu_us_each"] = (cpu(server_pid) - c0) / n * 1e6

            if args.kill_worker and p.workers >= 2:
                fig["worker_death"] = await self.kill_one(server_pid, gens, each, node, n, label)
            else:
                fig["worker_death"] = None

            # Drain: SIGTERM to the supervisor.
            draining = children(server_pid)
            t0 = time.monotonic()
            server.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(server.wait(), 120)
            except TimeoutError:
                raise RunFailed("the supervisor did not exit within 120 s of SIGTERM") from None
            fig["drain_s"] = time.monotonic() - t0
            fig["drain_exit_code"] = server.returncode
            await wait_for(
                lambda: not any(os.path.exists(f"/proc/{pid}") for pid in draining),
                "every worker has exited after the drain",
                30,
            )
            status = await each("status", 60)
            fig["closed_after_drain"] = sum(s["closed"] for s in status)
            say(
                f"[{label}] drained in {fig['drain_s']:.1f} s (exit {server.returncode}); "
                f"{fig['closed_after_drain']:,} of {n:,} client connections closed"
            )
            return result
        finally:
            for proc, gen in gens:
                with contextlib.suppress(Exception):
                    await gen.call("quit", 30)
                await stop(proc)
            if node is not None:
                await node.stop()
            await stop(server)

    async def kill_one(
        self, server_pid: int, gens: Any, each: Any, node: PubSub, n: int, label: str
    ) -> dict[str, Any]:
        say = self.say
        before = children(server_pid)
        victim = sorted(before)[len(before) // 2]
        fds = len(os.listdir(f"/proc/{victim}/fd"))
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        closed: list[int] = []

        async def settled() -> bool:
            total = sum(s["closed"] for s in await each("status", 60))
            closed.append(total)
            return len(closed) >= 3 and closed[-1] == closed[-3] and total > 0

        await wait_for(settled, "the killed worker's connections are seen closed", 60, 0.5)
        lost = closed[-1]
        reconnect = await each("reconnect", 120 + lost / 200)
        reconnect_s = time.monotonic() - t0
        await wait_for(
            lambda: len(children(server_pid)) == len(before) and victim not in children(server_pid),
            "the supervisor replaces the killed worker",
            60,
        )
        await each("arm", 60)
        await node.broadcast(TOPIC, Broadcast(TOPIC, "shout", {"after": "kill"}))
        limit = self.args.broadcast_timeout
        got = await each("collect", limit + 30, within=limit)
        deliveries = sum(len(g["stamps"]) for g in got)
        wrong = sum(g["wrong"] for g in got)
        say(
            f"[{label}] killed worker {victim} (~{fds} fds): {lost:,} connections closed, "
            f"reconnected to the others in {reconnect_s:.1f} s; the next broadcast reached "
            f"{deliveries:,} of {n:,} ({wrong} with other than one copy)"
        )
        return {
            "victim_fds": fds,
            "connections_lost": lost,
            "reconnected": sum(r["reconnected"] for r in reconnect),
            "reconnect_s": reconnect_s,
            "replaced": True,
            "broadcast_after_deliveries": deliveries,
            "broadcast_after_wrong": wrong,
            "every_client_exactly_once_after": deliveries == n and wrong == 0,
        }

    async def engine_figures(self, prefix: str, workers: int) -> dict[str, Any]:
        conn = await RespConnection.open(self.redis_url)
        try:
            channel = f"{prefix}:t:{TOPIC}"
            _, topic_subs = await conn.command("PUBSUB", "NUMSUB", channel)
            channels = await conn.command("PUBSUB", "CHANNELS", f"{prefix}:*")
            clients = await conn.command("CLIENT", "LIST")
        finally:
            conn.close()
        return {
            "topic_subscribers": topic_subs,
            "engine_channels": len(channels),
            "redis_clients": clients.count(b"\n"),
            "once_per_worker": topic_subs == workers,
        }


# -- report ------------------------------------------------------------------------------------


def report(runs: list[Run]) -> str:
    lines: list[str] = []
    base = next((r for r in runs if r.label == "baseline"), None)

    def row(name: str, text: str) -> None:
        lines.append(f"{name:<26}{text}")

    for r in runs:
        f = r.figures
        lines.append(f"\n## {r.label}: {r.n:,} connections")
        row("processes", f"{r.workers} server workers, {r.loadgens} load generators")
        row("connections held", f"{f.get('joined', 0):,} ({f.get('closed_after_connect')} closed)")
        row("startup", f"{f.get('startup_s', 0):.1f} s until every worker listens")
        row(
            "connect+join",
            f"{f.get('connect_rate_per_s', 0):,.0f}/s ({f.get('connect_s', 0):.1f} s; server "
            f"CPU {f.get('connect_server_cpu_us_each', 0):.0f} µs each)",
        )
        row(
            "server memory",
            f"{f.get('server_bytes_per_conn', 0) / 1024:.2f} KiB/conn over the idle workers "
            f"({f.get('server_total_bytes_per_conn', 0) / 1024:.2f} KiB/conn with their own "
            f"{f.get('server_rss_idle_bytes', 0) / 2**20:,.0f} MiB; RSS summed over workers)",
        )
        row("load generators", f"{f.get('loadgen_bytes_per_conn', 0) / 1024:.2f} KiB/conn RSS")
        row(
            "kernel memory",
            f"{f.get('kernel_slab_bytes_per_conn', 0) / 1024:.2f} KiB/conn slab + "
            f"{f.get('kernel_tcp_mem_bytes_per_conn', 0) / 1024:.2f} KiB/conn TCP buffers "
            "(both ends of each connection)",
        )
        eng = f.get("engine", {})
        once = "one per worker" if eng.get("once_per_worker") else "NOT one per worker"
        row(
            "engine",
            f"{eng.get('topic_subscribers')} Redis subscriptions to the topic ({once}), "
            f"{eng.get('engine_channels')} channels, {eng.get('redis_clients')} Redis clients",
        )
        for i, b in enumerate(f.get("broadcasts", [])):
            row(
                f"broadcast {i}",
                f"last delivery {b['last_ms']:,.0f} ms, p50 {b['p50_ms']:,.0f} ms, p99 "
                f"{b['p99_ms']:,.0f} ms; {b['server_cpu_us_per_delivery']:.2f} µs server "
                "CPU/delivery",
            )
        cpu_each = f.get("server_cpu_us_per_delivery")
        ref = base.figures.get("server_cpu_us_per_delivery") if base is not None else None
        if base is not None and r is not base and cpu_each and ref:
            row(
                "CPU/delivery vs baseline",
                f"x{cpu_each / ref:.2f} ({cpu_each:.2f} µs vs {ref:.2f} µs at {base.n:,} "
                "in one process)",
            )
        row("exactly once", str(f.get("every_client_exactly_once")))
        row("workers restarted", str(f.get("workers_restarted")))
        if "heartbeat_round_s" in f:
            row(
                "heartbeat round",
                f"{f['heartbeat_round_s']:.1f} s, "
                f"{f['heartbeat_server_cpu_us_each']:.1f} µs server CPU each",
            )
        death = f.get("worker_death")
        if death:
            row(
                "worker death",
                f"{death['connections_lost']:,} lost, all reconnected in "
                f"{death['reconnect_s']:.1f} s; next broadcast exactly once to all: "
                f"{death['every_client_exactly_once_after']}",
            )
        if "drain_s" in f:
            row(
                "drain",
                f"{f['drain_s']:.1f} s, exit {f['drain_exit_code']}, "
                f"{f['closed_after_drain']:,} client connections closed",
            )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    t_start = time.monotonic()

    def say(text: str) -> None:
        print(f"{time.monotonic() - t_start:7.1f}s  {text}", file=sys.stderr, flush=True)

    try:
        main_plan = plan(args.n, args.workers, args.loadgens, args.per_address)
    except Refused as exc:
        print(f"million: refused: {exc}", file=sys.stderr)
        return 2
    if args.plan_only:
        p = main_plan
        print(
            f"{p.n:,} connections: {p.workers} workers (~{p.n / p.workers:,.0f} each), "
            f"{p.loadgens} load generators ({p.per_loadgen[0]:,} each, source addresses "
            f"127.0.0.2 onwards, {p.per_address:,} per address); open files per process "
            f"{p.nofile:,}"
        )
        for path, minimum, why in kernel_needs(p, args.concurrency):
            current = _read(f"/proc/sys/{path}")
            print(f"  {path.replace('/', '.')}: now {current}, needs {minimum} ({why})")
        try:
            room = check_room(p)
            print(
                f"  memory: needs ~{room['need_bytes'] / 2**30:.1f} GiB, "
                f"{room['available_bytes'] / 2**30:.1f} GiB available"
            )
        except Refused as exc:
            print(f"  refused: {exc}")
            return 2
        return 0
    baseline = not args.no_baseline and args.n > BASELINE_N
    figures: dict[str, Any] = {"n": args.n}
    try:
        figures["room"] = check_room(main_plan)
        figures["kernel_changes"] = raise_limits(
            main_plan, args.concurrency, not args.no_sysctl, say
        )
    except Refused as exc:
        print(f"million: refused: {exc}", file=sys.stderr)
        return 2
    harness = Harness(args, say)
    runs: list[Run] = []
    try:
        async with asyncio.timeout(args.max_seconds):
            await harness.start_redis()
            if baseline:
                runs.append(await harness.run("baseline", BASELINE_N, 1, full=False))
            runs.append(await harness.run("main", args.n, args.workers, full=True))
    except TimeoutError:
        print(f"million: stopped after --max-seconds {args.max_seconds:g}", file=sys.stderr)
        figures["error"] = "max-seconds"
    except (RunFailed, Refused) as exc:
        print(f"million: failed: {exc}\n  logs in {harness.log_dir}", file=sys.stderr)
        figures["error"] = str(exc)
    finally:
        harness.stop_redis()
    figures["runs"] = [
        {"label": r.label, "n": r.n, "workers": r.workers, **r.figures} for r in runs
    ]
    figures["seconds"] = time.monotonic() - t_start
    print(f"# million benchmark, python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}")
    print(report(runs))
    print(f"\ntotal {figures['seconds']:.0f} s; logs in {harness.log_dir}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 1 if "error" in figures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=int(os.environ.get("PHX_MILLION_N", 1_000_000)))
    parser.add_argument("--workers", type=int, help="server workers (default: from the fd limit)")
    parser.add_argument("--loadgens", type=int, help="load generator processes (default: idem)")
    parser.add_argument("--per-address", type=int, default=5000, help="sockets per 127.x source")
    parser.add_argument(
        "--concurrency", type=int, default=100, help="connects in flight per loadgen"
    )
    parser.add_argument("--broadcasts", type=int, default=3)
    parser.add_argument("--broadcast-timeout", type=float, default=120.0)
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before measuring")
    parser.add_argument("--kill-worker", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--no-baseline", action="store_true", help="skip the 19,500 reference")
    parser.add_argument("--no-sysctl", action="store_true", help="never write /proc/sys")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="bound of the whole run")
    parser.add_argument("--plan-only", action="store_true", help="print the plan and checks")
    parser.add_argument("--log-dir")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
