"""OpenTelemetry spans for connect, join and handle_in, continuing the client's trace,
checked with the SDK's in-memory exporter over real sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from phoenix_channels import Channel, Endpoint, Socket, reply, telemetry
from phoenix_channels.tracing import OpenTelemetryTracing

from .pubsub.engines import wait_until
from .support import Server

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return None

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "echo":
            return reply("ok", payload)
        raise RuntimeError("boom")


class RoomSocket(Socket):
    channels = {"room:*": RoomChannel}


async def test_spans_continue_the_clients_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    endpoint = Endpoint(sockets={"/socket": RoomSocket}, check_origin=False)
    endpoint.add_service(OpenTelemetryTracing(provider))
    headers = {"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}
    async with Server(endpoint) as server:
        async with websockets.connect(server.url + "?vsn=2.0.0", additional_headers=headers) as ws:
            await ws.send(json.dumps(["1", "1", "room:7", "phx_join", {}]))
            await ws.recv()
            await ws.send(json.dumps(["1", "2", "room:7", "echo", {"a": 1}]))
            await ws.recv()
            await ws.send(json.dumps(["1", "3", "room:7", "boom", {}]))
            async with asyncio.timeout(5):
                assert json.loads(await ws.recv())[3] == "phx_error"
        await wait_until(lambda: len(exporter.get_finished_spans()) == 4, "four spans")
    assert not telemetry.SOCKET_CONNECT.on  # detached with the endpoint

    connect, join, echo, boom = exporter.get_finished_spans()
    assert connect.name == "phoenix_channels.connect"
    assert f"{connect.context.trace_id:032x}" == TRACE_ID
    assert connect.parent is not None and f"{connect.parent.span_id:016x}" == CLIENT_SPAN
    assert connect.attributes["phoenix_channels.socket"] == "RoomSocket"
    assert connect.attributes["phoenix_channels.result"] == "ok"
    assert join.name == "phoenix_channels.join room:*"
    assert join.attributes["phoenix_channels.topic"] == "room:7"
    assert echo.name == "phoenix_channels.handle_in room:* echo"
    assert echo.attributes["phoenix_channels.outcome"] == "reply"
    assert echo.attributes["phoenix_channels.reply_status"] == "ok"
    assert boom.attributes["phoenix_channels.outcome"] == "crash"
    assert boom.status.status_code is StatusCode.ERROR
    for span in (join, echo, boom):
        assert span.context.trace_id == connect.context.trace_id
        assert span.parent is not None and span.parent.span_id == connect.context.span_id
        assert span.start_time <= span.end_time


async def test_a_refused_connection_is_an_error_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    endpoint = Endpoint(sockets={"/socket": RoomSocket}, check_origin=False)
    endpoint.add_service(OpenTelemetryTracing(provider))
    async with Server(endpoint) as server:
        try:
            async with websockets.connect(server.url + "?vsn=9"):
                pass
        except websockets.InvalidStatus:
            pass
    [span] = exporter.get_finished_spans()
    assert span.parent is None  # no trace context sent: a new trace
    assert span.attributes["http.response.status_code"] == 403
    assert span.status.status_code is StatusCode.ERROR
