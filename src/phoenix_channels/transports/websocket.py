"""The fast path: a WebSocket protocol of our own below ASGI.

:class:`WebSocketProtocol` is an :class:`asyncio.Protocol` that owns a
connection from the HTTP upgrade on. It plugs into uvicorn in two places
(``phoenix-channels serve`` uses both):

* as uvicorn's ``http`` protocol (:func:`front_protocol_for`), it is the
  first to see every connection: a WebSocket upgrade to one of the
  endpoint's sockets is served right there, and anything else is handed,
  with the bytes read so far, to uvicorn's own HTTP protocol. A WebSocket
  client thus never pays for uvicorn's HTTP machinery;
* as uvicorn's ``ws`` protocol (:func:`protocol_for`), it takes over the
  upgrades that uvicorn's HTTP protocol received (on a kept-alive
  connection, or under plain ``uvicorn`` with ``--ws`` pointing here).

Once the socket is accepted:

* frames are parsed by :class:`~.rfc6455.FrameParser` inside
  ``data_received`` and given straight to the socket: no task, no queue per
  connection while it is idle;
* outbound frames are complete WebSocket frames built once: a broadcast's
  frame bytes are shared by every connection with the same encoder;
* idleness is checked by the endpoint's sweeper from ``last_seen``, so there
  is no timer per connection either.

Upgrades for paths that are not sockets of the endpoint are handed to
uvicorn's own WebSocket implementation, so an app mounted beside the
sockets keeps its WebSocket routes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar

from .. import _eager
from ..errors import WebSocketError
from ..handshake import Refused, TransportHost
from ..protocol import V1, V2, Serializer
from ..protocol.close_codes import CloseCode
from ..telemetry import SOCKET_LIMIT, limit_hit
from .base import FrameEncoder, SocketHandler
from .rfc6455 import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    Deflate,
    FrameError,
    FrameParser,
    close_payload,
    encode_frame,
    handshake_response,
    http_response,
    parse_request,
)

__all__ = ["WebSocketProtocol", "frame_encoder", "front_protocol_for", "protocol_for"]

log = logging.getLogger("phoenix_channels.websocket")

_HEAD_LIMIT = 16_384
_HEAD_TIMEOUT = 10.0  # seconds for a new connection to send its request head
_CLOSE_WAIT = 2.0  # seconds to wait for the client's close frame after ours
_encoders: dict[tuple[str, int], FrameEncoder] = {}


def _plain(data: bytes, binary: bool) -> bytes:
    return encode_frame(OP_BINARY if binary else OP_TEXT, data)


def frame_encoder(serializer: Serializer, deflate: Deflate | None = None) -> FrameEncoder:
    """The shared encoder producing complete WebSocket frames for ``serializer``."""
    key = (serializer.vsn, deflate.wbits if deflate else 0)
    encoder = _encoders.get(key)
    if encoder is None:
        if deflate is None:
            wrap = _plain
        else:

            def wrap(data: bytes, binary: bool, deflate: Deflate = deflate) -> bytes:
                op = OP_BINARY if binary else OP_TEXT
                if len(data) < deflate.min_size:
                    return encode_frame(op, data)
                return encode_frame(op, deflate.compress(data), rsv1=True)

        name = "websocket" if deflate is None else f"websocket+deflate{deflate.wbits}"
        encoder = _encoders[key] = FrameEncoder(name, serializer, wrap)
    return encoder


for _s in (V1, V2):
    frame_encoder(_s)


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection on the fast path. Build classes with :func:`protocol_for`."""

    endpoint: ClassVar[TransportHost]
    front: ClassVar[bool] = False  # True: the server's first protocol for every connection
    name = "websocket"

    __slots__ = (
        "_close_timer",
        "_closing",
        "_head",
        "_parser",
        "_paused",
        "_server_state",
        "_socket",
        "_transport",
        "_uvicorn",
        "encoder",
        "last_seen",
        "timeout",
    )

    def __init__(
        self,
        config: Any = None,
        server_state: Any = None,
        app_state: Any = None,
        _loop: Any = None,  # uvicorn passes it to its http protocol class
    ) -> None:
        self._uvicorn = (config, server_state, app_state)
        self._server_state = server_state
        self._transport: asyncio.Transport | None = None
        self._head: bytes = b""
        self._parser: FrameParser | None = None
        self._socket: SocketHandler | None = None
        self._closing = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._paused = False
        self.encoder: FrameEncoder = None  # type: ignore[assignment]
        self.last_seen = time.monotonic()
        self.timeout = 60.0

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if self._server_state is not None:
            self._server_state.connections.add(self)
        # Until the handshake is done, the endpoint's sweeper closes the
        # connection if no complete request head arrives in time.
        self.timeout = _HEAD_TIMEOUT
        self.endpoint.registry.opened(self)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            self._receive_head(data)
            return
        self.last_seen = time.monotonic()
        error: FrameError | None = None
        try:
            frames = parser.feed(data)
        except FrameError as exc:  # the frames before the violation are answered first
            frames, error = exc.frames, exc
        sock = self._socket
        for opcode, payload in frames:
            if opcode == OP_CLOSE:
                self._client_closed(payload)
                return
            if self._closing:  # after our close frame, only the client's close matters
                continue
            if opcode == OP_TEXT:
                sock.receive(payload, False)  # type: ignore[union-attr]
            elif opcode == OP_BINARY:
                sock.receive(payload, True)  # type: ignore[union-attr]
            elif opcode == OP_PING:
                self.send(encode_frame(0xA, payload))
        if error is not None:
            log.warning("closing connection: %s", error)
            self._fail(error.code, error.reason)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._server_state is not None:
            self._server_state.connections.discard(self)
        self._closing = True
        self._transport = None
        if self._close_timer is not None:
            self._close_timer.cancel()
        self.endpoint.registry.closed(self)
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.connection_lost("shutdown:closed")

    def pause_writing(self) -> None:
        # The kernel buffer is full and our own buffer passed the endpoint's
        # max_outbound_buffer: the client is not reading. Rather than buffer
        # without end, close it (the close frame is queued; the connection is
        # aborted if the client still does not read it).
        log.warning(
            "closing a connection whose client stopped reading (slow consumer: over "
            "%d bytes waiting)",
            self.endpoint.max_outbound_buffer,
        )
        if SOCKET_LIMIT.on:
            limit_hit(self._socket, "slow_consumer", True, self.name)
        self.close(CloseCode.TRY_AGAIN_LATER, "slow consumer")

    # -- the Transport API -----------------------------------------------------------------

    def send(self, item: bytes) -> None:
        if not self._closing:
            self._transport.write(item)  # type: ignore[union-attr]

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Send a close frame, then end the connection when the client answers (or soon)."""
        if self._closing or self._transport is None:
            return
        transport = self._transport
        transport.write(encode_frame(OP_CLOSE, close_payload(code, reason)))
        self._closing = True
        sock, self._socket = self._socket, None
        self.endpoint.registry.closed(self)
        if sock is not None:
            sock.connection_lost("shutdown:closed")
        self._close_timer = asyncio.get_running_loop().call_later(_CLOSE_WAIT, transport.abort)

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): the close frame, then our side of TCP.

        The stream after a violation cannot be parsed, so the client's close
        frame is not waited for; the client sees ours followed by the end of
        the stream, and closes too (the abort timer bounds it if it does not).
        """
        transport = self._transport
        self.close(code, reason)
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    # -- endpoint hooks -----------------------------------------------------------------------

    def idle_close(self) -> None:
        sock = self._socket
        if sock is not None:
            sock.close(CloseCode.GOING_AWAY, "idle timeout")
        elif self._parser is None and self._transport is not None:  # no request head in time
            self.endpoint.registry.closed(self)
            self._transport.close()

    def drain(self) -> None:
        sock = self._socket
        if sock is not None:
            sock.close(CloseCode.SERVICE_RESTART, "server restart", "shutdown:draining")
        elif self._parser is None and self._transport is not None:  # still in the handshake
            self._transport.close()

    def shutdown(self) -> None:
        """Uvicorn calls this on every connection when it stops: drain in batches."""
        if self._socket is None and self._parser is None and self._transport is not None:
            self._transport.close()  # still in the handshake
            return
        self.endpoint.begin_drain()

    # -- handshake ------------------------------------------------------------------------------

    def _receive_head(self, data: bytes) -> None:
        head = self._head + data if self._head else data
        end = head.find(b"\r\n\r\n")
        if end == -1:
            if len(head) > _HEAD_LIMIT:
                self._refuse(400, b"request head too large")
            self._head = head
            return
        self._head = b""
        if self.front and not self._is_our_upgrade(head, end):
            self._hand_over_http(head)
            return
        if _eager.start(self._handshake(head[: end + 4])) is not None:
            # connect() is waiting for something: hold further input until it is done
            self._paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]

    def _is_our_upgrade(self, head: bytes, end: int) -> bool:
        line_end = head.find(b"\r\n")
        parts = head[:line_end].split(b" ")
        if len(parts) != 3:
            return False
        path = parts[1].partition(b"?")[0].decode("latin-1")
        if self.endpoint.websocket_socket(path) is None:
            return False
        return b"websocket" in head[line_end:end].lower()

    def _hand_over_http(self, data: bytes) -> None:
        """Not a WebSocket for us: uvicorn's HTTP protocol serves it from the first byte."""
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        self._give_to(HttpToolsProtocol, data)

    async def _handshake(self, head: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        try:
            method, target, headers = parse_request(head)
        except WebSocketError:
            self._refuse(400, b"malformed request")
            return
        path, _, query = target.partition("?")
        socket_cls = self.endpoint.websocket_socket(path)
        if socket_cls is None:
            # Later, not now: uvicorn sets us as the transport's protocol when
            # this data_received returns, which would undo the hand-over.
            asyncio.get_running_loop().call_soon(self._hand_over, head)
            return
        peer = transport.get_extra_info("peername")
        scheme = "wss" if transport.get_extra_info("sslcontext") else "ws"
        try:
            outcome = await self.endpoint.handshake(
                socket_cls,
                method=method,
                path=path,
                query=query,
                headers=headers,
                scheme=scheme,
                peer=(peer[0], peer[1]) if peer else None,
            )
        except Exception:
            log.exception("handshake failed")
            self._refuse(500)
            return
        if self._transport is None:  # the client left during connect()
            return
        if isinstance(outcome, Refused):
            self._refuse(outcome.status, outcome.body)
            return
        key = next(v for k, v in headers if k == b"sec-websocket-key")
        deflate = outcome.deflate
        transport.write(
            handshake_response(key, outcome.subprotocol, deflate.response if deflate else None)
        )
        sock = self._socket = outcome.socket
        self.encoder = frame_encoder(sock.serializer, deflate)
        self.timeout = sock.timeout
        self._parser = FrameParser(self.endpoint.max_frame_size, deflate)
        self.last_seen = time.monotonic()
        transport.set_write_buffer_limits(high=self.endpoint.max_outbound_buffer)
        sock.attach(self)
        if self._paused:
            self._paused = False
            transport.resume_reading()

    def _refuse(self, status: int, body: bytes = b"") -> None:
        self.endpoint.registry.closed(self)
        if self._transport is not None:
            self._transport.write(http_response(status, body))
            self._transport.close()
            self._closing = True

    def _hand_over(self, head: bytes) -> None:
        """Not one of our sockets: let uvicorn's own WebSocket protocol serve the app."""
        if self._uvicorn[0] is None or self._transport is None:
            self._refuse(404, b'{"errors":{"detail":"Not Found"}}')
            return
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )

        self._give_to(WebSocketsSansIOProtocol, head)

    def _give_to(self, protocol_cls: Any, data: bytes) -> None:
        """Hand the connection, and the bytes read so far, to one of uvicorn's protocols.

        The new protocol is installed before it sees the bytes, so that a
        protocol switch it makes itself (an HTTP upgrade) is the one that stays.
        """
        config, server_state, app_state = self._uvicorn
        transport = self._transport
        assert transport is not None
        if server_state is not None:
            server_state.connections.discard(self)
        self.endpoint.registry.closed(self)
        protocol = protocol_cls(config=config, server_state=server_state, app_state=app_state)
        protocol.connection_made(transport)
        transport.set_protocol(protocol)
        self._transport = None
        if self._paused:
            transport.resume_reading()
        protocol.data_received(data)

    def _client_closed(self, payload: bytes) -> None:
        code = (payload[0] << 8) | payload[1] if len(payload) >= 2 else CloseCode.NORMAL_CLOSURE
        transport = self._transport
        if transport is None:
            return
        if not self._closing:
            transport.write(encode_frame(OP_CLOSE, close_payload(code)))
            self._closing = True
        sock, self._socket = self._socket, None
        self.endpoint.registry.closed(self)
        if sock is not None:
            sock.connection_lost("shutdown:closed")
        transport.close()


def protocol_for(endpoint: TransportHost) -> type[WebSocketProtocol]:
    """A :class:`WebSocketProtocol` class bound to ``endpoint``, for uvicorn's ``ws`` setting."""
    return type(
        "EndpointWebSocketProtocol", (WebSocketProtocol,), {"endpoint": endpoint, "__slots__": ()}
    )


def front_protocol_for(endpoint: TransportHost) -> type[WebSocketProtocol]:
    """The same, as uvicorn's ``http`` setting: it sees every connection first."""
    return type(
        "EndpointFrontProtocol",
        (WebSocketProtocol,),
        {"endpoint": endpoint, "front": True, "__slots__": ()},
    )
