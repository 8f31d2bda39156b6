"""``phoenix-channels serve --workers N``: real processes on one port, supervised.

(Broadcasts across the workers with the official client, and clients
rejoining after a worker is killed, are in ``tests/js/cluster.test.mjs``.)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import websockets

from tests.pubsub.engines import free_port, shared_url, unique_prefix, wait_until

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.cluster.app:endpoint"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHX_CLUSTER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "phoenix_channels", "serve", APP, *args,
        cwd=ROOT, env=env or _env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_workers_refuse_the_local_adapter_with_a_clear_message() -> None:
    code, out = await _run("--workers", "2", "--port", str(free_port()))
    assert code == 2
    assert "--workers 2 needs a cluster PubSub adapter" in out
    assert "PubSub.redis(url) or PubSub.nats(url)" in out


async def test_workers_must_be_positive() -> None:
    code, out = await _run("--workers", "0")
    assert code == 2 and "--workers must be at least 1" in out


async def test_a_port_in_use_is_reported() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = _env(PHX_CLUSTER_ENGINE="redis", PHX_CLUSTER_URL=shared_url("redis"))
        code, out = await _run("--workers", "2", "--port", str(port), env=env)
    assert code != 0 and f"cannot listen on 127.0.0.1:{port}" in out


class Supervisor:
    """``serve --workers N`` running, its output collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.lines: list[str] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode().rstrip())

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    async def whoami(self) -> int:
        url = f"ws://127.0.0.1:{self.port}/socket/websocket?vsn=2.0.0"
        async with websockets.connect(url, open_timeout=5) as ws:
            await ws.send(json.dumps(["1", "1", "room:who", "phx_join", {}]))
            async with asyncio.timeout(5):
                reply = json.loads(await ws.recv())
        pid: int = reply[4]["response"]["pid"]
        return pid


@pytest.fixture
async def supervisor() -> AsyncIterator[Supervisor]:
    port = free_port()
    env = _env(
        PHX_CLUSTER_ENGINE="redis",
        PHX_CLUSTER_URL=shared_url("redis"),
        PHX_CLUSTER_PREFIX=unique_prefix(),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "phoenix_channels", "serve", APP, "--workers", "2",
        "--port", str(port), cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    sup = Supervisor(proc, port)
    try:
        yield sup
    finally:
        if proc.returncode is None:
            proc.kill()  # its workers get SIGTERM from the kernel (PR_SET_PDEATHSIG)
            await proc.wait()
        sup._reader.cancel()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}/stat").exists()
        and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )


async def test_the_supervisor_replaces_a_dead_worker_and_stops_them_all(
    supervisor: Supervisor,
) -> None:
    await wait_until(
        lambda: supervisor.count("Application startup complete") >= 2,
        "both workers have started",
        timeout=30,
    )
    pids: set[int] = set()
    for _ in range(40):  # the kernel spreads connections over both workers
        pids.add(await supervisor.whoami())
        if len(pids) == 2:
            break
    assert len(pids) == 2, f"40 connections all reached one worker ({pids})"

    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    await wait_until(
        lambda: supervisor.count(f"(pid {victim}) was killed by signal 9") == 1,
        "the supervisor reports the dead worker",
    )
    await wait_until(
        lambda: supervisor.count("Application startup complete") >= 3,
        "a replacement worker has started",
        timeout=30,
    )
    workers = {int(line.rsplit("pid ", 1)[1].rstrip(")")) for line in supervisor.lines
               if "started (pid" in line}  # fmt: skip
    assert len(workers) == 3 and victim in workers
    assert await supervisor.whoami() != victim

    supervisor.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        code = await supervisor.proc.wait()
    assert code == 0, "\n".join(supervisor.lines)
    await wait_until(
        lambda: not any(_alive(pid) for pid in workers), "every worker has exited", timeout=10
    )
    assert supervisor.count("stopping 2 worker(s): draining connections") == 1
