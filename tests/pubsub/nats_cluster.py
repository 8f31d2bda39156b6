"""A private NATS cluster for the tests: servers joined by routes, on free loopback ports.

``LocalNatsCluster(workdir, servers=3)`` starts ``nats-server`` processes
with ``-cluster``/``-routes`` and waits until every server has a route to
every other one (its monitoring ``/routez``). Processes are this test's
own, killed by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from .engines import free_port, reachable, wait_until


class LocalNatsCluster:
    """NATS servers of this test, each a ``nats-server`` process on 127.0.0.1."""

    def __init__(self, workdir: Path, servers: int = 3) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not os.path.exists(binary):
            pytest.skip("nats-server is not installed (apt-get install nats-server)")
        self.binary = binary
        self.workdir = workdir
        self.count = servers
        self.ports = [free_port() for _ in range(servers)]
        self.cluster_ports = [free_port() for _ in range(servers)]
        self.monitor_ports = [free_port() for _ in range(servers)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def url(self, *order: int) -> str:
        """The client URL list, servers in the given order (all of them by default)."""
        indexes = order or tuple(range(self.count))
        return ",".join(f"nats://127.0.0.1:{self.ports[i]}" for i in indexes)

    async def start(self) -> None:
        routes = ",".join(f"nats://127.0.0.1:{port}" for port in self.cluster_ports)
        for i, port in enumerate(self.ports):
            args = [
                self.binary, "-a", "127.0.0.1", "-p", str(port),
                "-m", str(self.monitor_ports[i]), "-n", f"phx-test-{i}",
                "--cluster_name", "phx-test",
                "-cluster", f"nats://127.0.0.1:{self.cluster_ports[i]}", "-routes", routes,
            ]  # fmt: skip
            log = open(self.workdir / f"nats-{i}.log", "ab")  # noqa: SIM115 - kept by Popen
            self.processes[port] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
            log.close()
        for port in self.ports:
            await wait_until(lambda p=port: reachable(p), f"nats on {port} accepts connections")
        await wait_until(self._meshed, "every NATS server has a route to every other", 20.0, 0.1)

    def _meshed(self) -> bool:
        for monitor in self.monitor_ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/routez", timeout=2) as r:
                    routes = json.load(r)
            except OSError:
                return False
            peers = {route.get("remote_id") for route in routes.get("routes", [])}
            if len(peers) < self.count - 1:
                return False
        return True

    def kill(self, port: int) -> None:
        proc = self.processes.get(port)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def stop(self) -> None:
        for port in list(self.processes):
            self.kill(port)
        self.processes.clear()
