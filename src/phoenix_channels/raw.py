"""Sockets without channels: the Transport API's socket contract for your own protocols.

A :class:`RawSocket` subclass mounted on the endpoint gets every WebSocket
frame of its connections as bytes, with no Phoenix protocol on top, the
counterpart of a module implementing ``Phoenix.Socket.Transport``::

    class EchoSocket(RawSocket):
        async def handle_in(self, data: bytes, binary: bool) -> None:
            self.send(data, binary)

    endpoint = Endpoint(sockets={"/socket": UserSocket, "/echo": EchoSocket})
    # ws://host/echo/websocket

Callbacks run one at a time, in order (``handle_in`` per frame,
``handle_info`` for :meth:`RawSocket.send_info` messages), eagerly when they
do not wait. An exception closes the connection with 1011 after
``terminate`` ran. ``connect``, ``id`` and the class attributes ``timeout``
and ``auth_token`` mean what they mean on :class:`~phoenix_channels.Socket`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from . import _contracts
from ._closed import ClosedFlag
from ._mailbox import IN, INFO, TERMINATE, Mailbox
from .errors import ConfigurationError
from .interfaces import EndpointAPI
from .protocol import RAW, Serializer
from .protocol.close_codes import CloseCode
from .telemetry import (
    NOT_COUNTED,
    SOCKET_CLOSE,
    SOCKET_OPEN,
    socket_closed,
    socket_opened,
)

if TYPE_CHECKING:
    from .transports.base import Transport

__all__ = ["RawSocket"]

log = logging.getLogger("phoenix_channels.raw")

_NEW, _OPEN, _TERMINATING, _DONE = 0, 1, 2, 3


class RawSocket(Mailbox):
    """A connection handler that sees raw frames. Subclass and override ``handle_in``."""

    timeout: ClassVar[float] = 60.0
    auth_token: ClassVar[bool] = False

    __slots__ = (
        "__dict__",
        "_client",
        "_counts",
        "_id",
        "_state",
        "_telemetry_open",
        "assigns",
        "endpoint",
        "params",
        "serializer",
        "transport",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _contracts.check_callbacks(cls, _contracts.RAW_SOCKET_ASYNC, _contracts.SOCKET_SYNC)
        if not isinstance(cls.timeout, int | float) or cls.timeout <= 0:
            raise ConfigurationError(f"{cls.__name__}.timeout must be a positive number of seconds")

    @classmethod
    def negotiate(cls, params: dict[str, Any]) -> Serializer | None:
        """Raw sockets speak no Phoenix protocol: any ``vsn`` (or none) is fine."""
        return RAW

    def __init__(
        self, endpoint: EndpointAPI, params: dict[str, Any], serializer: Serializer
    ) -> None:
        Mailbox.__init__(self)
        self.endpoint = endpoint
        self.params = params
        self.serializer = serializer
        self.assigns: dict[str, Any] = {}
        self.transport: Transport | None = None
        self._id: str | None = None
        self._client: str | None = None  # the peer address, when the registry counts them
        self._counts = NOT_COUNTED
        self._state = _NEW

    # -- callbacks to override ---------------------------------------------------------

    async def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> bool:
        """Accept (True) or refuse (False: HTTP 403) the connection."""
        return True

    def id(self) -> str | None:
        return None

    async def handle_in(self, data: bytes, binary: bool) -> None:
        """One frame from the client (text frames arrive as UTF-8 bytes)."""

    async def handle_info(self, message: Any) -> None:
        """A message from :meth:`send_info`."""

    async def terminate(self, reason: Any) -> None:
        """The connection is ending: ``"shutdown:closed"``, a close reason, or an exception."""

    # -- the API -----------------------------------------------------------------------

    def send(self, data: bytes | str, binary: bool | None = None) -> None:
        """Send one frame: text for ``str`` (or ``binary=False``), binary for ``bytes``."""
        transport = self.transport
        if transport is None:
            return
        if isinstance(data, str):
            payload, is_binary = data.encode(), False if binary is None else binary
        else:
            payload, is_binary = data, True if binary is None else binary
        transport.send(transport.encoder.wrap(payload, is_binary))

    def send_info(self, message: Any) -> None:
        """Queue ``message`` for :meth:`handle_info`."""
        if self._state == _OPEN:
            self._enqueue(INFO, message)

    def close(
        self,
        code: int = CloseCode.NORMAL_CLOSURE,
        reason: str = "",
        channel_reason: Any = "shutdown:closed",
    ) -> None:
        """Close the connection; ``terminate`` gets ``channel_reason``."""
        transport = self.transport
        self.connection_lost(channel_reason)
        if transport is not None:
            transport.close(code, reason)

    # -- the transport's side --------------------------------------------------------------

    def handshake_done(self, sid: str | None, address: str | None) -> None:
        """See :meth:`phoenix_channels.Socket.handshake_done`."""
        self._id = sid
        self._client = address

    def attach(self, transport: Transport) -> None:
        self.transport = transport
        self._state = _OPEN
        sid = self._id  # the bound method only when there is an id to subscribe
        self._counts = self.endpoint.registry.socket_opened(
            sid,
            self._client,
            None if sid is None else self._on_id_message,
            getattr(transport, "name", None),
        )
        if SOCKET_OPEN.on:
            socket_opened(self)

    def _unregister(self) -> None:
        address, self._client = self._client, None
        counts, self._counts = self._counts, NOT_COUNTED
        sid = self._id
        self.endpoint.registry.socket_closed(
            sid, address, None if sid is None else self._on_id_message, counts
        )
        if SOCKET_CLOSE.on:
            socket_closed(self)

    def receive(self, data: bytes, binary: bool) -> None:
        if self._state == _OPEN:
            self._enqueue(IN, (data, binary))

    @property
    def closed(self) -> ClosedFlag:
        """Whether the connection has ended (truthy); see :mod:`phoenix_channels._closed`."""
        return ClosedFlag(self._state >= _TERMINATING, self.connection_lost)

    def connection_lost(self, reason: Any = "shutdown:closed") -> None:
        if self._state != _OPEN:
            return
        self._state = _TERMINATING  # only the terminate message is taken from now on
        self.transport = None
        self._unregister()
        if self._mailbox:
            self._mailbox.clear()
        self._enqueue(TERMINATE, reason)

    def _on_id_message(self, message: Any) -> None:
        if getattr(message, "event", None) == "disconnect":
            self.close(CloseCode.GOING_AWAY, "disconnected", "shutdown:disconnected")

    # -- the mailbox ---------------------------------------------------------------------------

    def _accepting(self) -> bool:
        return self._state < _DONE

    async def _dispatch(self, kind: str, value: Any) -> None:
        if kind == IN:
            await self.handle_in(*value)
        elif kind == INFO:
            await self.handle_info(value)
        else:
            await self._terminate(value)

    async def _crash(self, exc: Exception) -> None:
        log.error("%s crashed; closing its connection", type(self).__name__, exc_info=exc)
        transport = self.transport
        if self._state == _OPEN:
            self._state = _TERMINATING
            self.transport = None
            self._unregister()
            if transport is not None:
                transport.close(CloseCode.INTERNAL_ERROR, "internal error")
            await self._terminate(exc)

    async def _terminate(self, reason: Any) -> None:
        self._state = _DONE
        self._mailbox = None
        try:
            await self.terminate(reason)
        except Exception:
            log.exception("%s.terminate raised", type(self).__name__)
