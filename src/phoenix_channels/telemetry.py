"""Telemetry events: what happens inside the server, for whoever listens.

Modelled on Erlang's ``:telemetry`` as Phoenix uses it. An event has a name
(a tuple of strings such as ``("phoenix_channels", "channel", "join")``),
*measurements* (a dict of numbers: durations in seconds, sizes, counts) and
*metadata* (a dict of context: the socket, the topic, the outcome). Listen
with one call::

    def on_join(event, measurements, metadata):
        print(metadata["topic"], metadata["result"], measurements["duration"])

    telemetry.attach("my-app-joins", [telemetry.CHANNEL_JOIN], on_join)
    ...
    telemetry.detach("my-app-joins")

Handlers run synchronously, in the event loop, where the event happens: keep
them short. A handler that raises is detached (logged once), as
``:telemetry`` does, so a broken handler cannot break connections.

The cost with nothing attached is one attribute read: every built-in event
is an :class:`Event` object whose ``on`` flag the hot path checks before it
builds any dict (``if CHANNEL_PUSH.on: CHANNEL_PUSH.emit(...)``). Every
event, with its measurements and metadata, is listed in ``docs/telemetry.md``.

This module imports nothing from the package, so any layer may use it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "CHANNEL_HANDLE_IN",
    "CHANNEL_JOIN",
    "CHANNEL_LEAVE",
    "CHANNEL_PUSH",
    "CHANNEL_RECOVER",
    "ENDPOINT_DRAIN",
    "EVENTS",
    "PRESENCE_DIFF",
    "PUBSUB_BROADCAST",
    "PUBSUB_LINK_DOWN",
    "PUBSUB_LINK_UP",
    "PUBSUB_PUBLISH",
    "SOCKET_CLOSE",
    "SOCKET_CONNECT",
    "SOCKET_LIMIT",
    "SOCKET_OPEN",
    "SOCKET_RECEIVE",
    "SOCKET_SEND",
    "TRANSPORTS",
    "Event",
    "EventName",
    "Handler",
    "TransportCounts",
    "attach",
    "counts_for",
    "detach",
    "execute",
    "handlers",
]

log = logging.getLogger("phoenix_channels.telemetry")

EventName = tuple[str, ...]
Handler = Callable[[EventName, Mapping[str, Any], Mapping[str, Any]], None]


class Event:
    """One event name and the handlers attached to it.

    ``on`` is True while at least one handler is attached; call sites test it
    before measuring or building anything.
    """

    __slots__ = ("_handlers", "name", "on")

    def __init__(self, name: EventName) -> None:
        self.name = name
        self.on = False
        self._handlers: tuple[tuple[str, Handler], ...] = ()

    def emit(self, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        """Call every attached handler with this event's name and the given dicts."""
        for handler_id, handler in self._handlers:
            try:
                handler(self.name, measurements, metadata)
            except Exception:
                log.exception(
                    "telemetry handler %r raised on event %s; detaching it",
                    handler_id,
                    ".".join(self.name),
                )
                detach(handler_id)

    def __repr__(self) -> str:
        return f"<Event {'.'.join(self.name)} handlers={len(self._handlers)}>"


_events: dict[EventName, Event] = {}
_attached: dict[str, tuple[tuple[EventName, ...], Handler]] = {}


def _event(*name: str) -> Event:
    event = _events.get(name)
    if event is None:
        event = _events[name] = Event(name)
    return event


def _name(value: Any) -> EventName:
    if isinstance(value, Event):
        return value.name
    if isinstance(value, tuple) and value and all(isinstance(part, str) and part for part in value):
        return value
    raise TypeError(
        f"an event name is a non-empty tuple of non-empty strs such as "
        f"('phoenix_channels', 'channel', 'join') (or an Event), got {value!r}"
    )


