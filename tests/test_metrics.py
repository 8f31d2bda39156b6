"""Prometheus metrics: a scripted session over real sockets, then a scrape of /metrics
with the exact counts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from phoenix_channels import Channel, Endpoint, JoinError, Socket, reply, telemetry

from .support import Server
from .trust.wire import RawClient, frame


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        if payload.get("refuse"):
            raise JoinError({"reason": "refused"})
        return None

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "echo":
            return reply("ok", payload)
        if event == "push_me":
            await self.push("pushed", {"n": 1})
            return None
        raise RuntimeError("boom")


class LobbyChannel(RoomChannel):
    pass


class RoomSocket(Socket):
    channels = {"room:*": RoomChannel, "lobby": LobbyChannel}
    max_messages_per_second = 20

    async def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> bool:
        return params.get("token") != "reject"


def wire(text: str) -> int:
    """Bytes of a server-to-client text frame carrying ``text``."""
    n = len(text.encode())
    return n + (2 if n < 126 else 4 if n < 65536 else 10)


def scrape_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


class Session:
    """A client that keeps what it sent and received, to compute expected counts."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.sent: list[str] = []
        self.received: list[str] = []

    async def send(self, *frame: Any) -> None:
        text = json.dumps(list(frame))
        self.sent.append(text)
        await self.ws.send(text)

    async def recv(self) -> list[Any]:
        async with asyncio.timeout(5):
            text = await self.ws.recv()
        self.received.append(text)
        return list(json.loads(text))


async def slow_client(port: int) -> tuple[asyncio.StreamWriter, str, str]:
    """Joins room:slow, reads the reply, then never reads again."""
    client = await RawClient.connect(port, receive_buffer=4096)
    join = json.dumps(["1", "1", "room:slow", "phx_join", {}])
    client.send(frame(0x1, join.encode()))
    opcode, payload = await client.recv()
    answer = payload.decode()
    assert opcode == 0x1 and json.loads(answer)[4]["status"] == "ok"
    return client.writer, join, answer


