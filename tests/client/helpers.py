"""Helpers of the client tests: bounded waits, recorders, a server in a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import socket as socketlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from phoenix_channels.client import Channel, Message, Socket

REPO = Path(__file__).resolve().parents[2]
WAIT = 10.0  # every wait is bounded by this (seconds) unless a test says otherwise


async def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Wait until ``check()`` is truthy and return it; fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting until {what}")
        await asyncio.sleep(0.01)


async def next_message(channel: Channel, timeout: float = WAIT) -> Message:
    try:
        async with asyncio.timeout(timeout):
            return await channel.receive()
    except TimeoutError:
        raise AssertionError(f"no event on {channel.topic!r} within {timeout:g} s") from None


class Recorder:
    """Records a socket's lifecycle callbacks."""

    def __init__(self, socket: Socket) -> None:
        self.events: list[tuple[str, Any]] = []
        socket.on_open(lambda: self.events.append(("open", None)))
        socket.on_close(lambda code, reason: self.events.append(("close", (code, reason))))
        socket.on_error(lambda error: self.events.append(("error", error)))

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.events if k == kind)

    def of(self, kind: str) -> list[Any]:
        return [value for k, value in self.events if k == kind]


def free_port() -> int:
    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socketlib.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class ServerProcess:
    """``phoenix-channels serve tests.client.app:endpoint`` in a subprocess (killed by pid)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Any = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket"

    async def start(self) -> ServerProcess:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "phoenix_channels",
                "serve",
                "tests.client.app:endpoint",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + 20
        while not port_open(self.port):
            if self.proc.poll() is not None:
                self.log.seek(0)
                err = self.log.read().decode(errors="replace")
                raise AssertionError(f"the server exited ({self.proc.returncode}): {err}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"the server did not listen on {self.port} within 20 s")
            await asyncio.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL by pid (after SIGCONT, in case it was paused), then reap."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.log is not None:
            self.log.close()
            self.log = None
