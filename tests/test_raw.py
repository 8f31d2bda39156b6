"""RawSocket: a socket without channels, on both WebSocket paths."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from phoenix_channels import Endpoint, RawSocket

from .support import Server

ENDED: list[Any] = []


class EchoSocket(RawSocket):
    async def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> bool:
        return params.get("deny") is None

    async def handle_in(self, data: bytes, binary: bool) -> None:
        if data == b"crash":
            raise RuntimeError("asked to crash")
        if data == b"info":
            self.send_info({"later": True})
            return
        self.send(data, binary)

    async def handle_info(self, message: Any) -> None:
        self.send(f"info: {message}")

    async def terminate(self, reason: Any) -> None:
        ENDED.append(reason if isinstance(reason, str) else type(reason).__name__)


@pytest.fixture(params=[True, False], ids=["fast", "asgi"])
async def server(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    ENDED.clear()
    endpoint = Endpoint(sockets={"/echo": EchoSocket}, check_origin=False)
    async with Server(endpoint, fast=request.param) as srv:
        yield srv


async def test_frames_echo_back_with_their_opcode(server: Server) -> None:
    url = f"ws://127.0.0.1:{server.port}/echo/websocket"
    async with websockets.connect(url) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\x01")
        assert await ws.recv() == b"\x00\x01"
        await ws.send("info")
        assert await ws.recv() == "info: {'later': True}"
    for _ in range(50):
        if ENDED:
            break
        await asyncio.sleep(0.01)
    assert ENDED == ["shutdown:closed"]


async def test_a_crash_closes_with_1011_after_terminate(server: Server) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/echo/websocket") as ws:
        await ws.send("crash")
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    assert ENDED == ["RuntimeError"]


async def test_connect_can_refuse(server: Server) -> None:
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/echo/websocket?deny=1"):
            pass
    assert info.value.response.status_code == 403