async def test_a_scripted_session_shows_exact_counts() -> None:
    endpoint = Endpoint(
        sockets={"/socket": RoomSocket},
        check_origin=False,
        metrics_path="/metrics",
        max_outbound_buffer=65536,
    )
    metrics = endpoint.metrics
    async with Server(endpoint) as server:
        base = f"http://127.0.0.1:{server.port}"
        with pytest.raises(InvalidStatus):
            async with websockets.connect(server.url + "?vsn=2.0.0&token=reject"):
                pass
        async with websockets.connect(server.url + "?vsn=2.0.0") as ws_a:
            a = Session(ws_a)
            await a.send("1", "1", "room:1", "phx_join", {})
            await a.send("2", "2", "room:2", "phx_join", {"refuse": True})
            await a.send("3", "3", "lobby", "phx_join", {})
            await a.send("1", "4", "room:1", "echo", {"x": 1})
            await a.send("1", "5", "room:1", "echo", {"x": 2})
            await a.send("1", "6", "room:1", "push_me", {})
            await a.send("3", "7", "lobby", "crash", {})
            for _ in range(7):  # 5 replies, the push, the lobby's phx_error
                await a.recv()

            async with websockets.connect(server.url + "?vsn=2.0.0") as ws_r:
                r = Session(ws_r)
                for n in range(30):
                    await r.send(None, f"h{n}", "phoenix", "heartbeat", {})
                refused = sum([(await r.recv())[4]["status"] == "error" for _ in range(30)])
            assert refused > 0

            writer, slow_join, slow_reply = await slow_client(server.port)
            blob = "x" * 16384
            broadcasts = 0
            for _ in range(2000):  # 32 MiB at most; the 64 KiB buffer overflows long before
                await endpoint.broadcast("room:slow", "blob", {"b": blob})
                broadcasts += 1
                metrics.flush()
                closed = metrics.registry.get_sample_value(
                    "phoenix_channels_limited_total",
                    {"limit": "slow_consumer", "action": "closed"},
                )
                if closed:
                    break
                await asyncio.sleep(0)
            writer.close()

            async with httpx.AsyncClient() as http:
                # The rate-limited client's close is seen by the server soon after its own.
                for _ in range(200):
                    scraped = scrape_values((await http.get(base + "/metrics")).text)
                    key = ("phoenix_channels_connections", (("transport", "websocket"),))
                    if scraped.get(key) == 1.0:
                        break
                    await asyncio.sleep(0.02)
                response = await http.get(base + "/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            got = scrape_values(response.text)

    def value(name: str, **labels: str) -> float:
        return got.get((f"phoenix_channels_{name}", tuple(sorted(labels.items()))), 0.0)

    ws = {"transport": "websocket"}
    assert value("connections", **ws) == 1  # a's; the rate-limited and the slow one left
    assert value("connects_total", result="ok", status="", **ws) == 3
    assert value("connects_total", result="error", status="403", **ws) == 1
    assert value("joins_total", route="room:*", result="ok") == 2  # room:1, room:slow
    assert value("joins_total", route="room:*", result="error") == 1
    assert value("joins_total", route="lobby", result="ok") == 1
    assert value("channels_joined", route="room:*") == 1  # room:1 (room:slow closed)
    assert value("channels_joined", route="lobby") == 0  # crashed
    assert value("handle_in_total", route="room:*", outcome="reply") == 2
    assert value("handle_in_total", route="room:*", outcome="noreply") == 1
    assert value("handle_in_total", route="lobby", outcome="crash") == 1
    assert value("handle_in_duration_seconds_count", route="room:*") == 3
    assert value("handle_in_duration_seconds_count", route="lobby") == 1
    assert value("handle_in_duration_seconds_bucket", route="room:*", le="+Inf") == 3
    assert value("handle_in_duration_seconds_bucket", route="room:*", le="10.0") == 3
    assert value("handle_in_duration_seconds_sum", route="room:*") > 0
    assert value("limited_total", limit="rate", action="refused") == refused
    assert value("limited_total", limit="slow_consumer", action="closed") == 1

    inbound = [*a.sent, *r.sent, slow_join]
    assert value("messages_in_total", **ws) == len(inbound) == 38
    assert value("bytes_in_total", **ws) == sum(len(t.encode()) for t in inbound)
    frame = json.dumps([None, None, "room:slow", "blob", {"b": blob}], separators=(",", ":"))
    outbound = [*a.received, *r.received, slow_reply]
    assert value("messages_out_total", **ws) == len(outbound) + broadcasts
    assert value("bytes_out_total", **ws) == sum(map(wire, outbound)) + broadcasts * wire(frame)
    assert value("broadcasts_total") == broadcasts
    assert value("deliveries_total") == broadcasts


async def test_metrics_are_off_by_default_and_detached_after_stop() -> None:
    endpoint = Endpoint(sockets={"/socket": RoomSocket}, check_origin=False)
    assert endpoint.metrics is None
    async with Server(endpoint) as server, httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{server.port}/metrics")).status_code == 404
    with_metrics = Endpoint(sockets={"/socket": RoomSocket}, metrics_path="/metrics")
    async with Server(with_metrics):
        assert telemetry.CHANNEL_JOIN.on
    assert not telemetry.CHANNEL_JOIN.on


async def test_the_app_can_mount_the_exporter() -> None:
    from prometheus_client import make_asgi_app
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from phoenix_channels.metrics import PrometheusMetrics

    metrics = PrometheusMetrics()
    app = Starlette(routes=[Mount("/internal/metrics", make_asgi_app(metrics.scrape_registry()))])
    endpoint = Endpoint(sockets={"/socket": RoomSocket}, check_origin=False, app=app)
    endpoint.add_service(metrics)
    async with Server(endpoint) as server:
        async with websockets.connect(server.url + "?vsn=2.0.0") as ws:
            await ws.send(json.dumps(["1", "1", "room:1", "phx_join", {}]))
            await ws.recv()
        metrics.flush()
        async with httpx.AsyncClient(follow_redirects=True) as http:
            text = (await http.get(f"http://127.0.0.1:{server.port}/internal/metrics/")).text
    got = scrape_values(text)
    assert got[("phoenix_channels_joins_total", (("result", "ok"), ("route", "room:*")))] == 1