def attach(handler_id: str, event_names: Iterable[EventName | Event], handler: Handler) -> None:
    """Call ``handler(event_name, measurements, metadata)`` on each of ``event_names``.

    ``handler_id`` names the attachment (for :func:`detach`); attaching an id
    that is attached already raises ``ValueError``. Names need not be the
    built-in ones: :func:`execute` emits any name.
    """
    if not isinstance(handler_id, str) or not handler_id:
        raise TypeError(f"handler_id must be a non-empty str, got {handler_id!r}")
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {handler!r}")
    if isinstance(event_names, tuple) and event_names and isinstance(event_names[0], str):
        raise TypeError(
            "event_names is a list of event names: write [('phoenix_channels', ...)], "
            "not one bare tuple"
        )
    names = tuple(dict.fromkeys(_name(n) for n in event_names))
    if handler_id in _attached:
        raise ValueError(f"a telemetry handler with id {handler_id!r} is attached already")
    _attached[handler_id] = (names, handler)
    for name in names:
        event = _event(*name)
        event._handlers = (*event._handlers, (handler_id, handler))
        event.on = True


def detach(handler_id: str) -> bool:
    """Remove the handler attached as ``handler_id``; False if there was none."""
    found = _attached.pop(handler_id, None)
    if found is None:
        return False
    for name in found[0]:
        event = _events[name]
        event._handlers = tuple(h for h in event._handlers if h[0] != handler_id)
        event.on = bool(event._handlers)
    return True


def handlers(event_name: EventName | Event) -> list[str]:
    """The ids of the handlers attached to one event, in the order they run."""
    event = _events.get(_name(event_name))
    return [] if event is None else [handler_id for handler_id, _ in event._handlers]


