"""Instructions per connect+join and per delivered broadcast, counted by callgrind.

CPU seconds on a shared or noisy machine cannot settle a difference of a
few percent; instruction counts can (repeatable to about ±0.3% here). Each
server runs under ``valgrind --tool=callgrind`` with counting off; the load
generator drives it, and counting is switched on (``callgrind_control -i
on``) only around the phase measured. Two runs per server:

- connect: ``--n`` clients connect and join; instructions / N;
- deliver: ``--n`` clients joined, then ``--broadcasts`` broadcasts to all of
  them (and the control connection); instructions / deliveries.

User-space instructions of the server process only: the kernel's share
(system calls, which dominate the floor) is not in them, so for a change
in Python code a ratio here is above the same ratio in CPU seconds.

    .venv/bin/python -m benchmarks.instructions --servers ours,ours-prometheus,ours@/old/tree

Needs valgrind (``apt-get install valgrind``). Servers as in ``run.py``
(``NAME@PATH`` runs NAME from another checkout); every process started here
is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from benchmarks.run import (
    HOST,
    ROOT,
    LoadGen,
    RunFailed,
    free_port,
    server_command,
    split_server,
    stop,
    tail,
    wait_ready,
)


async def control(pid: int, switch: str) -> None:
    """Counting on or off in the callgrind process ``pid``."""
    proc = await asyncio.create_subprocess_exec(
        "callgrind_control", "-i", switch, str(pid),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    if await proc.wait() != 0:
        raise RunFailed(f"callgrind_control -i {switch} {pid} failed")


def totals(out: Path) -> int:
    for line in out.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RunFailed(f"no totals in {out}")


async def count(server: str, phase: str, opts: argparse.Namespace, logs: Path) -> float:
    """Instructions per connect+join (``phase="connect"``) or per delivery (``"deliver"``)."""
    kind, tree = split_server(server)
    port = free_port()
    label = f"{server.replace('/', '_')}-{phase}"
    out = logs / f"{label}.callgrind"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(tree / "src"), str(tree), env.get("PYTHONPATH")) if p
    )
    command = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        *server_command(kind, opts.python, port),
    ]  # fmt: skip
    srv = gen_proc = None
    try:
        with (logs / f"{label}.server.log").open("wb") as log:
            srv = await asyncio.create_subprocess_exec(
                *command, cwd=tree, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        await wait_ready(srv, port, 300)  # valgrind starts Python slowly
        client_log = logs / f"{label}.loadgen.log"
        with client_log.open("wb") as log:
            gen_proc = await asyncio.create_subprocess_exec(
                opts.python, "-m", "benchmarks.loadgen", "--host", HOST, "--port", str(port),
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        gen = LoadGen(gen_proc, client_log)
        await gen.call("warmup", 300)
        if phase == "connect":
            await control(srv.pid, "on")
            await gen.call("connect", 1200, n=opts.n, concurrency=50)
            await control(srv.pid, "off")
            per = opts.n
        else:
            await gen.call("control", 300)
            await gen.call("connect", 1200, n=opts.n, concurrency=50)
            await gen.call("broadcast", 600, count=5, reset=True, size=100)  # warm
            await control(srv.pid, "on")
            answer = await gen.call("broadcast", 1200, count=opts.broadcasts, reset=False, size=100)
            await control(srv.pid, "off")
            per = answer["deliveries"]
        await gen.call("quit", 300)
        srv.send_signal(signal.SIGINT)  # callgrind writes its counts as the server exits
        try:
            await asyncio.wait_for(srv.wait(), 300)
        except TimeoutError:
            raise RunFailed(
                f"{server} did not stop:\n{tail(logs / f'{label}.server.log')}"
            ) from None
        return totals(out) / per
    finally:
        await stop(gen_proc)
        await stop(srv)


async def main(opts: argparse.Namespace) -> None:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind: apt-get install valgrind")
    logs = Path(tempfile.mkdtemp(prefix="phx-bench-instructions-"))
    print(f"logs: {logs}", flush=True)
    servers = opts.servers.split(",")
    rows: dict[str, dict[str, float]] = {}
    for phase in ("connect", "deliver"):
        # Two servers at a time: instruction counts do not depend on the machine's load.
        for i in range(0, len(servers), 2):
            batch = servers[i : i + 2]
            found = await asyncio.gather(*(count(s, phase, opts, logs) for s in batch))
            for server, value in zip(batch, found, strict=True):
                rows.setdefault(server, {})[phase] = value
                print(f"# {server}: {phase} {value:,.0f} instructions", flush=True)
    base = rows[servers[0]]
    print(
        f"\nInstructions (server, user space): connect+join of {opts.n:,} clients; "
        f"{opts.broadcasts} broadcasts to {opts.n + 1:,}; ratios against {servers[0]}"
    )
    width = max(len(s) for s in servers)
    print(f"{'server':<{width}}  {'per connect+join':>24}  {'per delivery':>20}")
    for server in servers:
        row = rows[server]
        print(
            f"{server:<{width}}  {row['connect']:>15,.0f} {row['connect'] / base['connect']:>7.3f}x"
            f"  {row['deliver']:>11,.0f} {row['deliver'] / base['deliver']:>7.3f}x"
        )


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="ours,ours-prometheus")
    parser.add_argument("--n", type=int, default=2000, help="joined clients")
    parser.add_argument("--broadcasts", type=int, default=20)
    parser.add_argument("--python", default=sys.executable)
    opts = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(opts))


if __name__ == "__main__":
    cli()
