"""A server in a child process, so a test can read its memory from /proc."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (VmRSS: now, VmHWM: the peak so far)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class ServerProcess:
    """``phoenix-channels serve APP`` (fast) or ``uvicorn APP`` (ASGI) on a free loopback port."""

    def __init__(self, app: str, fast: bool = True) -> None:
        self.app = app
        self.fast = fast
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: a chatty server never blocks on it. Closed by __aexit__.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket/websocket?vsn=2.0.0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kib(self) -> int:
        return proc_status(self.pid, "VmRSS")

    def peak_kib(self) -> int:
        return proc_status(self.pid, "VmHWM")

    async def __aenter__(self) -> ServerProcess:
        if self.fast:
            command = ["-m", "phoenix_channels", "serve", self.app]
        else:
            command = [
                "-m",
                "uvicorn",
                self.app,
                "--ws",
                "websockets-sansio",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--lifespan",
                "on",
            ]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *command,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        async with asyncio.timeout(20):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited early: {self.output()[-2000:]}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    writer.close()
                    return self
                except OSError:
                    await asyncio.sleep(0.05)

    def output(self) -> str:
        """What the server printed so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._stop()
        finally:
            self.log.close()

    async def _stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        for _ in range(200):
            if proc.poll() is not None:
                return
            await asyncio.sleep(0.05)
        proc.kill()
        proc.wait(5)