def execute(
    event_name: EventName | Event,
    measurements: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Emit an event (built-in or the app's own) to its handlers; nothing if none."""
    event = _events.get(_name(event_name))
    if event is not None and event.on:
        event.emit(measurements, {} if metadata is None else metadata)


# -- the built-in events (docs/telemetry.md describes each) ------------------------------

SOCKET_CONNECT = _event("phoenix_channels", "socket", "connect")
SOCKET_OPEN = _event("phoenix_channels", "socket", "open")
SOCKET_CLOSE = _event("phoenix_channels", "socket", "close")
SOCKET_RECEIVE = _event("phoenix_channels", "socket", "receive")
SOCKET_SEND = _event("phoenix_channels", "socket", "send")
SOCKET_LIMIT = _event("phoenix_channels", "socket", "limit")
CHANNEL_JOIN = _event("phoenix_channels", "channel", "join")
CHANNEL_LEAVE = _event("phoenix_channels", "channel", "leave")
CHANNEL_HANDLE_IN = _event("phoenix_channels", "channel", "handle_in")
CHANNEL_PUSH = _event("phoenix_channels", "channel", "push")
CHANNEL_RECOVER = _event("phoenix_channels", "channel", "recover")
PUBSUB_BROADCAST = _event("phoenix_channels", "pubsub", "broadcast")
PUBSUB_PUBLISH = _event("phoenix_channels", "pubsub", "publish")
PUBSUB_LINK_DOWN = _event("phoenix_channels", "pubsub", "link_down")
PUBSUB_LINK_UP = _event("phoenix_channels", "pubsub", "link_up")
PRESENCE_DIFF = _event("phoenix_channels", "presence", "diff")
ENDPOINT_DRAIN = _event("phoenix_channels", "endpoint", "drain")

EVENTS: tuple[EventName, ...] = tuple(_events)
"""The names of every built-in event."""

now = time.perf_counter
"""The clock of every ``duration`` measurement (seconds)."""


# -- running totals, kept whether or not anyone listens -----------------------------------


class TransportCounts:
    """Running totals of one transport's sockets in this process.

    Every socket adds to its transport's totals as it goes: one integer
    addition per message, with or without listeners, so that readers
    (:class:`~phoenix_channels.metrics.PrometheusMetrics`, a health check)
    take the figures when they want them instead of hearing an event per
    message. Messages are the frames a :class:`~phoenix_channels.Socket`
    receives and sends itself (replies, pushes); broadcast deliveries are
    counted per broadcast by ``pubsub.broadcast``. ``sockets`` counts the
    open ones, raw sockets included.
    """

    __slots__ = ("bytes_in", "bytes_out", "messages_in", "messages_out", "sockets", "transport")

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.sockets = 0
        self.messages_in = 0
        self.bytes_in = 0
        self.messages_out = 0
        self.bytes_out = 0

    def __repr__(self) -> str:
        return (
            f"<TransportCounts {self.transport} sockets={self.sockets} "
            f"in={self.messages_in}/{self.bytes_in}B out={self.messages_out}/{self.bytes_out}B>"
        )


TRANSPORTS: dict[str, TransportCounts] = {}
"""The totals of every transport that has had a socket in this process, by name."""

NOT_COUNTED = TransportCounts("not counted")
"""Where a socket adds before it is attached and after it has closed (read by no one)."""


def counts_for(transport: str | None) -> TransportCounts:
    """The totals of the transport named ``transport`` (``"unknown"`` for None)."""
    name = transport or "unknown"
    counts = TRANSPORTS.get(name)
    if counts is None:
        counts = TRANSPORTS[name] = TransportCounts(name)
    return counts


# -- helpers for the call sites: they run only when the event is on ------------------------


def size_of(item: Any) -> int:
    """Bytes of a transport item: frame bytes, a long-poll string, an ASGI message."""
    if type(item) is bytes or type(item) is str:
        return len(item)
    if isinstance(item, Mapping):
        data = item.get("bytes") or item.get("text")
        return len(data) if data else 0
    return 0


_route_cache: dict[type, dict[str, str]] = {}


def route_of(socket_cls: type, topic: str) -> str | None:
    """The pattern of ``socket_cls.channels`` that routes ``topic`` (a bounded label)."""
    cache = _route_cache.get(socket_cls)
    if cache is None:
        cache = _route_cache[socket_cls] = {}
    route = cache.get(topic)
    if route is not None:
        return route
    patterns: Iterable[str] = getattr(socket_cls, "channels", {})
    for pattern in patterns:
        if topic == pattern or (pattern.endswith("*") and topic.startswith(pattern[:-1])):
            if len(cache) < 10_000:  # topics are unbounded; the cache is not
                cache[topic] = pattern
            return pattern
    return None


_TRACE_HEADERS = frozenset((b"traceparent", b"tracestate"))


def connect_done(
    endpoint: Any,
    socket_cls: Any,
    path: str,
    headers: Iterable[tuple[bytes, bytes]],
    websocket: bool,
    outcome: Any,
    start: float,
) -> None:
    """Emit ``socket.connect`` for one handshake (``outcome``: Accepted or Refused)."""
    sock = getattr(outcome, "socket", None)
    status = getattr(outcome, "status", None)
    trace = getattr(outcome, "trace_context_headers", None)  # the handshake's own scan
    if trace is None:  # refused before the headers were read
        trace = [
            (key.decode("latin-1"), value.decode("latin-1"))
            for key, value in headers
            if key in _TRACE_HEADERS
        ]
    SOCKET_CONNECT.emit(
        {"duration": now() - start},
        {
            "endpoint": endpoint,
            "socket_cls": socket_cls,
            "socket": sock,
            "result": "ok" if sock is not None else "error",
            "status": status,
            "transport": "websocket" if websocket else "longpoll",
            "path": path,
            "params": sock.params if sock is not None else None,
            "trace_context_headers": trace,
        },
    )


def _channel_meta(channel: Any) -> dict[str, Any]:
    sock = channel.socket
    return {
        "socket": sock,
        "channel": channel,
        "topic": channel.topic,
        "route": route_of(type(sock), channel.topic),
    }


def join_done(channel: Any, msg: Any, result: str, start: float) -> None:
    """Emit ``channel.join`` for a finished join (and, later, ``channel.leave``)."""
    end = now()
    meta = _channel_meta(channel)
    meta["result"] = result
    meta["params"] = msg.payload
    CHANNEL_JOIN.emit({"duration": end - start}, meta)
    if result == "ok" and CHANNEL_LEAVE.on:
        channel._telemetry_joined_at = end  # a slot: no dict, no callback per channel


def recover_done(channel: Any, outcome: Any, start: float) -> None:
    """Emit ``channel.recover`` for a rejoin that asked for missed messages."""
    meta = _channel_meta(channel)
    meta["recovered"] = outcome.recovered
    meta["reason"] = outcome.reason
    CHANNEL_RECOVER.emit({"duration": now() - start, "replayed": outcome.replayed}, meta)


def channel_left(channel: Any) -> None:
    """Emit ``channel.leave`` for a channel ending whose ``channel.join`` (ok) was emitted."""
    joined_at = getattr(channel, "_telemetry_joined_at", None)
    if joined_at is not None:
        channel._telemetry_joined_at = None
        CHANNEL_LEAVE.emit({"duration": now() - joined_at}, _channel_meta(channel))


CRASHED: Any = object()
"""What ``handle_in_done`` gets as the result of a ``handle_in`` that raised."""


def handle_in_done(channel: Any, msg: Any, result: Any, start: float) -> None:
    """Emit ``channel.handle_in`` for one finished ``handle_in`` and its outcome."""
    status = None
    if result is CRASHED:
        outcome = "crash"
    elif result is None:
        outcome = "noreply"
    elif hasattr(result, "status"):  # a reply
        outcome, status = "reply", result.status
    else:  # a stop, maybe with a reply
        outcome = "stop"
        status = result.reply.status if result.reply is not None else None
    meta = _channel_meta(channel)
    meta["event"] = msg.event
    meta["outcome"] = outcome
    meta["status"] = status
    CHANNEL_HANDLE_IN.emit({"duration": now() - start}, meta)


def limit_hit(socket: Any, limit: str, closed: bool, transport: str | None = None) -> None:
    """Emit ``socket.limit``: a client refused or closed by a limit."""
    if transport is None:
        carrier = getattr(socket, "transport", None)
        transport = getattr(carrier, "name", None)
    SOCKET_LIMIT.emit(
        {"count": 1}, {"socket": socket, "limit": limit, "closed": closed, "transport": transport}
    )


def socket_opened(sock: Any) -> None:
    """Emit ``socket.open``; remembers the transport's name for ``socket.close``."""
    transport = getattr(sock.transport, "name", None)
    sock._telemetry_open = (transport, now())  # a slot of Socket and RawSocket: no dict
    SOCKET_OPEN.emit({}, {"socket": sock, "transport": transport})


def socket_closed(sock: Any) -> None:
    """Emit ``socket.close`` for a socket whose ``socket.open`` was emitted."""
    opened = getattr(sock, "_telemetry_open", None)
    if opened is not None:
        sock._telemetry_open = None
        SOCKET_CLOSE.emit({"duration": now() - opened[1]}, {"socket": sock, "transport": opened[0]})


def presence_diff(presence: Any, diff: Any) -> None:
    """Emit ``presence.diff`` for one tracker diff (before it is broadcast)."""
    PRESENCE_DIFF.emit(
        {"joins": len(diff.joins), "leaves": len(diff.leaves)},
        {"presence": presence, "topic": diff.topic},
    )


_ENCODER_TRANSPORT = {"asgi": "websocket"}  # frame encoder name -> transport name


def broadcast_done(
    pubsub: Any,
    message: Any,
    kinds: dict[tuple[Any, Any], int],
    skipped: Any,
    subscribers: int,
    frames: Mapping[Any, Any],
) -> None:
    """Emit ``pubsub.broadcast`` after a broadcast was handed to this node's subscribers.

    ``kinds``: the topic's subscribers by (encoder, intercepts), a copy the caller
    owns; ``subscribers``: how many; ``skipped``: the entry of the ``from_``
    subscriber, which got nothing (or None). One step per kind, none per subscriber.
    """
    if skipped is not None:
        subscribers -= 1
        kinds[skipped[2], skipped[3]] -= 1  # counted with the others, from the same dict
    event = message.event
    per_encoder: dict[Any, int] = {}
    for (encoder, intercepts), count in kinds.items():
        # A callback, or a channel's handle_out, is not a frame written here (the
        # pushes of handle_out are socket.send events).
        if count and encoder is not None and (intercepts is None or event not in intercepts):
            per_encoder[encoder] = per_encoder.get(encoder, 0) + count
    deliveries = size = 0
    by_transport: dict[str, tuple[int, int]] = {}
    for encoder, count in per_encoder.items():
        frame = frames.get(encoder)
        if frame is None:
            continue
        n = size_of(frame) * count
        deliveries += count
        size += n
        name = _ENCODER_TRANSPORT.get(encoder.name) or encoder.name.partition("+")[0]
        before = by_transport.get(name, (0, 0))
        by_transport[name] = (before[0] + count, before[1] + n)
    PUBSUB_BROADCAST.emit(
        {"subscribers": subscribers, "deliveries": deliveries, "bytes": size},
        {
            "pubsub": pubsub,
            "topic": message.topic,
            "event": message.event,
            "by_transport": by_transport,
        },
    )
