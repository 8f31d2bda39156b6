"""The Transport API: what carries a socket's frames, and how frames are built for it.

A transport (WebSocket, long polling, or one of your own) owns the wire. It
gets a :class:`~phoenix_channels.Socket` for each client from
:meth:`Endpoint.handshake` (an ``Accepted`` outcome), calls
``socket.attach(transport)``, hands it every inbound frame with
``socket.receive(data, binary)``, and calls ``socket.connection_lost(reason)``
when the client is gone. The socket answers through the transport's methods:

* ``send(item)``: write one outbound item (built by ``encoder``);
* ``close(code, reason)``: end the connection;
* ``pause_reading()`` / ``resume_reading()``: inbound flow control;
* ``encoder``: a shared :class:`FrameEncoder`, the serializer plus this
  transport's framing. Broadcasts are encoded once per encoder, so every
  connection with the same encoder gets the same ready item.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..protocol import Broadcast, Ref, Serializer

__all__ = ["FrameEncoder", "SocketHandler", "Transport"]


class FrameEncoder:
    """A serializer plus a framing: values in, ready transport items out.

    ``wrap(data, is_binary)`` turns serializer output into what the
    transport's ``send`` takes (a WebSocket frame, an ASGI message, a string).
    Instances are shared: create one per (framing, serializer) and reuse it.
    """

    __slots__ = ("name", "serializer", "wrap")

    def __init__(
        self, name: str, serializer: Serializer, wrap: Callable[[bytes, bool], Any]
    ) -> None:
        self.name = name
        self.serializer = serializer
        self.wrap = wrap

    def push(self, join_ref: Ref, ref: Ref, topic: str, event: str, payload: Any) -> Any:
        return self.wrap(*self.serializer.encode_push(join_ref, ref, topic, event, payload))

    def reply(self, join_ref: Ref, ref: Ref, topic: str, status: str, response: Any) -> Any:
        return self.wrap(*self.serializer.encode_reply(join_ref, ref, topic, status, response))

    def broadcast(self, broadcast: Broadcast) -> Any:
        return self.wrap(*self.serializer.encode_broadcast(broadcast))

    def __repr__(self) -> str:
        return f"<FrameEncoder {self.name} {self.serializer.vsn}>"


class Transport(Protocol):
    """What a :class:`~phoenix_channels.Socket` needs from the thing that carries it."""

    name: str
    encoder: FrameEncoder

    def send(self, item: Any) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class SocketHandler(Protocol):
    """The side of a socket (``Socket`` or ``RawSocket``) that transports call."""

    @property
    def serializer(self) -> Serializer: ...

    @property
    def timeout(self) -> float: ...

    def attach(self, transport: Transport) -> None: ...

    def receive(self, data: bytes, binary: bool) -> None: ...

    def connection_lost(self, reason: Any = ...) -> None: ...

    def close(self, code: int = ..., reason: str = ..., channel_reason: Any = ...) -> None: ...
