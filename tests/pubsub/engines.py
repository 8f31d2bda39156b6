"""Redis and NATS for the tests: the run's own services, and private servers to restart.

The run's services (named by ``PHX_TEST_REDIS_URL``/``PHX_TEST_NATS_URL``,
started on free ports by ``tests/services.py`` for the whole run) carry the
ordinary tests; every test uses its own channel prefix, so tests never see
each other's messages. Tests that stop the engine start a further private
``redis-server``/``nats-server`` on a free port and kill it by PID.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REDIS_URL = os.environ.get("PHX_TEST_REDIS_URL", "")
NATS_URL = os.environ.get("PHX_TEST_NATS_URL", "")
ENGINES = ("redis", "nats")
BINARIES = {"redis": "redis-server", "nats": "nats-server"}


def reachable(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def shared_url(engine: str) -> str:
    """The run's service URL, or a skip saying why there is none."""
    url = REDIS_URL if engine == "redis" else NATS_URL
    if not url:
        pytest.skip(
            f"no {engine} for this run: {BINARIES[engine]} is not installed "
            f"(tests/services.py installs it with apt-get when run as root)"
        )
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    if not reachable(port):
        pytest.skip(
            f"{engine} is not running at {url} (PHX_TEST_{engine.upper()}_URL; "
            f"`make test` starts a private one)"
        )
    return url


def unique_prefix() -> str:
    """A channel/subject prefix no other test run uses."""
    return f"t{os.getpid()}-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OwnServer:
    """A private redis-server or nats-server on a free loopback port, to stop and restart."""

    def __init__(self, engine: str, workdir: Path) -> None:
        binary = shutil.which(BINARIES[engine]) or (
            "/usr/sbin/nats-server" if engine == "nats" else None
        )
        if binary is None or not os.path.exists(binary):
            pytest.skip(f"{BINARIES[engine]} is not installed (apt-get install {engine}-server)")
        self.engine = engine
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.engine}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self.engine == "redis":
            args = [
                self.binary,
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir),
            ]  # fmt: skip
        else:
            args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port)]
        log = open(self.workdir / f"{self.engine}.log", "ab")  # noqa: SIM115 - kept by Popen
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        await wait_until(
            lambda: reachable(self.port),
            f"{self.engine} on port {self.port} accepts connections",
            timeout=10.0,
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


async def wait_until(
    condition: Callable[[], bool], what: str, timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting until {what}")
        await asyncio.sleep(interval)


def assert_one_outage_logged(
    nodes: dict[str, Any], records: list[logging.LogRecord], failed_broadcasts: int
) -> list[str]:
    """Each node (name -> its engine adapter) lost its engine link once and came back once,
    each logged in one WARNING line; node "a" reports ``failed_broadcasts`` failed broadcasts.
    Returns the WARNING lines, for further checks."""
    for adapter in nodes.values():
        assert (adapter.stats.outages, adapter.stats.reconnects) == (1, 1), adapter.stats
    lines = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    for name in nodes:
        lost = [m for m in lines if m.startswith(f"node {name} lost the connection")]
        back = [m for m in lines if m.startswith(f"node {name} reconnected")]
        assert len(lost) == 1 and len(back) == 1, lines
    assert f"{failed_broadcasts} broadcast(s) from this node failed" in next(
        m for m in lines if m.startswith("node a reconnected")
    )
    return lines
