"""Servers in subprocesses and official-JS-client processes, for the app integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.pubsub.engines import free_port, reachable, wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NODE_CLIENT = ROOT / "tests" / "js" / "app_client.mjs"
WAIT = 15.0


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHX_CLUSTER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


class Server:
    """A server process on ``port``; its output goes to ``log``."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self, path: str = "/socket", scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


@contextlib.asynccontextmanager
async def server(
    args: Sequence[str],
    tmp: Path,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> AsyncIterator[Server]:
    """Run ``args`` (``{port}`` is replaced), wait until the port accepts, stop it after."""
    port = port or free_port()
    log = tmp / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *[a.replace("{port}", str(port)) for a in args],
            cwd=cwd, env=env or child_env(), stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    srv = Server(proc, port, log)
    try:
        try:
            await wait_until(
                lambda: proc.returncode is not None or reachable(port),
                f"the server accepts connections on port {port}",
                timeout=30,
            )
        except AssertionError:
            raise AssertionError(f"server did not start:\n{srv.output}") from None
        if proc.returncode is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{srv.output}")
        yield srv
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


class JsClient:
    """The official ``phoenix`` client in a Node process (tests/js/app_client.mjs)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[dict[str, Any]] = []
        self._unread: list[dict[str, Any]] = []

    async def next(self, *kinds: str, timeout: float = WAIT) -> dict[str, Any]:
        """The first line of one of ``kinds`` not returned yet (every line is kept in ``seen``)."""
        assert self.proc.stdout is not None
        for i, item in enumerate(self._unread):
            if item["kind"] in kinds:
                return self._unread.pop(i)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await self.proc.stdout.readline()
                    if not line:
                        raise AssertionError(f"the JS client exited; it saw {self.seen}")
                    item: dict[str, Any] = json.loads(line)
                    self.seen.append(item)
                    if item["kind"] in kinds:
                        return item
                    self._unread.append(item)
        except TimeoutError:
            raise AssertionError(f"no {kinds} from the JS client; it saw {self.seen}") from None

    async def event(self, event: str, timeout: float = WAIT) -> dict[str, Any]:
        """The first message of ``event`` not returned yet (others stay unread)."""
        skipped: list[dict[str, Any]] = []
        try:
            while True:
                item = await self.next("event", timeout=timeout)
                if item["event"] == event:
                    return item
                skipped.append(item)
        finally:
            self._unread[:0] = skipped

    def events(self, event: str) -> list[dict[str, Any]]:
        return [i for i in self.seen if i["kind"] == "event" and i["event"] == event]

    async def push(self, event: str, payload: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"push {event} {json.dumps(payload)}\n".encode())
        await self.proc.stdin.drain()
        return await self.next("reply")


@contextlib.asynccontextmanager
async def js_client(
    url: str,
    topic: str,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[JsClient]:
    node = shutil.which("node")
    if node is None or not (ROOT / "tests/js/node_modules/phoenix").exists():
        pytest.skip("node and tests/js/node_modules are needed (make bootstrap)")
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_CLIENT), url, topic, json.dumps(params or {}), json.dumps(headers or {}),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield JsClient(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
