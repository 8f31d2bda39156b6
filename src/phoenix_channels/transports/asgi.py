"""WebSocket over plain ASGI: the portable path, for any ASGI server and for mounting.

Slower and heavier than the fast path (the server's WebSocket machinery and
a reader task per connection, plus a writer task while a send has to wait),
but it runs wherever
ASGI runs: ``uvicorn app:endpoint``, hypercorn, or inside Starlette/FastAPI.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import MutableMapping
from typing import Any

from .. import _eager
from .._asgi_types import ASGIReceive, ASGISend, Scope
from ..handshake import Refused, SocketClass, TransportHost
from ..protocol import RAW, V1, V2, Serializer
from ..protocol.close_codes import CloseCode
from .base import FrameEncoder, SocketHandler

__all__ = ["ASGIWebSocket", "serve_asgi_websocket"]

from ..telemetry import SOCKET_LIMIT, limit_hit

log = logging.getLogger("phoenix_channels.asgi")


def _wrap(data: bytes, binary: bool) -> dict[str, Any]:
    if binary:
        return {"type": "websocket.send", "bytes": data}
    return {"type": "websocket.send", "text": data.decode()}


_ENCODERS: dict[str, FrameEncoder] = {s.vsn: FrameEncoder("asgi", s, _wrap) for s in (V1, V2, RAW)}


def asgi_encoder(serializer: Serializer) -> FrameEncoder:
    return _ENCODERS[serializer.vsn]


def _size(item: MutableMapping[str, Any]) -> int:
    data = item.get("bytes") or item.get("text")
    return len(data) if data else 0


class ASGIWebSocket:
    """The Transport of one ASGI WebSocket connection.

    ``send`` starts writing at once; a task exists only while the server's
    ``send`` has to wait (back-pressure), and items sent meanwhile queue
    behind it, so their order is kept. The queue is bounded: past
    ``max_backlog`` bytes the client is not reading, and the connection is
    closed with 1013 (the endpoint's ``max_outbound_buffer``).
    """

    name = "websocket"

    def __init__(
        self,
        send: ASGISend,
        encoder: FrameEncoder,
        timeout: float,
        max_backlog: int = 8 * 1024 * 1024,
    ) -> None:
        self.encoder = encoder
        self.timeout = timeout
        self.last_seen = time.monotonic()
        self.socket: SocketHandler | None = None
        self.max_backlog = max_backlog
        self.backlog = 0  # bytes queued behind a send that waits
        self._send = send
        self._queue: deque[MutableMapping[str, Any]] = deque()
        self._writing = False
        self._closing = False
        self._closed = asyncio.Event()  # set once the close message went out, or writing failed

    def send(self, item: MutableMapping[str, Any]) -> None:
        if not self._closing:
            self._write(item)
            if self.backlog > self.max_backlog:
                self._slow_consumer()

    def _slow_consumer(self) -> None:
        log.warning(
            "closing a connection whose client stopped reading (slow consumer: over "
            "%d bytes waiting)",
            self.max_backlog,
        )
        if SOCKET_LIMIT.on:
            limit_hit(self.socket, "slow_consumer", True, self.name)
        self._queue.clear()  # nothing queued will be read: free it now
        self.backlog = 0
        if self.socket is not None:
            self.socket.close(CloseCode.TRY_AGAIN_LATER, "slow consumer")
        else:
            self.close(CloseCode.TRY_AGAIN_LATER, "slow consumer")

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        if not self._closing:
            self._closing = True
            self._write({"type": "websocket.close", "code": code, "reason": reason})

    def _write(self, item: MutableMapping[str, Any]) -> None:
        self._queue.append(item)
        self.backlog += _size(item)
        if not self._writing:
            self._writing = True
            _eager.start(self._flush())

    async def _flush(self) -> None:
        queue = self._queue
        try:
            while queue:
                item = queue.popleft()
                self.backlog -= _size(item)
                await self._send(item)
                if item["type"] == "websocket.close":
                    self._closed.set()
        except Exception:  # the client is gone (the server raises); the reader sees it
            queue.clear()
            self.backlog = 0
            self._closing = True
            self._closed.set()
        finally:
            self._writing = False

    async def wait_closed(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._closed.wait(), timeout)
        except TimeoutError:
            pass

    def pause_reading(self) -> None:
        """ASGI reads one message at a time already; nothing to pause."""

    def resume_reading(self) -> None:
        """See :meth:`pause_reading`."""

    def idle_close(self) -> None:
        if self.socket is not None:
            self.socket.close(CloseCode.GOING_AWAY, "idle timeout")

    def drain(self) -> None:
        if self.socket is not None:
            self.socket.close(CloseCode.SERVICE_RESTART, "server restart", "shutdown:draining")


async def serve_asgi_websocket(
    endpoint: TransportHost,
    socket_cls: SocketClass,
    scope: Scope,
    receive: ASGIReceive,
    send: ASGISend,
) -> None:
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
            await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
        return
    await send({"type": "websocket.accept", "subprotocol": outcome.subprotocol})
    sock = outcome.socket
    transport = ASGIWebSocket(
        send, asgi_encoder(sock.serializer), sock.timeout, endpoint.max_outbound_buffer
    )
    transport.socket = sock
    endpoint.registry.opened(transport)
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
                    sock.close(CloseCode.MESSAGE_TOO_BIG, f"message exceeds {max_size} bytes")
                    continue
                sock.receive(data, text is None)
            elif kind == "websocket.disconnect":
                break
    finally:
        endpoint.registry.closed(transport)
        transport.socket = None
        sock.connection_lost("shutdown:closed")
        if transport._closing:  # our close message is on its way: let it go out
            await transport.wait_closed(5)
        transport._closing = True
