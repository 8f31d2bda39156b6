"""Channels: the user's code for one joined topic, and the server that runs it.

Each joined topic on each connection has its own :class:`Channel` instance,
the counterpart of a Phoenix channel process. Its messages (client pushes,
intercepted broadcasts, ``send`` messages, stop requests) wait in a mailbox
and run one at a time, in order, in a task that exists only while there is
work: an idle channel holds no task and no queue.

An exception in a callback ends that channel alone: ``terminate`` runs, the
client gets ``phx_error`` and rejoins. A stop with a graceful reason
(``"normal"``, ``"shutdown"`` or ``"shutdown:<anything>"``) sends
``phx_close`` first and then runs ``terminate``; any other reason counts as a
crash.

Callbacks return values instead of tuples::

    return reply("ok", {"n": 1})        # answer the client's push
    return None                         # no answer
    return stop("normal", reply("ok"))  # answer, then stop (phx_close)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from . import _contracts, telemetry, typed
from ._awaitable import DONE, Done, must_await
from ._mailbox import CLOSE, IN, INFO, JOIN, LEAVE, OUT, STOP, Mailbox
from .errors import JoinError, NotJoinedError, UsageError
from .history import History, Outcome, Position
from .history.recovery import NOT_ASKED, recover, take_request
from .interfaces import EndpointAPI
from .protocol import Broadcast, Message, Ref
from .protocol.checks import check_payload as check_payload  # its old home
from .telemetry import CHANNEL_HANDLE_IN, CHANNEL_JOIN, CHANNEL_LEAVE, CHANNEL_PUSH

if TYPE_CHECKING:
    from .transports.base import FrameEncoder, Transport


class Socket(Protocol):
    """The connection a channel runs on, as the channel sees it (a
    :class:`phoenix_channels.Socket`; this module does not import it, the socket imports us)."""

    endpoint: EndpointAPI
    assigns: dict[str, Any]
    params: dict[str, Any]
    transport: Transport | None
    _encoder: FrameEncoder

    def id(self) -> str | None: ...

    def close(self, code: int = ..., reason: str = ..., channel_reason: Any = ...) -> None: ...

    def _send(self, item: Any) -> None: ...

    def _join_done(self, channel: Channel, msg: Message, status: str, response: Any) -> bool: ...

    def _channel_stopped(self, channel: Channel, graceful: bool) -> None: ...


__all__ = [
    "Channel",
    "ChannelObserver",
    "ChannelReply",
    "SocketRef",
    "Stop",
    "is_graceful",
    "reply",
    "stop",
]

log = logging.getLogger("phoenix_channels.channel")

_JOINING, _JOINED, _TERMINATING, _STOPPED = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class ChannelReply:
    """A reply to a client push; build it with :func:`reply`."""

    status: str
    response: Any


@dataclass(frozen=True, slots=True)
class Stop:
    """A request to stop the channel; build it with :func:`stop`."""

    reason: Any
    reply: ChannelReply | None = None


def reply(status: str, response: Any = None) -> ChannelReply:
    """Answer the push being handled: ``{"status": status, "response": response or {}}``.

    ``response`` may be any JSON value, or ``bytes`` (a binary reply frame for V2 clients).
    """
    if type(status) is not str:
        raise UsageError(f"reply status must be a str such as 'ok' or 'error', got {status!r}")
    return ChannelReply(status, {} if response is None else response)


def stop(reason: Any = "normal", reply: ChannelReply | None = None) -> Stop:
    """Stop the channel with ``reason``, after sending ``reply`` if given."""
    if reply is not None and type(reply) is not ChannelReply:
        raise UsageError("stop(reason, reply=...) takes a reply(...) value")
    return Stop(reason, reply)


def is_graceful(reason: Any) -> bool:
    """Whether a stop reason ends the channel cleanly (``phx_close``) or not (``phx_error``)."""
    return reason in ("normal", "shutdown") or (
        type(reason) is str and reason.startswith("shutdown:")
    )


class SocketRef:
    """Where to send a late reply: taken in ``handle_in`` with :meth:`Channel.socket_ref`."""

    __slots__ = ("join_ref", "ref", "socket", "topic")

    def __init__(self, socket: Socket, topic: str, join_ref: Ref, ref: Ref) -> None:
        self.socket, self.topic, self.join_ref, self.ref = socket, topic, join_ref, ref

    def reply(self, status: str, response: Any = None) -> Done:
        """Send ``phx_reply`` for the original push; a no-op once the connection is gone.

        Sent when called: ``await ref.reply(...)`` (the documented form) returns at once.
        """
        value = reply(status, response)
        self.socket._send(
            self.socket._encoder.reply(
                self.join_ref, self.ref, self.topic, value.status, value.response
            )
        )
        return DONE


class ChannelObserver(Protocol):
    """An internal seam: who watches how a channel's join and end go.

    Set ``channel.observer`` before the join runs (a socket's
    ``channel_factory`` does it); :mod:`phoenix_channels.testing` uses it to
    report crashes. Called on the join and terminate paths only, never per message.
    """

    def join_crashed(self, channel: Channel, exc: BaseException) -> None: ...

    def terminating(self, channel: Channel, reason: Any) -> None: ...

    def terminate_raised(self, channel: Channel, exc: BaseException) -> None: ...


class Channel(Mailbox):
    """Subclass it and route topics to it from a :class:`~phoenix_channels.Socket`.

    Override ``join`` (required), and as needed ``handle_in``, ``handle_out``
    (for events listed in :attr:`intercept`), ``handle_info`` and ``terminate``.
    Inside, ``self.topic``, ``self.join_ref``, ``self.socket`` (the connection)
    and ``self.assigns`` (this channel's own copy of the socket's assigns)
    are available.
    """

    intercept: ClassVar[Collection[str]] = ()
    """Broadcast events that go through :meth:`handle_out` instead of straight to the client."""

    _intercepts: ClassVar[frozenset[str] | None] = None
    _typed: ClassVar[typed.Handlers | None] = None

    history: ClassVar[History | None] = None
    """Keep this topic's broadcasts for rejoining clients: ``History(size=100, ttl=300.0)``.

    See ``docs/recovery.md``; ``None`` (the default): no positions, no store.
    """

    recovery: Position | None = None
    """In ``join``: the position the client asked to recover from (None if it sent none)."""

    recovered: Outcome | None = None
    """After a join that asked for recovery: what the client was told."""

    __slots__ = (
        "__dict__",
        "_assigns",
        "_extra",
        "_ref",
        "_state",
        "_telemetry_joined_at",
        "_timers",
        "_watchers",
        "join_ref",
        "observer",
        "socket",
        "topic",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _contracts.check_callbacks(cls, _contracts.CHANNEL_ASYNC, ())
        if isinstance(cls.intercept, str):
            raise UsageError(f"{cls.__name__}.intercept must be a list of events, not a str")
        cls._intercepts = frozenset(cls.intercept) or None
        cls._typed = typed.handlers_of(cls)  # @on(event) handlers, `payloads`: typed.py
        if cls.handle_out is not Channel.handle_out and not cls._intercepts:
            log.warning(
                "%s defines handle_out but intercepts no event; list the events in "
                "`intercept = [...]` or handle_out is never called",
                cls.__name__,
            )

    def __init__(
        self, socket: Socket, topic: str, join_ref: Ref, assigns: dict[str, Any] | None = None
    ) -> None:
        self.socket = socket
        self.topic = topic
        self.join_ref = join_ref
        self._assigns = assigns
        self._state = _JOINING
        self.observer: ChannelObserver | None = None
        Mailbox.__init__(self)
        self._ref: Ref = None
        self._timers: set[asyncio.TimerHandle] | None = None
        self._watchers: list[Callable[[Channel], None]] | None = None
        self._extra: set[str] | None = None

    # -- callbacks to override -----------------------------------------------

    async def join(self, topic: str, payload: Any) -> Any:
        """Accept (return the reply response, ``None`` for ``{}``) or refuse (raise JoinError)."""
        raise NotImplementedError(f"{type(self).__name__} must define `async def join`")

    async def handle_in(self, event: str, payload: Any) -> ChannelReply | Stop | None:
        """A push from the client; return :func:`reply`, :func:`stop` or ``None``."""
        raise UsageError(f"{type(self).__name__} has no handle_in for event {event!r}")

    async def handle_out(self, event: str, payload: Any) -> Stop | None:
        """An intercepted broadcast; the default pushes it on unchanged."""
        await self.push(event, payload)
        return None

    async def handle_info(self, message: Any) -> Stop | None:
        """A message from :meth:`send`, :meth:`send_after` or an extra subscription."""
        log.warning(
            "%s on %r got an unexpected message: %r; define handle_info",
            type(self).__name__,
            self.topic,
            message,
        )
        return None

    async def terminate(self, reason: Any) -> None:
        """The channel is ending (left, closed, stopped, crashed: the exception)."""

    # -- the API for callbacks ------------------------------------------------

    @property
    def endpoint(self) -> EndpointAPI:
        return self.socket.endpoint

    @property
    def assigns(self) -> dict[str, Any]:
        if self._assigns is None:
            self._assigns = {}
        return self._assigns

    @property
    def joined(self) -> bool:
        return self._state == _JOINED

    def _check_joined(self, what: str) -> None:
        if self._state == _JOINING:
            raise NotJoinedError(
                f"{what} during join on {self.topic!r}: the client has no channel yet. "
                "Call self.send(message) in join and do it from handle_info (after the join reply)"
            )
        if self._state == _STOPPED:
            raise NotJoinedError(f"{what} on {self.topic!r}: the channel has stopped")

    def push(self, event: str, payload: Any) -> Done:
        """Send ``event`` with ``payload`` (a dict, or bytes) to this channel's client.

        Sent when called (a forgotten ``await`` loses nothing); ``await self.push(...)``,
        the documented form, returns at once.
        """
        self._check_joined("push")
        sock = self.socket
        sock._send(sock._encoder.push(self.join_ref, None, self.topic, event, payload))
        if CHANNEL_PUSH.on:
            CHANNEL_PUSH.emit(
                {}, {"socket": sock, "channel": self, "topic": self.topic, "event": event}
            )
        return DONE

    @must_await
    async def broadcast(self, event: str, payload: Any) -> None:
        """Send to every subscriber of this channel's topic, on every node, this one included."""
        self._check_joined("broadcast")
        await self.socket.endpoint.broadcast(self.topic, event, payload)

    @must_await
    async def broadcast_from(self, event: str, payload: Any) -> None:
        """Like :meth:`broadcast`, but this channel's own client does not get it."""
        self._check_joined("broadcast_from")
        await self.socket.endpoint.broadcast_from(self, self.topic, event, payload)

    def socket_ref(self) -> SocketRef:
        """A handle to answer the push being handled later, from any task."""
        self._check_joined("socket_ref")
        if self._ref is None:
            raise UsageError("socket_ref() works only inside handle_in, for a push with a ref")
        return SocketRef(self.socket, self.topic, self.join_ref, self._ref)

    def send(self, message: Any) -> None:
        """Queue ``message`` for :meth:`handle_info`, after what is already queued."""
        self._enqueue(INFO, message)

    def send_after(self, delay: float, message: Any) -> asyncio.TimerHandle:
        """Queue ``message`` for :meth:`handle_info` in ``delay`` seconds (cancellable)."""
        timers = self._timers
        if timers is None:
            timers = self._timers = set()

        def fire() -> None:
            timers.discard(handle)
            self._enqueue(INFO, message)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        timers.add(handle)
        return handle

    def stop(self, reason: Any = "normal") -> None:
        """Ask the channel to stop, after the messages already queued."""
        self._enqueue(STOP, reason)

    def on_stop(self, callback: Callable[[Channel], None]) -> None:
        """Call ``callback(channel)`` once when this channel ends, however it ends.

        Leave, crash, stop, a closed connection, a duplicate join: every end
        runs it (Presence uses it to untrack). Runs at once if already ended.
        """
        if self._state == _STOPPED:
            callback(self)
            return
        if self._watchers is None:
            self._watchers = []
        self._watchers.append(callback)

    def subscribe(self, topic: str) -> None:
        """Receive the broadcasts of another topic in :meth:`handle_info` (as ``Broadcast``)."""
        if self._extra is None:
            self._extra = set()
        self._extra.add(topic)
        self.socket.endpoint.pubsub.subscribe(topic, self._deliver_info)

    def unsubscribe(self, topic: str) -> None:
        if self._extra is not None:
            self._extra.discard(topic)
        self.socket.endpoint.pubsub.unsubscribe(topic, self._deliver_info)

    # -- the runtime ----------------------------------------------------------

    def _deliver_info(self, message: Any) -> None:
        self._enqueue(INFO, message)

    def _intercepted(self, broadcast: Broadcast) -> None:
        self._enqueue(OUT, broadcast)

    def _accepting(self) -> bool:
        return self._state < _TERMINATING

    async def _dispatch(self, kind: str, value: Any) -> None:
        if kind == IN:
            if CHANNEL_HANDLE_IN.on:
                start, result = telemetry.now(), telemetry.CRASHED
                try:
                    result = await self._handle_in(value)
                finally:
                    telemetry.handle_in_done(self, value, result, start)
            else:
                await self._handle_in(value)
        elif kind == OUT:
            await self._outcome(
                await self.handle_out(value.event, value.payload), None, "handle_out"
            )
        elif kind == INFO:
            await self._outcome(await self.handle_info(value), None, "handle_info")
        elif kind == JOIN:
            if CHANNEL_JOIN.on:
                start = telemetry.now()
                telemetry.join_done(self, value, await self._join(value), start)
            else:
                await self._join(value)
        elif kind == LEAVE:
            self.socket._send(
                self.socket._encoder.reply(self.join_ref, value.ref, self.topic, "ok", {})
            )
            await self._stop("shutdown:left")
        elif kind == STOP:
            await self._stop(value)
        elif kind == CLOSE:
            await self._finish(value)

    async def _handle_in(self, msg: Message) -> Any:
        self._ref = msg.ref
        try:
            if self._typed is None:
                result = await self.handle_in(msg.event, msg.payload)
            else:
                result = await typed.dispatch(self, self._typed, msg.event, msg.payload)
        except typed.InvalidPayload as exc:
            result = reply("error", {"reason": "invalid_payload", "errors": exc.errors})
        finally:
            self._ref = None
        await self._outcome(result, msg.ref, "handle_in")
        return result

    async def _outcome(self, result: Any, ref: Ref, callback: str) -> None:
        if result is None:
            return
        if type(result) is ChannelReply:
            if callback != "handle_in":
                raise UsageError(
                    f"{type(self).__name__}.{callback} returned reply(...), but there is no "
                    "client push to answer; use await self.push(...), and return stop(...) or None"
                )
            self._reply(ref, result)
        elif type(result) is Stop:
            if result.reply is not None:
                self._reply(ref, result.reply)
            await self._stop(result.reason)
        else:
            allowed = "reply(...), stop(...)" if callback == "handle_in" else "stop(...)"
            raise UsageError(
                f"{type(self).__name__}.{callback} returned {result!r}; return {allowed} or None"
            )

    def _reply(self, ref: Ref, value: ChannelReply) -> None:
        sock = self.socket
        sock._send(
            sock._encoder.reply(self.join_ref, ref, self.topic, value.status, value.response)
        )

    async def _join(self, msg: Message) -> str:
        """Run join and answer it; returns "ok", "error" (JoinError) or "crash"."""
        sock = self.socket
        payload, requested = take_request(msg.payload)
        if requested is not NOT_ASKED and type(requested) is Position:
            self.recovery = requested
        try:
            response = _contracts.check_join_response(
                type(self).__name__, await self.join(msg.topic, payload), ChannelReply
            )
        except JoinError as exc:
            self._state = _TERMINATING
            sock._join_done(self, msg, "error", exc.response)
            await self._finish("shutdown")
            return "error"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s.join crashed on %r", type(self).__name__, msg.topic)
            if self.observer is not None:
                self.observer.join_crashed(self, exc)
            self._shutdown()
            sock._join_done(self, msg, "error", {"reason": "join crashed"})
            return "crash"
        # A cluster adapter subscribes this topic on its engine first, so the
        # client gets every broadcast sent after the join reply, from any node.
        await sock.endpoint.pubsub.prepare(msg.topic)
        self._state = _JOINED
        if not sock._join_done(self, msg, "ok", response):
            self._shutdown()
            return "crash"
        if requested is not NOT_ASKED:
            await recover(self, requested)
        return "ok"

    async def _stop(self, reason: Any) -> None:
        graceful = is_graceful(reason)
        if not graceful:
            log.error("%s on %r stopped with reason %r", type(self).__name__, self.topic, reason)
        self._state = _TERMINATING
        self._unsubscribe_all()
        if graceful:
            self.socket._channel_stopped(self, graceful=True)
            await self._finish(reason)
        else:
            await self._finish(reason)
            self.socket._channel_stopped(self, graceful=False)

    async def _crash(self, exc: BaseException) -> None:
        log.error("%s on %r crashed", type(self).__name__, self.topic, exc_info=exc)
        if self._state == _STOPPED:
            return
        self._state = _TERMINATING
        self._unsubscribe_all()
        await self._finish(exc)
        self.socket._channel_stopped(self, graceful=False)

    async def _finish(self, reason: Any) -> None:
        """Run terminate (pushes are still allowed in it), then stop for good."""
        if self._state == _STOPPED:
            return
        self._state = _TERMINATING
        self._unsubscribe_all()
        observer = self.observer
        if observer is not None:
            observer.terminating(self, reason)
        try:
            _contracts.check_terminate(type(self).__name__, await self.terminate(reason))  # type: ignore[func-returns-value]
        except Exception as exc:
            log.exception("%s.terminate raised on %r", type(self).__name__, self.topic)
            if observer is not None:
                observer.terminate_raised(self, exc)
        self._shutdown()

    def _shutdown(self) -> None:
        self._state = _STOPPED
        self._unsubscribe_all()
        self._mailbox = None
        if self._timers:
            for handle in self._timers:
                handle.cancel()
            self._timers = None
        if CHANNEL_LEAVE.on:
            telemetry.channel_left(self)
        watchers, self._watchers = self._watchers, None
        for callback in watchers or ():
            try:
                callback(self)
            except Exception:
                log.exception("on_stop callback of %r raised", self)

    def _unsubscribe_all(self) -> None:
        pubsub = self.socket.endpoint.pubsub
        pubsub.unsubscribe(self.topic, self)
        if self._extra:
            for topic in self._extra:
                pubsub.unsubscribe(topic, self._deliver_info)
            self._extra = None

    # -- called by the socket ---------------------------------------------------

    def _socket_closed(self, reason: Any) -> None:
        """The connection is gone: drop queued work and run terminate(reason)."""
        if self._state >= _TERMINATING:
            return
        self._unsubscribe_all()
        if self._mailbox:
            self._mailbox.clear()
        self._enqueue(CLOSE, reason)

    def _kill(self) -> None:
        """End at once, without terminate (a duplicate join replaced this channel)."""
        self._shutdown()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def __repr__(self) -> str:
        state = ("joining", "joined", "terminating", "stopped")[self._state]
        return f"<{type(self).__name__} {self.topic!r} join_ref={self.join_ref!r} {state}>"
