"""Sockets: one client connection, its topics, and the rules for every inbound message.

Subclass :class:`Socket` to say which channels serve which topics and who
may connect. One instance exists per connection; it routes decoded messages
to channels following :mod:`phoenix_channels.protocol.topic_table`, answers
heartbeats, serialises joins (messages that arrive while a join runs wait for
it) and writes the frames of its channels through its transport.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from . import _contracts
from ._closed import ClosedFlag
from ._mailbox import IN, JOIN, LEAVE
from .channel import Channel
from .errors import ConfigurationError, DecodeError, EncodeError
from .interfaces import EndpointAPI
from .protocol import PHX_CLOSE, PHX_ERROR, Broadcast, Message, Ref, Serializer, serializer_for
from .protocol.close_codes import CloseCode
from .protocol.router import Router
from .protocol.topic_table import Action, Entry, EntryState, TopicTable
from .telemetry import (
    NOT_COUNTED,
    SOCKET_CLOSE,
    SOCKET_LIMIT,
    SOCKET_OPEN,
    SOCKET_RECEIVE,
    SOCKET_SEND,
    limit_hit,
    size_of,
    socket_closed,
    socket_opened,
)

if TYPE_CHECKING:
    from .transports.base import FrameEncoder, Transport
    from .transports.longpoll import LongPoll

__all__ = ["ConnectInfo", "Socket"]

log = logging.getLogger("phoenix_channels.socket")

ConnectInfo = dict[str, Any]
Route = tuple[type[Channel], dict[str, Any] | None]
ChannelFactory = Callable[["Socket", type[Channel], str, Ref, "dict[str, Any] | None"], Channel]
"""Builds the channel for a join: ``(socket, channel_cls, topic, join_ref, assigns)``."""

_UNMATCHED = {"reason": "unmatched topic"}
_TOO_MANY = {"reason": "too many channels joined"}
_CRASH = {"reason": "channel_crash"}
_JOIN_CRASHED = {"reason": "join crashed"}
_PENDING_LIMIT = 1000  # inbound messages held while a join runs, before reading pauses
_RATE_LIMITED = {"reason": "rate limit exceeded"}
_TOO_DEEP = {"reason": "payload nested too deeply"}


class Socket:
    """A connection handler: routes, authentication, and per-connection state.

    Class attributes configure it::

        class UserSocket(Socket):
            channels = {"room:*": RoomChannel}        # or (RoomChannel, {"static": "assigns"})
            max_channels = 100                         # joins beyond: "too many channels joined"
            timeout = 60.0                             # seconds without inbound data before closing
            auth_token = False                         # read a token from Sec-WebSocket-Protocol
            max_payload_depth = 32                     # deeper: "payload nested too deeply"
            max_messages_per_second = 1000             # beyond: "rate limit exceeded" (None: off)
            longpoll = False                           # True, or LongPoll(...): serve /longpoll too

    Instances carry ``assigns`` (a dict shared by the connection; each channel
    starts from a copy), ``params`` (the connect query parameters),
    ``endpoint`` and ``transport``.
    """

    channels: ClassVar[dict[str, Any]] = {}
    max_channels: ClassVar[int] = 100
    timeout: ClassVar[float] = 60.0
    auth_token: ClassVar[bool] = False
    longpoll: ClassVar[bool | LongPoll] = False
    max_payload_depth: ClassVar[int] = 32
    max_messages_per_second: ClassVar[int | None] = 1000

    _router: ClassVar[Router[Route]] = Router({})

    __slots__ = (
        "__dict__",
        "_client",
        "_closed",
        "_counts",
        "_encoder",
        "_id",
        "_joining",
        "_pending",
        "_rate_count",
        "_rate_start",
        "_replaced",
        "_table",
        "_telemetry_open",
        "assigns",
        "channel_factory",
        "endpoint",
        "limited",
        "params",
        "serializer",
        "transport",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _contracts.check_callbacks(cls, _contracts.SOCKET_ASYNC, _contracts.SOCKET_SYNC)
        routes: list[tuple[str, Route]] = []
        for pattern, target in dict(cls.channels).items():
            channel, assigns = target if isinstance(target, tuple) else (target, None)
            if not (isinstance(channel, type) and issubclass(channel, Channel)):
                raise ConfigurationError(
                    f"{cls.__name__}.channels[{pattern!r}] must be a Channel subclass, "
                    f"got {channel!r}"
                )
            if assigns is not None and not isinstance(assigns, dict):
                raise ConfigurationError(f"route assigns for {pattern!r} must be a dict")
            routes.append((pattern, (channel, assigns)))
        cls._router = Router(routes)
        if type(cls.max_channels) is not int or cls.max_channels < 1:
            raise ConfigurationError(f"{cls.__name__}.max_channels must be a positive int")
        if not isinstance(cls.timeout, int | float) or cls.timeout <= 0:
            raise ConfigurationError(f"{cls.__name__}.timeout must be a positive number of seconds")
        if type(cls.max_payload_depth) is not int or cls.max_payload_depth < 1:
            raise ConfigurationError(f"{cls.__name__}.max_payload_depth must be a positive int")
        rate = cls.max_messages_per_second
        if rate is not None and (type(rate) is not int or rate < 1):
            raise ConfigurationError(
                f"{cls.__name__}.max_messages_per_second must be a positive int, or None for "
                "no limit"
            )

    def __init__(
        self, endpoint: EndpointAPI, params: dict[str, Any], serializer: Serializer
    ) -> None:
        self.endpoint = endpoint
        self.params = params
        self.serializer = serializer
        self.assigns: dict[str, Any] = {}
        self.transport: Transport | None = None
        self._encoder: FrameEncoder = None  # type: ignore[assignment]  # set by attach()
        self._table: TopicTable[Route] = TopicTable(self._router, self.max_channels)
        self._joining: Channel | None = None
        self._pending: deque[Message] | None = None
        self._replaced: Entry | None = None
        self._id: str | None = None
        self._closed = True
        self._counts = NOT_COUNTED
        self._client: str | None = None  # the peer address, when the registry counts them
        self._rate_count = 0
        self._rate_start = 0.0
        self.limited = 0
        """Inbound messages refused by a limit (rate or depth), for monitoring."""
        self.channel_factory: ChannelFactory | None = None
        """An internal seam: builds each joined channel instead of ``channel_cls(...)``
        (:mod:`phoenix_channels.testing` uses it to watch the channels it joins)."""

    @classmethod
    def negotiate(cls, params: dict[str, Any]) -> Serializer | None:
        """The serializer for this client, from its ``vsn`` (None: refused with 403)."""
        return serializer_for(params.get("vsn"))

    # -- callbacks to override ---------------------------------------------------

    async def connect(self, params: dict[str, Any], connect_info: ConnectInfo) -> bool:
        """Accept (True) or refuse (False: HTTP 403) the connection. Set ``self.assigns`` here."""
        return True

    def id(self) -> str | None:
        """A name for this connection, or None. Broadcasting ``disconnect`` to it closes it."""
        return None

    # -- the transport's side ------------------------------------------------------

    def handshake_done(self, sid: str | None, address: str | None) -> None:
        """Called by the handshake once ``connect`` accepted: this socket's id, and the
        peer address the registry counts it under (None when nothing is counted)."""
        self._id = sid
        self._client = address

    def attach(self, transport: Transport) -> None:
        """Start serving: called by the transport once the connection is accepted."""
        self.transport = transport
        self._encoder = transport.encoder
        self._closed = False
        self._rate_start = time.monotonic()
        sid = self._id  # the bound method only when there is an id to subscribe
        self._counts = self.endpoint.registry.socket_opened(
            sid,
            self._client,
            None if sid is None else self._on_id_message,
            getattr(transport, "name", None),
        )
        if SOCKET_OPEN.on:
            socket_opened(self)

    def receive(self, data: bytes, binary: bool) -> None:
        """One inbound frame from the transport."""
        counts = self._counts
        counts.messages_in += 1
        counts.bytes_in += len(data)
        if SOCKET_RECEIVE.on:
            SOCKET_RECEIVE.emit(
                {"bytes": len(data)},
                {
                    "socket": self,
                    "transport": getattr(self.transport, "name", None),
                    "binary": binary,
                },
            )
        try:
            msg = self.serializer.decode(data, binary)
        except DecodeError as exc:
            log.warning("closing connection: %s", exc)
            self.close(CloseCode.INTERNAL_ERROR, str(exc)[:120])
            return
        # Cheap guards first: the walk runs only for frames with enough brackets
        # to nest that deep, and the clock is read once per max_messages_per_second.
        depth = self.max_payload_depth
        if (
            not binary
            and len(data) > 2 * depth
            and data.count(b"[") + data.count(b"{") > depth + 1
            and _nested_deeper(msg.payload, depth)
        ):
            self._refuse(msg, _TOO_DEEP, "payload nested deeper than %d levels", depth)
            return
        rate = self.max_messages_per_second
        if rate is not None:
            self._rate_count += 1
            if self._rate_count > rate:
                now = time.monotonic()
                if now - self._rate_start < 1.0:
                    self._refuse(msg, _RATE_LIMITED, "over %d messages per second", rate)
                    return
                self._rate_start, self._rate_count = now, 1
        if self._joining is not None:
            pending = self._pending
            if pending is None:
                pending = self._pending = deque()
            pending.append(msg)
            if len(pending) == _PENDING_LIMIT and self.transport is not None:
                self.transport.pause_reading()
            return
        self._handle(msg)

    @property
    def closed(self) -> ClosedFlag:
        """Whether the connection has ended (truthy); see :mod:`phoenix_channels._closed`."""
        return ClosedFlag(self._closed, self.connection_lost)

    def connection_lost(self, reason: Any = "shutdown:closed") -> None:
        """The connection is gone (client closed, network lost). Ends every channel."""
        if self._closed and self.transport is None:
            return
        self._closed = True
        self.transport = None
        address, self._client = self._client, None
        counts, self._counts = self._counts, NOT_COUNTED
        sid = self._id
        self.endpoint.registry.socket_closed(
            sid, address, None if sid is None else self._on_id_message, counts
        )
        if SOCKET_CLOSE.on:
            socket_closed(self)
        self._pending = None
        self._joining = None  # a join in progress has its entry below
        for entry in list(self._table.entries.values()):
            entry.channel._socket_closed(reason)
        self._table.entries.clear()

    def close(
        self,
        code: int = CloseCode.NORMAL_CLOSURE,
        reason: str = "",
        channel_reason: Any = "shutdown:closed",
    ) -> None:
        """Close the connection from the server side; channels terminate with ``channel_reason``."""
        transport = self.transport
        self.connection_lost(channel_reason)
        if transport is not None:
            transport.close(code, reason)

    @property
    def channel_count(self) -> int:
        return len(self._table.entries)

    # -- internal seams (phoenix_channels.testing uses them) ----------------------------

    @classmethod
    def route_for(cls, topic: str) -> Route | None:
        """The ``(channel class, route assigns)`` the ``channels`` routes give ``topic``."""
        return cls._router.match(topic)

    def end_channel(self, channel: Channel, reason: Any = "shutdown:closed") -> None:
        """End ``channel`` as if its connection closed (``terminate`` gets ``reason``);
        nothing is sent to the client."""
        entry = self._table.entries.get(channel.topic)
        if entry is not None and entry.channel is channel:
            self._table.remove(entry)
        channel._socket_closed(reason)

    def serve_topic(self, topic: str, channel_cls: type[Channel] | None) -> None:
        """Serve joins of exactly ``topic`` on this connection with ``channel_cls``, whatever
        the routes say (None: back to the routes). Costs nothing until first used."""
        table = self._table
        current = table.router
        if isinstance(current, _TopicOverrides):
            overrides = current
        else:
            overrides = _TopicOverrides(current)
            table.router = overrides
        if channel_cls is None:
            overrides.topics.pop(topic, None)
        else:
            overrides.topics[topic] = (channel_cls, None)

    # -- inbound messages -------------------------------------------------------------

    def _handle(self, msg: Message) -> None:
        decision = self._table.classify(msg)
        action = decision.action
        encoder = self._encoder
        if action is Action.FORWARD:
            decision.entry.channel._enqueue(IN, msg)  # type: ignore[union-attr]
        elif action is Action.HEARTBEAT:
            self._send(encoder.reply(None, msg.ref, msg.topic, "ok", {}))
        elif action is Action.JOIN:
            self._start_join(msg, decision.route, decision.entry)  # type: ignore[arg-type]
        elif action is Action.LEAVE:
            decision.entry.channel._enqueue(LEAVE, msg)  # type: ignore[union-attr]
        elif action is Action.UNMATCHED:
            if msg.event == "phx_join" and _first_time(self, "unmatched"):
                log.warning("ignoring unmatched topic %r (logged once per connection)", msg.topic)
            self._send(encoder.reply(None, msg.ref, msg.topic, "error", _UNMATCHED))
        elif action is Action.LEAVE_UNJOINED:
            self._send(encoder.reply(msg.join_ref, msg.ref, msg.topic, "ok", {}))
        elif action is Action.TOO_MANY:
            if _first_time(self, "too_many"):
                log.error(
                    "%r refused: %d channels already joined (logged once per connection)",
                    msg.topic,
                    self.max_channels,
                )
            self._send(encoder.reply(msg.join_ref, msg.ref, msg.topic, "error", _TOO_MANY))
        # Action.STALE: a message for an earlier join of the topic; dropped without reply.

    def _start_join(self, msg: Message, route: Route, old: Entry | None) -> None:
        if old is not None:
            if old.state is not EntryState.LEAVING:
                log.debug("duplicate join of %r: closing the earlier join", msg.topic)
            self._table.remove(old)
            old.channel._kill()
            self._replaced = old
        channel_cls, route_assigns = route
        assigns = None
        if self.assigns or route_assigns:
            assigns = dict(self.assigns)
            if route_assigns:
                assigns.update(route_assigns)
        factory = self.channel_factory
        if factory is None:
            channel = channel_cls(self, msg.topic, msg.join_ref, assigns)
        else:
            channel = factory(self, channel_cls, msg.topic, msg.join_ref, assigns)
        self._table.add(msg.topic, msg.join_ref, channel)
        self._joining = channel
        channel._enqueue(JOIN, msg)

    def _join_done(self, channel: Channel, msg: Message, status: str, response: Any) -> bool:
        """The channel's join finished; False if its ok reply could not be encoded."""
        if self._joining is not channel:  # the connection closed meanwhile
            return True
        self._joining = None
        encoder = self._encoder
        try:
            frame = encoder.reply(msg.join_ref, msg.ref, msg.topic, status, response)
            encoded = True
        except EncodeError:
            log.exception("the %s reply to the join of %r cannot be encoded", status, msg.topic)
            frame = encoder.reply(msg.join_ref, msg.ref, msg.topic, "error", _JOIN_CRASHED)
            encoded = False
        entry = self._table.entries.get(msg.topic)
        if entry is not None:
            if status == "ok" and encoded:
                entry.advance("joined")
                self.endpoint.pubsub.subscribe_fastlane(
                    msg.topic, channel, self._deliver, encoder, channel._intercepts
                )
            else:
                self._table.remove(entry)
        self._send(frame)
        old, self._replaced = self._replaced, None
        if old is not None:
            self._send(encoder.push(old.join_ref, old.join_ref, old.topic, PHX_CLOSE, {}))
        self._drain_pending()
        return encoded or status != "ok"

    def _drain_pending(self) -> None:
        pending = self._pending
        while pending and self._joining is None and not self._closed:
            self._handle(pending.popleft())
        if not pending:
            self._pending = None
        if self.transport is not None and pending is not None and len(pending) < _PENDING_LIMIT:
            self.transport.resume_reading()

    def _channel_stopped(self, channel: Channel, graceful: bool) -> None:
        """A channel ended on its own: drop its entry and tell the client how."""
        entry = self._table.entries.get(channel.topic)
        if entry is None or entry.channel is not channel:
            return
        self._table.remove(entry)
        event, payload = (PHX_CLOSE, {}) if graceful else (PHX_ERROR, _CRASH)
        self._send(self._encoder.push(entry.join_ref, entry.join_ref, entry.topic, event, payload))

    def _refuse(self, msg: Message, response: dict[str, str], why: str, limit: int) -> None:
        """Answer a message refused by a limit with an error reply; log once per burst."""
        self.limited += 1
        if SOCKET_LIMIT.on:
            limit_hit(self, "rate" if response is _RATE_LIMITED else "depth", False)
        if self.limited == 1 or self.limited % 1000 == 0:
            log.warning("refused %d message(s) from %r: " + why, self.limited, self, limit)
        if self.transport is not None:
            self._send(self._encoder.reply(msg.join_ref, msg.ref, msg.topic, "error", response))

    # -- outbound ---------------------------------------------------------------------

    def _send(self, item: Any) -> None:
        transport = self.transport
        if transport is not None:
            transport.send(item)
            size = len(item) if type(item) is bytes else size_of(item)
            counts = self._counts
            counts.messages_out += 1
            counts.bytes_out += size
            if SOCKET_SEND.on:
                SOCKET_SEND.emit({"bytes": size}, {"socket": self, "transport": transport.name})

    def _deliver(self, frame: Any) -> None:
        """A broadcast's ready frame (the fast lane; telemetry counts it per broadcast)."""
        transport = self.transport
        if transport is not None:
            transport.send(frame)

    def _on_id_message(self, message: Any) -> None:
        if type(message) is Broadcast and message.event == "disconnect":
            self.close(CloseCode.GOING_AWAY, "disconnected", "shutdown:disconnected")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} id={self._id!r} channels={self.channel_count} {state}>"


class _TopicOverrides(Router[Route]):
    """A socket's routes plus exact topics served by a given channel (``serve_topic``)."""

    __slots__ = ("_inner", "topics")

    def __init__(self, inner: Router[Route]) -> None:
        super().__init__([])
        self._inner = inner
        self.topics: dict[str, Route] = {}

    def match(self, topic: str) -> Route | None:
        route = self.topics.get(topic)
        return route if route is not None else self._inner.match(topic)

    def __len__(self) -> int:
        return len(self._inner)


def _first_time(sock: Socket, what: str) -> bool:
    """Whether ``what`` is logged for the first time on this connection: a client that
    repeats a mistake gets one log line, not one per message."""
    logged: set[str] = sock.__dict__.setdefault("_logged", set())
    if what in logged:
        return False
    logged.add(what)
    return True


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether a decoded JSON value nests lists/objects more than ``limit`` levels."""
    if type(value) is not dict and type(value) is not list:
        return False
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if type(node) is dict else node
        if depth > limit:
            return True
        for child in children:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False
