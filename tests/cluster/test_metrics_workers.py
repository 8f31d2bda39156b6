"""Prometheus metrics under ``serve --workers 3``: every worker's values reach the scrape,
summed, and a dead worker's connections leave the gauge."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from contextlib import AsyncExitStack
from typing import Any

import httpx
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.pubsub.engines import free_port, shared_url, unique_prefix, wait_until

from .test_workers import APP, ROOT, Supervisor, _env


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "pid"))
            key = (sample.name, labels)
            found[key] = found.get(key, 0.0) + sample.value
    return found


async def test_three_workers_sum_right() -> None:
    port = free_port()
    env = _env(
        PHX_CLUSTER_ENGINE="redis",
        PHX_CLUSTER_URL=shared_url("redis"),
        PHX_CLUSTER_PREFIX=unique_prefix(),
        PHX_CLUSTER_METRICS="1",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "phoenix_channels", "serve", APP, "--workers", "3",
        "--port", str(port), cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    sup = Supervisor(proc, port)
    url = f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0"
    latest: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    async def scrape(http: httpx.AsyncClient) -> dict[Any, float]:
        nonlocal latest
        latest = values((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
        return latest

    async def until(
        http: httpx.AsyncClient, name: str, labels: dict[str, str], want: float, what: str
    ) -> None:
        key = (f"phoenix_channels_{name}", tuple(sorted(labels.items())))
        for _ in range(300):  # counts per message are moved to Prometheus once a second
            if (await scrape(http)).get(key) == want:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{what}: {key} is {latest.get(key)}, not {want}\n{latest}")

    try:
        await wait_until(
            lambda: sup.count("Application startup complete") >= 3, "3 workers up", timeout=60
        )
        async with AsyncExitStack() as stack, httpx.AsyncClient() as http:
            by_pid: dict[int, list[Any]] = {}
            for n in range(24):
                ws = await stack.enter_async_context(websockets.connect(url, open_timeout=5))
                await ws.send(json.dumps(["1", "1", f"room:{n}", "phx_join", {}]))
                async with asyncio.timeout(5):
                    answer = json.loads(await ws.recv())
                by_pid.setdefault(answer[4]["response"]["pid"], []).append(ws)
            assert len(by_pid) >= 2, "the kernel put all 24 connections on one worker"
            ws_label = {"transport": "websocket"}
            await until(http, "connections", ws_label, 24, "24 open connections")
            await until(http, "joins_total", {"route": "room:*", "result": "ok"}, 24, "joins")
            await until(http, "channels_joined", {"route": "room:*"}, 24, "joined channels")
            await until(http, "messages_in_total", ws_label, 24, "24 joins received")
            connects = {"transport": "websocket", "result": "ok", "status": ""}
            await until(http, "connects_total", connects, 24, "24 accepted")

            victim = min(by_pid)
            os.kill(victim, signal.SIGKILL)
            lost = len(by_pid[victim])
            await wait_until(
                lambda: sup.count(f"(pid {victim}) was killed by signal 9") == 1,
                "the supervisor reports the dead worker",
            )
            await until(http, "connections", ws_label, 24 - lost, "the dead worker's gone")
            await until(http, "channels_joined", {"route": "room:*"}, 24 - lost, "its channels")
            # Counters keep what the dead worker counted.
            await until(http, "joins_total", {"route": "room:*", "result": "ok"}, 24, "joins")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        sup._reader.cancel()
    assert not any(
        "phoenix-channels-metrics-" in line and "Traceback" in line for line in sup.lines
    )
