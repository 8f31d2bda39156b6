"""Both WebSocket paths over real sockets on loopback: handshake, frames, closes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from phoenix_channels import Channel, Endpoint, Socket, reply
from phoenix_channels.transports.rfc6455 import Deflate

from ..support import Server
from ..trust.wire import RawClient, frame


class EchoChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return {"token": self.socket.assigns.get("token")}

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "shout":
            await self.broadcast("shout", payload)
            return None
        return reply("ok", payload)


class EchoSocket(Socket):
    channels = {"room:*": EchoChannel}
    auth_token = True

    async def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> bool:
        self.assigns["token"] = connect_info["auth_token"]
        return params.get("token") != "reject"


class QuickSocket(EchoSocket):
    timeout = 0.3


def make_endpoint(**options: Any) -> Endpoint:
    options.setdefault("check_origin", ["//allowed.example"])
    return Endpoint(sockets={"/socket": EchoSocket, "/quick": QuickSocket}, **options)


JOIN = json.dumps(["1", "1", "room:1", "phx_join", {}])


async def status_of(url: str, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, **kwargs):
            pass
    return info.value.response.status_code


@pytest.fixture(params=[True, False], ids=["fast", "asgi"])
async def server(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    async with Server(make_endpoint(max_frame_size=1000), fast=request.param) as srv:
        yield srv


async def test_join_echo_and_heartbeat(server: Server) -> None:
    async with websockets.connect(server.url + "?vsn=2.0.0") as ws:
        await ws.send(JOIN)
        assert json.loads(await ws.recv()) == [
            "1",
            "1",
            "room:1",
            "phx_reply",
            {"response": {"token": None}, "status": "ok"},
        ]
        await ws.send(json.dumps(["1", "2", "room:1", "echo", {"é": "✓"}]))
        assert json.loads(await ws.recv())[4] == {"response": {"é": "✓"}, "status": "ok"}
        await ws.send(bytes.fromhex("0001010604") + b"13room:1echo" + b"\x00\xff")
        assert await ws.recv() == bytes.fromhex("0101010602") + b"13room:1ok" + b"\x00\xff"
        await ws.send(json.dumps([None, "4", "phoenix", "heartbeat", {}]))
        assert json.loads(await ws.recv()) == [
            None,
            "4",
            "phoenix",
            "phx_reply",
            {"response": {}, "status": "ok"},
        ]


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("?vsn=3.0.0", {}, 403),
        ("?vsn=2.0.0&token=reject", {}, 403),
        ("?vsn=2.0.0", {"Origin": "http://evil.example"}, 403),
    ],
)
async def test_refused_handshakes(
    server: Server, query: str, headers: dict[str, str], status: int
) -> None:
    assert await status_of(server.url + query, additional_headers=headers) == status


async def test_allowed_origin_and_missing_origin(server: Server) -> None:
    for headers in ({"Origin": "https://allowed.example"}, {}):
        async with websockets.connect(server.url + "?vsn=2.0.0", additional_headers=headers) as ws:
            await ws.send(JOIN)
            assert json.loads(await ws.recv())[4]["status"] == "ok"


async def test_auth_token_in_the_subprotocol_header(server: Server) -> None:
    # what the JS client sends for authToken "s3cr3t": btoa without padding
    protocols = ["phoenix", "base64url.bearer.phx.czNjcjN0"]
    async with websockets.connect(server.url + "?vsn=2.0.0", subprotocols=protocols) as ws:
        assert ws.subprotocol == "phoenix"
        await ws.send(JOIN)
        assert json.loads(await ws.recv())[4]["response"] == {"token": "s3cr3t"}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("this is not json", 1011),
        (json.dumps(["1", "1", "room:x", "phx_join"]), 1011),
        (b"\x07\x00", 1011),
        ("x" * 2000, 1009),
    ],
)
async def test_bad_frames_close_with_a_code(server: Server, frame: Any, code: int) -> None:
    async with websockets.connect(server.url + "?vsn=2.0.0", max_size=None) as ws:
        await ws.send(frame)
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == code


async def test_a_bad_client_does_not_disturb_the_others(server: Server) -> None:
    async with (
        websockets.connect(server.url + "?vsn=2.0.0") as good,
        websockets.connect(server.url + "?vsn=2.0.0") as bad,
    ):
        await good.send(JOIN)
        await good.recv()
        await bad.send(b"\xff\xfe garbage")
        with pytest.raises(ConnectionClosed):
            await bad.recv()
        await good.send(json.dumps(["1", "2", "room:1", "shout", {"still": "here"}]))
        assert json.loads(await good.recv()) == [None, None, "room:1", "shout", {"still": "here"}]


async def test_idle_connections_are_closed(server: Server) -> None:
    url = server.url.replace("/socket/", "/quick/") + "?vsn=2.0.0"
    async with websockets.connect(url, ping_interval=None) as ws:
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(3):
                await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001


async def test_unknown_paths_get_404() -> None:
    async with Server(make_endpoint()) as srv:
        assert await status_of(f"ws://127.0.0.1:{srv.port}/nope?vsn=2.0.0") in (403, 404)


async def test_shutdown_drains_with_1012() -> None:
    endpoint = make_endpoint(drain_interval=0.0)
    async with Server(endpoint) as srv, websockets.connect(srv.url + "?vsn=2.0.0") as ws:
        await ws.send(JOIN)
        await ws.recv()
        stopping = asyncio.ensure_future(srv.stop())
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1012
        await stopping


async def test_compression_is_negotiated_and_broadcasts_are_compressed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compressed: list[int] = []
    original = Deflate.compress

    def counting(self: Deflate, data: bytes) -> bytes:
        compressed.append(len(data))
        return original(self, data)

    monkeypatch.setattr(Deflate, "compress", counting)
    endpoint = make_endpoint(compress=True)
    async with Server(endpoint) as srv:
        clients = [
            await websockets.connect(srv.url + "?vsn=2.0.0", compression="deflate")
            for _ in range(2)
        ]
        try:
            for ws in clients:
                assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
                await ws.send(JOIN)
                await ws.recv()
            big = {"text": "phoenix " * 200}
            await clients[0].send(json.dumps(["1", "2", "room:1", "shout", big]))
            for ws in clients:
                assert json.loads(await ws.recv()) == [None, None, "room:1", "shout", big]
            assert len([n for n in compressed if n > 1000]) == 1  # once for both subscribers
            await clients[0].send(json.dumps(["1", "3", "room:1", "echo", big]))
            assert json.loads(await clients[0].recv())[4]["response"] == big
        finally:
            for ws in clients:
                await ws.close()


async def test_a_client_that_stops_reading_is_closed_and_others_still_receive() -> None:
    endpoint = make_endpoint(max_outbound_buffer=65536)
    async with Server(endpoint) as srv:
        slow = await RawClient.connect(srv.port, receive_buffer=4096)
        slow.send(frame(0x1, JOIN.encode()))
        await slow.recv()  # the join reply; after this the client never reads
        async with websockets.connect(srv.url + "?vsn=2.0.0") as good:
            await good.send(JOIN)
            await good.recv()
            assert endpoint.pubsub.subscribers("room:1") == 2
            payload = {"blob": "x" * 10_000}
            for _ in range(1000):
                await endpoint.broadcast("room:1", "big", payload)
                assert json.loads(await good.recv())[4] == payload
                if endpoint.pubsub.subscribers("room:1") == 1:
                    break
            assert endpoint.pubsub.subscribers("room:1") == 1, "the slow client was not dropped"
            await endpoint.broadcast("room:1", "after", {"ok": True})
            assert json.loads(await good.recv())[3] == "after"
        slow.close()


def starlette_app(endpoint_mount: Endpoint | None = None):  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route, WebSocketRoute
    from starlette.websockets import WebSocket

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hello")

    async def app_ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("from starlette: " + await websocket.receive_text())
        await websocket.close()

    routes: list[Any] = [Route("/hello", hello), WebSocketRoute("/app-ws", app_ws)]
    if endpoint_mount is not None:
        routes.append(Mount("/rt", app=endpoint_mount))
    return Starlette(routes=routes)


async def http_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data


async def test_mounted_inside_a_starlette_app() -> None:
    endpoint = make_endpoint()
    async with Server(starlette_app(endpoint), fast=False) as srv:  # type: ignore[arg-type]
        async with websockets.connect(
            f"ws://127.0.0.1:{srv.port}/rt/socket/websocket?vsn=2.0.0"
        ) as ws:
            await ws.send(JOIN)
            assert json.loads(await ws.recv())[4]["status"] == "ok"
        assert (await http_get(srv.port, "/hello")).endswith(b"hello")


async def test_fast_path_hands_other_requests_to_the_wrapped_app() -> None:
    endpoint = make_endpoint(app=starlette_app())
    async with Server(endpoint) as srv:
        assert (await http_get(srv.port, "/hello")).endswith(b"hello")
        assert b"404" in (await http_get(srv.port, "/missing")).split(b"\r\n")[0]
        async with websockets.connect(f"ws://127.0.0.1:{srv.port}/app-ws") as ws:
            await ws.send("hi")
            assert await ws.recv() == "from starlette: hi"
        async with websockets.connect(srv.url + "?vsn=2.0.0") as ws:
            await ws.send(JOIN)
            assert json.loads(await ws.recv())[4]["status"] == "ok"
