"""A private Redis Cluster for the tests: masters (and replicas) on free loopback ports.

``LocalRedisCluster(workdir, masters=3, replicas=1)`` starts
``redis-server --cluster-enabled yes`` processes, joins them with
``redis-cli --cluster create`` and waits until every node reports
``cluster_state:ok``. Processes are this test's own: they are killed by
PID (:meth:`kill`, :meth:`stop`), never by name.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from .engines import reachable, wait_until


def _free_cluster_port() -> int:
    """A port free on loopback whose cluster-bus port (port + 10000) is free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _cli(port: int, *args: str) -> str:
    redis_cli = shutil.which("redis-cli")
    assert redis_cli is not None
    done = subprocess.run(
        [redis_cli, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout + done.stderr


class LocalRedisCluster:
    """Redis Cluster nodes of this test, each a ``redis-server`` process on 127.0.0.1."""

    def __init__(
        self, workdir: Path, *, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000
    ) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None or shutil.which("redis-cli") is None:
            pytest.skip("redis-server/redis-cli are not installed (apt-get install redis-server)")
        version = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=False
        ).stdout
        major = version.split("v=", 1)[-1].split(".", 1)[0]
        if not major.isdigit() or int(major) < 7:
            pytest.skip(f"sharded pub/sub needs Redis 7 or later: {version.strip()}")
        self.workdir = workdir
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports: list[int] = []
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{port}" for port in self.ports]

    def _spawn(self, port: int) -> None:
        node_dir = self.workdir / f"node-{port}"
        node_dir.mkdir(exist_ok=True)
        args = [
            str(self.binary),
            "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(node_dir), "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # A replica may take over however long ago it last heard from its master
            # (on a loaded test machine the default can refuse the failover).
            "--cluster-replica-validity-factor", "0",
        ]  # fmt: skip
        log = open(node_dir / "redis.log", "ab")  # noqa: SIM115 - kept by Popen
        self.processes[port] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    async def start(self) -> None:
        count = self.masters * (1 + self.replicas)
        self.ports = [_free_cluster_port() for _ in range(count)]
        for port in self.ports:
            self._spawn(port)
        for port in self.ports:
            await wait_until(lambda p=port: reachable(p), f"redis node {port} accepts connections")
        redis_cli = shutil.which("redis-cli")
        assert redis_cli is not None
        create = await asyncio.create_subprocess_exec(
            redis_cli, "--cluster", "create",
            *(f"127.0.0.1:{port}" for port in self.ports),
            "--cluster-replicas", str(self.replicas), "--cluster-yes",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await create.communicate()
        if create.returncode != 0:
            raise AssertionError(f"redis-cli --cluster create failed:\n{out.decode()}")
        await self.wait_ok()

    async def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and agrees on the masters."""

        def ok() -> bool:
            for port in self.live_ports():
                if "cluster_state:ok" not in _cli(port, "CLUSTER", "INFO"):
                    return False
            return True

        await wait_until(ok, "the Redis Cluster reports cluster_state:ok", timeout, 0.2)

    def live_ports(self) -> list[int]:
        return [port for port, proc in self.processes.items() if proc.poll() is None]

    def master_ports(self) -> list[int]:
        """Ports of the live masters that serve slots, as a live node sees them.

        Only masters with slots: just after the cluster is made, a replica can
        still show as a master (without slots) until the gossip reaches this node.
        """
        masters = []
        for line in _cli(self.live_ports()[0], "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) > 8 and "master" in fields[2] and "fail" not in fields[2]:
                masters.append(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        return masters

    async def wait_failover(self, dead_port: int, timeout: float = 30.0) -> None:
        """Until the dead master's replica has taken over and the cluster is ok again."""

        def promoted() -> bool:
            live = self.live_ports()
            if not live:
                return False
            info = _cli(live[0], "CLUSTER", "INFO")
            return "cluster_state:ok" in info and dead_port not in self.master_ports()

        await wait_until(promoted, f"a replica replaced master {dead_port}", timeout, 0.2)
        await self.wait_ok(timeout)

    def kill(self, port: int) -> None:
        proc = self.processes.get(port)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def stop(self) -> None:
        for port in list(self.processes):
            self.kill(port)
        self.processes.clear()


def cluster_env_urls() -> list[str] | None:
    """Seeds of an external cluster from ``PHX_TEST_REDIS_CLUSTER_URLS`` (comma separated)."""
    value = os.environ.get("PHX_TEST_REDIS_CLUSTER_URLS")
    return [part.strip() for part in value.split(",")] if value else None
