"""WebSocket over plain ASGI: the portable path, for any ASGI server and for mounting.

Slower and heavier than the fast path (the server's WebSocket machinery and
one reader task plus one writer task per connection), but it runs wherever
ASGI runs: ``uvicorn app:endpoint``, hypercorn, or inside Starlette/FastAPI.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..protocol import V1, V2, Serializer
from .base import FrameEncoder

if TYPE_CHECKING:
    from ..endpoint import ASGIReceive, ASGISend, Endpoint, Scope
    from ..socket import Socket

__all__ = ["ASGIWebSocket", "serve_asgi_websocket"]

log = logging.getLogger("phoenix_channels.asgi")


def _wrap(data: bytes, binary: bool) -> dict[str, Any]:
    if binary:
        return {"type": "websocket.send", "bytes": data}
    return {"type": "websocket.send", "text": data.decode()}


_ENCODERS: dict[str, FrameEncoder] = {s.vsn: FrameEncoder("asgi", s, _wrap) for s in (V1, V2)}


def asgi_encoder(serializer: Serializer) -> FrameEncoder:
    return _ENCODERS[serializer.vsn]


class ASGIWebSocket:
    """The Transport of one ASGI WebSocket connection: a queue drained by a writer task."""

    name = "websocket"

    def __init__(self, send: ASGISend, encoder: FrameEncoder, timeout: float) -> None:
        self.encoder = encoder
        self.timeout = timeout
        self.last_seen = time.monotonic()
        self.socket: Socket | None = None
        self._send = send
        self._queue: deque[dict[str, Any]] = deque()
        self._ready = asyncio.Event()
        self._closing = False
        self.done = asyncio.Event()

    def send(self, item: dict[str, Any]) -> None:
        if not self._closing:
            self._queue.append(item)
            self._ready.set()

    def close(self, code: int = 1000, reason: str = "") -> None:
        if not self._closing:
            self._queue.append({"type": "websocket.close", "code": code, "reason": reason})
            self._closing = True
            self._ready.set()

    def pause_reading(self) -> None:
        """ASGI reads one message at a time already; nothing to pause."""

    def resume_reading(self) -> None:
        """See :meth:`pause_reading`."""

    def idle_close(self) -> None:
        if self.socket is not None:
            self.socket.close(1001, "idle timeout")

    def drain(self) -> None:
        if self.socket is not None:
            self.socket.close(1012, "server restart", "shutdown:draining")

    async def write_loop(self) -> None:
        queue, ready = self._queue, self._ready
        try:
            while True:
                await ready.wait()
                ready.clear()
                while queue:
                    item = queue.popleft()
                    await self._send(item)
                    if item["type"] == "websocket.close":
                        return
        except OSError:  # the client is gone; the reader sees the disconnect
            return
        finally:
            self.done.set()


async def serve_asgi_websocket(
    endpoint: Endpoint,
    socket_cls: type[Socket],
    scope: Scope,
    receive: ASGIReceive,
    send: ASGISend,
) -> None:
    from ..endpoint import Refused

    message = await receive()
    if message["type"] != "websocket.connect":
        return
    client = scope.get("client")
    outcome = await endpoint.handshake(
        socket_cls,
        method="GET",
        path=scope["path"],
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=list(scope["headers"]),
        scheme=scope.get("scheme", "ws"),
        peer=(client[0], client[1]) if client else None,
    )
    if isinstance(outcome, Refused):
        if "websocket.http.response" in scope.get("extensions", {}):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": outcome.status,
                    "headers": [(b"content-length", str(len(outcome.body)).encode())],
                }
            )
            await send({"type": "websocket.http.response.body", "body": outcome.body})
        else:
            await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept", "subprotocol": outcome.subprotocol})
    sock = outcome.socket
    transport = ASGIWebSocket(send, asgi_encoder(sock.serializer), sock.timeout)
    transport.socket = sock
    writer = asyncio.get_running_loop().create_task(transport.write_loop())
    endpoint.connections.add(transport)
    sock.attach(transport)
    max_size = endpoint.max_frame_size
    try:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                transport.last_seen = time.monotonic()
                text = message.get("text")
                data = text.encode() if text is not None else message.get("bytes") or b""
                if len(data) > max_size:
                    sock.close(1009, f"message exceeds {max_size} bytes")
                    continue
                sock.receive(data, text is None)
            elif kind == "websocket.disconnect":
                break
    finally:
        endpoint.connections.discard(transport)
        transport.socket = None
        sock.closed("shutdown:closed")
        if not transport._closing:
            transport._closing = True
            writer.cancel()
        else:
            try:
                await asyncio.wait_for(transport.done.wait(), 5)
            except TimeoutError:
                writer.cancel()
