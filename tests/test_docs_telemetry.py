"""The examples of docs/telemetry.md, run as written over real sockets."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from phoenix_channels import Channel, Endpoint, Socket, telemetry

from .pubsub.engines import wait_until
from .support import Server

DOC = Path(__file__).resolve().parents[1] / "docs" / "telemetry.md"


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> None:
        return None


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}


NAMES = ("listen", "totals", "metrics_path", "mounted", "tracing")


def blocks() -> dict[str, str]:
    found = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(found) == len(NAMES), f"docs/telemetry.md: {', '.join(NAMES)}"
    return dict(zip(NAMES, (str(block) for block in found), strict=True))


def run(block: str, **names: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"Endpoint": Endpoint, "UserSocket": UserSocket, **names}
    exec(compile(block, str(DOC), "exec"), namespace)
    return namespace


async def join(endpoint: Endpoint) -> Server:
    server = Server(endpoint)
    await server.__aenter__()
    async with websockets.connect(server.url + "?vsn=2.0.0") as ws:
        await ws.send(json.dumps(["1", "1", "room:1", "phx_join", {}]))
        await ws.recv()
    return server


async def test_listening(capsys: pytest.CaptureFixture[str]) -> None:
    listen = blocks()["listen"]
    head, _, _ = listen.partition("# later")
    run(head)
    try:
        server = await join(Endpoint(sockets={"/socket": UserSocket}, check_origin=False))
        await server.stop()
    finally:
        telemetry.detach("my-app-joins")
    assert re.fullmatch(r"room:1 ok \d+\.\d ms\n", capsys.readouterr().out)
    run(listen)  # attach, then detach
    assert not telemetry.CHANNEL_JOIN.on


async def test_the_running_totals() -> None:
    totals = blocks()["totals"]
    before = run(totals)["open_sockets"]
    ws_totals = telemetry.counts_for("websocket")
    was = (ws_totals.messages_in, ws_totals.bytes_in, ws_totals.messages_out, ws_totals.bytes_out)
    async with Server(Endpoint(sockets={"/socket": UserSocket}, check_origin=False)) as server:
        async with websockets.connect(server.url + "?vsn=2.0.0") as ws:
            join = json.dumps(["1", "1", "room:1", "phx_join", {}])
            await ws.send(join)
            reply = await ws.recv()
            assert run(totals)["open_sockets"] == before + 1
            # One message each way: the join, counted as received, and its reply, counted
            # as the WebSocket frame written (a 2-byte header for a short text frame).
            assert (
                ws_totals.messages_in - was[0],
                ws_totals.bytes_in - was[1],
                ws_totals.messages_out - was[2],
                ws_totals.bytes_out - was[3],
            ) == (1, len(join), 1, len(reply) + 2)
        await wait_until(lambda: run(totals)["open_sockets"] == before, "the socket counted closed")


async def test_the_endpoint_serves_metrics() -> None:
    endpoint = run(blocks()["metrics_path"])["endpoint"]
    server = await join(endpoint)
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{server.port}/metrics")).text
    await server.stop()
    assert 'phoenix_channels_joins_total{result="ok",route="room:*"} 1.0' in text


async def test_the_app_mounts_the_exporter() -> None:
    names = run(blocks()["mounted"])
    server = await join(names["endpoint"])
    names["metrics"].flush()
    async with httpx.AsyncClient(follow_redirects=True) as http:
        text = (await http.get(f"http://127.0.0.1:{server.port}/internal/metrics/")).text
    await server.stop()
    assert 'phoenix_channels_messages_in_total{transport="websocket"} 1.0' in text


async def test_tracing() -> None:
    endpoint = Endpoint(sockets={"/socket": UserSocket}, check_origin=False)
    run(blocks()["tracing"], endpoint=endpoint)
    server = await join(endpoint)
    assert telemetry.handlers(telemetry.CHANNEL_JOIN)
    await server.stop()
    await wait_until(lambda: not telemetry.CHANNEL_JOIN.on, "tracing detached")
