"""The client without I/O: a socket's connection, its channels and their pushes.

Everything the JS client does with timers and callbacks happens here as
plain method calls, with the time passed in by the caller. The asyncio layer
(:mod:`phoenix_channels.client.socket`) feeds in what happened (a transport
opened, a frame arrived, a deadline passed, the application called ``join``)
and carries out what comes back from :meth:`SocketCore.take_actions`:

====================  =================================================
action                the driver...
====================  =================================================
``Open(conn)``        starts a transport connection numbered ``conn``
``Close(conn, ...)``  closes it (its later events are ignored)
``Send(conn, ...)``   writes one frame on it
``Deliver``           hands a message to the channel's listeners
``Settled``           resolves an awaited push (reply, timeout or closed)
``Joined``            tells the channel's ``on_join`` listeners
``ChannelEnded``      ends the channel's event iterators
``Opened/Closed/...`` calls the socket's lifecycle listeners
====================  =================================================

:meth:`SocketCore.next_deadline` says when to call :meth:`SocketCore.advance`.
No user code runs in here except the channel ``params`` callables, which are
evaluated at every join so that a rejoin sends the application's latest state.

The behaviour follows the official JS client (npm ``phoenix`` 1.8.16, see
``js-client-behaviour.md``): one ref counter per socket; a channel accepts a
message when the topic matches and the join ref is empty or its own;
heartbeats every ``heartbeat_interval``, and a missing reply within the same
interval closes the connection as dead; reconnects follow
``reconnect_after(tries)`` and errored channels rejoin when the socket opens
again, or after ``rejoin_after(tries)`` when the server refused or crashed
them; pushes made while a channel is not joined wait in its buffer (their
timeout already running) and go out after the next successful join.

Where the JS client leaves something to callbacks, this client settles it
(an awaiting caller must not hang):

* the *first* join of a channel object either succeeds, or raises and
  closes the channel (an ``error`` reply, its timeout, or no connection for
  that long); once joined, a channel rejoins forever as in JS;
* ``leave`` waits for the server's ``ok`` (or the timeout) when connected;
* pushes still waiting when their channel closes end at once as closed,
  instead of running out their timeouts.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..errors import NotJoinedError, UsageError
from ..protocol.messages import PHX_CLOSE, PHX_ERROR, PHX_JOIN, PHX_LEAVE, PHX_REPLY, Message, Ref
from .codec import V2_CODEC, Codec, Prepared
from .errors import ChannelClosedError, PushBufferFull

__all__ = [
    "Action",
    "ChannelCore",
    "ChannelEnded",
    "ChannelState",
    "Close",
    "Closed",
    "Deliver",
    "Errored",
    "InvalidTransition",
    "Joined",
    "Open",
    "Opened",
    "Outcome",
    "Pong",
    "PushCore",
    "Received",
    "Send",
    "Settled",
    "SocketCore",
    "default_reconnect_after",
    "default_rejoin_after",
]

log = logging.getLogger("phoenix_channels.client")

_RECONNECT = (0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.0)
_REJOIN = (1.0, 2.0, 5.0)
_EMPTY: Prepared = (b"{}", False)
_RNG = random.Random()  # shared: a Random holds 2.5 KB of state


def default_reconnect_after(tries: int) -> float:
    """The JS client's reconnect backoff in seconds: 10 ms, 50 ms, ... 2 s, then 5 s."""
    return _RECONNECT[tries - 1] if 0 < tries <= len(_RECONNECT) else 5.0


def default_rejoin_after(tries: int) -> float:
    """The JS client's rejoin backoff in seconds: 1 s, 2 s, 5 s, then 10 s."""
    return _REJOIN[tries - 1] if 0 < tries <= len(_REJOIN) else 10.0


# -- actions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Open:
    conn: int


@dataclass(frozen=True, slots=True)
class Close:
    conn: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Send:
    conn: int
    data: bytes
    binary: bool


@dataclass(frozen=True, slots=True)
class Deliver:
    channel: ChannelCore
    message: Message


class Outcome(StrEnum):
    REPLY = "reply"
    TIMEOUT = "timeout"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Settled:
    push: PushCore
    owner: Any
    outcome: Outcome
    status: str | None
    response: Any


@dataclass(frozen=True, slots=True)
class Joined:
    channel: ChannelCore
    response: Any


@dataclass(frozen=True, slots=True)
class ChannelEnded:
    channel: ChannelCore
    reason: str


@dataclass(frozen=True, slots=True)
class Opened:
    conn: int


@dataclass(frozen=True, slots=True)
class Closed:
    conn: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Errored:
    conn: int
    error: BaseException


@dataclass(frozen=True, slots=True)
class Received:
    message: Message


@dataclass(frozen=True, slots=True)
class Pong:
    ref: str
    rtt: float | None


Action = (
    Open
    | Close
    | Send
    | Deliver
    | Settled
    | Joined
    | ChannelEnded
    | Opened
    | Closed
    | Errored
    | Received
    | Pong
)


# -- timers -------------------------------------------------------------------------


class _Timers:
    """Named deadlines; setting a name again replaces its deadline."""

    __slots__ = ("_heap", "_live", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable]] = []
        self._live: dict[Hashable, tuple[int, Callable[[float], None]]] = {}
        self._seq = 0

    def set(self, key: Hashable, when: float, fn: Callable[[float], None]) -> None:
        self._seq += 1
        self._live[key] = (self._seq, fn)
        heapq.heappush(self._heap, (when, self._seq, key))
        # Cancelled entries stay in the heap until they surface; compact when they dominate.
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._live):
            self._heap = [e for e in self._heap if self._is_live(e)]
            heapq.heapify(self._heap)

    def cancel(self, key: Hashable) -> None:
        self._live.pop(key, None)

    def _is_live(self, entry: tuple[float, int, Hashable]) -> bool:
        live = self._live.get(entry[2])
        return live is not None and live[0] == entry[1]

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and not self._is_live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> Callable[[float], None] | None:
        when = self.next_deadline()
        if when is None or when > now:
            return None
        _, _, key = heapq.heappop(self._heap)
        return self._live.pop(key)[1]

    def __len__(self) -> int:
        return len(self._live)


class _Backoff:
    """A retry timer: the n-th consecutive schedule waits ``delay(n)`` (jittered)."""

    __slots__ = ("_callback", "_core", "_delay", "_key", "tries")

    def __init__(
        self,
        core: SocketCore,
        key: Hashable,
        delay: Callable[[int], float],
        callback: Callable[[float], None],
    ) -> None:
        self._core = core
        self._key = key
        self._delay = delay
        self._callback = callback
        self.tries = 0

    def schedule(self, now: float) -> None:
        delay = self._core._jittered(self._delay(self.tries + 1))
        self._core._timers.set(self._key, now + delay, self._fire)

    def _fire(self, now: float) -> None:
        self.tries += 1
        self._callback(now)

    def reset(self) -> None:
        self.tries = 0
        self._core._timers.cancel(self._key)


# -- channels -------------------------------------------------------------------------


class ChannelState(StrEnum):
    CLOSED = "closed"
    JOINING = "joining"
    JOINED = "joined"
    ERRORED = "errored"
    LEAVING = "leaving"


class InvalidTransition(RuntimeError):
    """A bug: a channel was asked to make a move its state does not allow."""


_S = ChannelState
# (state, event) -> next state. Anything missing is a bug and raises InvalidTransition.
_TRANSITIONS: dict[tuple[ChannelState, str], ChannelState] = {
    **{(s, "join"): _S.JOINING for s in (_S.CLOSED, _S.ERRORED, _S.JOINING, _S.JOINED)},
    (_S.JOINING, "joined"): _S.JOINED,
    **{(s, "error"): _S.ERRORED for s in (_S.JOINING, _S.JOINED, _S.ERRORED)},
    **{(s, "leave"): _S.LEAVING for s in (_S.JOINING, _S.JOINED, _S.ERRORED)},
    **{(s, "close"): _S.CLOSED for s in _S},
}


class PushCore:
    """One message sent on a channel, waiting for the reply that carries its ref.

    ``owner`` is whatever the driver wants back in :class:`Settled` (None:
    nobody awaits this push). A push gets a new ref every time it is sent.
    """

    __slots__ = (
        "_handler",
        "channel",
        "event",
        "owner",
        "payload",
        "received",
        "ref",
        "sent",
        "timeout",
    )

    def __init__(
        self,
        channel: ChannelCore,
        event: str,
        payload: Prepared,
        timeout: float,
        handler: Callable[[float, PushCore, Outcome, str | None, Any], None] | None = None,
    ) -> None:
        self.channel = channel
        self.event = event
        self.payload = payload
        self.timeout = timeout
        self.ref: str | None = None
        self.received: tuple[Outcome, str | None] | None = None
        self.sent = False
        self.owner: Any = None
        self._handler = handler

    def send(self, now: float) -> None:
        if self.received is not None and self.received[0] is Outcome.TIMEOUT:
            return
        self.start_timeout(now)
        self.sent = True
        ch = self.channel
        ch.socket._push_frame(ch.join_ref, self.ref, ch.topic, self.event, self.payload, ch)

    def resend(self, now: float, timeout: float) -> None:
        self.timeout = timeout
        self.reset()
        self.send(now)

    def start_timeout(self, now: float) -> None:
        self._forget_ref()
        socket = self.channel.socket
        self.ref = socket.make_ref()
        self.channel.replies[self.ref] = self
        socket._timers.set(self, now + self.timeout, self._timed_out)

    def reset(self) -> None:
        """Forget the current ref: a late reply to it no longer counts (nor does its timer)."""
        self._forget_ref()
        self.channel.socket._timers.cancel(self)
        self.ref = None
        self.received = None
        self.sent = False

    def cancel_timeout(self) -> None:
        self.channel.socket._timers.cancel(self)

    def _forget_ref(self) -> None:
        if self.ref is not None and self.channel.replies.get(self.ref) is self:
            del self.channel.replies[self.ref]

    def _timed_out(self, now: float) -> None:
        self._resolve(now, Outcome.TIMEOUT, None, None)

    def _resolve(self, now: float, outcome: Outcome, status: str | None, response: Any) -> None:
        self._forget_ref()
        self.channel.socket._timers.cancel(self)
        self.received = (outcome, status)
        if self._handler is not None:
            self._handler(now, self, outcome, status, response)

    def __repr__(self) -> str:
        return f"<PushCore {self.channel.topic} {self.event} ref={self.ref}>"


class ChannelCore:
    """One channel object of the socket: a topic, its join and its pushes."""

    __slots__ = (
        "_deadline",
        "_initial",
        "_leave_push",
        "_params",
        "_rejoin",
        "closed_reason",
        "join_push",
        "joined_once",
        "last_join_response",
        "owner",
        "push_buffer",
        "replies",
        "socket",
        "state",
        "timeout",
        "topic",
    )

    def __init__(self, socket: SocketCore, topic: str, params: Any, owner: Any = None) -> None:
        self.socket = socket
        self.topic = topic
        self.owner = owner
        self.state = ChannelState.CLOSED
        self.timeout = socket.timeout
        self.joined_once = False
        self.last_join_response: Any = None
        self.closed_reason = "not joined yet"
        self.replies: dict[str, PushCore] = {}
        self.push_buffer: dict[PushCore, None] = {}  # an ordered set
        self.join_push = PushCore(self, PHX_JOIN, _EMPTY, self.timeout, self._join_outcome)
        self._params = params
        self._rejoin = _Backoff(socket, (self, "rejoin"), socket.rejoin_after, self._rejoin_fired)
        self._deadline = (self, "deadline")
        self._initial = False
        self._leave_push: PushCore | None = None

    @property
    def join_ref(self) -> str | None:
        return self.join_push.ref

    def _to(self, event: str) -> None:
        try:
            self.state = _TRANSITIONS[self.state, event]
        except KeyError:
            raise InvalidTransition(
                f"channel {self.topic!r}: {event!r} is not allowed in state {self.state.value!r}"
            ) from None

    def _join_payload(self) -> Prepared:
        params = self._params() if callable(self._params) else self._params
        return self.socket.codec.prepare(self.topic, PHX_JOIN, {} if params is None else params)

    def _can_push(self) -> bool:
        return self.socket.is_connected and self.state is ChannelState.JOINED

    def is_member(self, message: Message) -> bool:
        join_ref = message.join_ref
        return not join_ref or join_ref == self.join_push.ref

    # -- what the application does ----------------------------------------------------

    def join(self, now: float, timeout: float | None = None) -> PushCore:
        """Join once; the join push settles with the first outcome (see the module doc)."""
        if self.joined_once:
            raise UsageError(
                f"join() was already called on this channel of {self.topic!r}; a channel object "
                "joins once (it rejoins by itself): create another with socket.channel()"
            )
        payload = self._join_payload()  # params that cannot be encoded fail here, in the caller
        self.timeout = self.socket.timeout if timeout is None else timeout
        self.joined_once = True
        self._initial = True
        self.socket._timers.set(self._deadline, now + self.timeout, self._deadline_passed)
        self._rejoin_now(now, payload)
        return self.join_push

    def push(self, now: float, event: str, payload: Any, timeout: float | None = None) -> PushCore:
        if not self.joined_once:
            raise NotJoinedError(
                f"push {event!r} to {self.topic!r} before join(): await channel.join() first"
            )
        if self.state is ChannelState.CLOSED or self.state is ChannelState.LEAVING:
            reason = "leaving" if self.state is ChannelState.LEAVING else self.closed_reason
            raise ChannelClosedError(self.topic, reason)
        prepared = self.socket.codec.prepare(self.topic, event, {} if payload is None else payload)
        push = PushCore(
            self, event, prepared, self.timeout if timeout is None else timeout, self._push_outcome
        )
        if self._can_push():
            push.send(now)
        else:
            if len(self.push_buffer) >= self.socket.max_buffered_pushes:
                raise PushBufferFull(
                    f"{len(self.push_buffer)} pushes already wait for {self.topic!r} to be "
                    f"joined (max_buffered_pushes={self.socket.max_buffered_pushes})"
                )
            push.start_timeout(now)
            self.push_buffer[push] = None
        return push

    def leave(self, now: float, timeout: float | None = None) -> PushCore | None:
        """Send ``phx_leave``; the channel closes on the reply or the timeout (or at once
        when the socket is not connected). None if the channel is already closed."""
        if self.state is ChannelState.CLOSED:
            return None
        if self.state is ChannelState.LEAVING:
            return self._leave_push
        self._rejoin.reset()
        self.join_push.cancel_timeout()
        if self._initial:
            self._settle_initial(Outcome.CLOSED, None, "left before the join completed")
        self._to("leave")
        leave = PushCore(
            self,
            PHX_LEAVE,
            _EMPTY,
            self.timeout if timeout is None else timeout,
            self._leave_outcome,
        )
        self._leave_push = leave
        leave.send(now)
        if not self.socket.is_connected:
            leave._resolve(now, Outcome.REPLY, "ok", {})
        return leave

    def close(self, now: float, reason: str) -> None:
        """End this channel object here, without telling the server (the socket is going away)."""
        self._close(now, reason)

    # -- what happens to it -----------------------------------------------------------

    def _rejoin_now(self, now: float, payload: Prepared | None = None) -> None:
        if self.state is ChannelState.LEAVING or (
            self.state is ChannelState.CLOSED and not self._initial
        ):
            return
        self.socket._leave_open_topic(now, self)
        if payload is None:
            try:
                payload = self._join_payload()
            except Exception:
                log.exception("the join params of %r failed; retrying later", self.topic)
                if self.state is not ChannelState.ERRORED:
                    self._to("error")
                if self.socket.is_connected:
                    self._rejoin.schedule(now)
                return
        self._to("join")
        self.join_push.payload = payload
        self.join_push.resend(now, self.timeout)

    def _rejoin_fired(self, now: float) -> None:
        if self.socket.is_connected:
            self._rejoin_now(now)

    def _socket_opened(self, now: float) -> None:
        self._rejoin.reset()
        if self.state is ChannelState.ERRORED:
            self._rejoin_now(now)

    def _join_outcome(
        self, now: float, push: PushCore, outcome: Outcome, status: str | None, response: Any
    ) -> None:
        if self.state is ChannelState.LEAVING or self.state is ChannelState.CLOSED:
            return  # the application left before the join was answered
        if outcome is Outcome.REPLY and status == "ok":
            self._to("joined")
            self._rejoin.reset()
            self.last_join_response = response
            buffered = list(self.push_buffer)
            self.push_buffer.clear()
            for waiting in buffered:
                waiting.send(now)
            self.socket._emit(Joined(self, response))
            if self._initial:
                self._settle_initial(Outcome.REPLY, "ok", response)
            return
        if outcome is Outcome.TIMEOUT:
            # The server may still join late: tell it to leave that join.
            PushCore(self, PHX_LEAVE, _EMPTY, self.timeout).send(now)
            self.join_push.reset()
        if self.state is not ChannelState.ERRORED:
            self._to("error")
        if self._initial:
            self._settle_initial(outcome, status, response)
            self._close(now, "the join failed")
        elif self.socket.is_connected:
            self._rejoin.schedule(now)

    def _deadline_passed(self, now: float) -> None:
        # The first join got no outcome in time, e.g. because no connection opened.
        if not self._initial:
            return
        if self.socket.is_connected and self.join_push.sent:
            PushCore(self, PHX_LEAVE, _EMPTY, self.timeout).send(now)
        self.join_push.reset()
        self._settle_initial(Outcome.TIMEOUT, None, None)
        self._close(now, "the join failed")

    def _settle_initial(self, outcome: Outcome, status: str | None, response: Any) -> None:
        self._initial = False
        self.socket._timers.cancel(self._deadline)
        push = self.join_push
        if push.owner is not None:
            self.socket._emit(Settled(push, push.owner, outcome, status, response))
            push.owner = None

    def _push_outcome(
        self, now: float, push: PushCore, outcome: Outcome, status: str | None, response: Any
    ) -> None:
        self.push_buffer.pop(push, None)
        if push.owner is not None:
            self.socket._emit(Settled(push, push.owner, outcome, status, response))
            push.owner = None

    def _leave_outcome(
        self, now: float, push: PushCore, outcome: Outcome, status: str | None, response: Any
    ) -> None:
        self._push_outcome(now, push, outcome, status, response)
        self._close(now, "left")

    def _errored(self, now: float) -> None:
        if self.state is ChannelState.CLOSED:
            return
        if self.state is ChannelState.LEAVING:
            # The server side is gone (crash or lost connection): the leave is done.
            self._close(now, "left")
            return
        if self.state is ChannelState.JOINING:
            self.join_push.reset()
        self._to("error")
        if self.socket.is_connected:
            self._rejoin.schedule(now)

    def _close(self, now: float, reason: str) -> None:
        if self.state is ChannelState.CLOSED and not self.socket._has(self):
            return
        self._rejoin.reset()
        self.join_push.reset()
        self._to("close")
        self.closed_reason = reason
        self.socket._remove(self)
        if self._initial:
            self._settle_initial(Outcome.CLOSED, None, reason)
        waiting = list(self.push_buffer) + [p for p in self.replies.values() if p is not None]
        self.push_buffer.clear()
        for push in dict.fromkeys(waiting):
            push.cancel_timeout()
            push._forget_ref()
            if push.owner is not None:
                self.socket._emit(Settled(push, push.owner, Outcome.CLOSED, None, reason))
                push.owner = None
        self.replies.clear()
        self.socket._emit(ChannelEnded(self, reason))

    def _trigger(self, now: float, message: Message) -> None:
        event = message.event
        if event == PHX_REPLY:
            payload = message.payload
            status = payload.get("status") if type(payload) is dict else None
            if type(status) is str:
                push = self.replies.get(message.ref) if type(message.ref) is str else None
                if push is not None:
                    push._resolve(now, Outcome.REPLY, status, payload.get("response"))
            else:
                log.warning("ignoring a phx_reply without a status on %r: %r", self.topic, payload)
        elif event == PHX_CLOSE:
            self._close(now, "closed by the server")
        elif event == PHX_ERROR:
            self._errored(now)
        self.socket._emit(Deliver(self, message))

    def __repr__(self) -> str:
        return f"<ChannelCore {self.topic!r} {self.state.value} join_ref={self.join_ref}>"


# -- the socket -----------------------------------------------------------------------


class _Conn:
    __slots__ = ("id", "open", "skip_heartbeat")

    def __init__(self, conn_id: int) -> None:
        self.id = conn_id
        self.open = False
        self.skip_heartbeat = False


class SocketCore:
    """The connection, the heartbeat, the reconnects and every channel of one socket."""

    def __init__(
        self,
        *,
        codec: Codec = V2_CODEC,
        timeout: float = 10.0,
        heartbeat_interval: float = 30.0,
        reconnect_after: Callable[[int], float] = default_reconnect_after,
        rejoin_after: Callable[[int], float] = default_rejoin_after,
        jitter: float = 0.0,
        rng: random.Random | None = None,
        max_buffered_pushes: int = 10_000,
    ) -> None:
        self.codec = codec
        self.timeout = timeout
        self.heartbeat_interval = heartbeat_interval
        self.rejoin_after = rejoin_after
        self.jitter = jitter
        self.max_buffered_pushes = max_buffered_pushes
        self.report_messages = False
        self.established_connections = 0
        self._rng = rng or _RNG
        self._ref = 0
        self._next_conn = 0
        self._conn: _Conn | None = None
        self._wanted = False
        self._actions: list[Action] = []
        self._timers = _Timers()
        self._send_buffer: list[tuple[Ref, Ref, str, str, Prepared, ChannelCore | None]] = []
        self._channels: dict[str, list[ChannelCore]] = {}
        self._pending_heartbeat: str | None = None
        self._pings: dict[str, float] = {}
        self._reconnect = _Backoff(self, "reconnect", reconnect_after, self._reconnect_fired)

    # -- the driver's side ----------------------------------------------------------------

    def take_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def advance(self, now: float) -> None:
        """Run every timer due at ``now``."""
        while (fire := self._timers.pop_due(now)) is not None:
            fire(now)

    def transport_opened(self, now: float, conn_id: int, *, skip_heartbeat: bool = False) -> None:
        conn = self._conn
        if conn is None or conn.id != conn_id:
            return
        conn.open = True
        conn.skip_heartbeat = skip_heartbeat
        self.established_connections += 1
        self._emit(Opened(conn_id))
        self._reconnect.reset()
        self._flush_send_buffer()
        self._reset_heartbeat(now)
        for channel in self._all_channels():
            channel._socket_opened(now)

    def transport_closed(
        self,
        now: float,
        conn_id: int,
        code: int = 1006,
        reason: str = "",
        error: BaseException | None = None,
    ) -> None:
        """The connection closed by itself (server, network) or failed to open."""
        conn = self._conn
        if conn is None or conn.id != conn_id:
            return
        self._drop_conn(conn)
        if error is not None:
            self._emit(Errored(conn_id, error))
            for channel in self._all_channels():
                channel._rejoin.reset()
            self._error_channels(now, "connection_error")
        self._error_channels(now, "connection_closed")
        if self._wanted:
            self._reconnect.schedule(now)
        self._emit(Closed(conn_id, code, reason))

    def received(self, now: float, conn_id: int, message: Message) -> None:
        conn = self._conn
        if conn is None or conn.id != conn_id or not conn.open:
            return
        ref = message.ref
        if ref is not None and ref == self._pending_heartbeat:
            self._clear_heartbeats()
            self._timers.set("heartbeat", now + self.heartbeat_interval, self._send_heartbeat)
        for channel in tuple(self._channels.get(message.topic, ())):
            if channel.is_member(message):
                channel._trigger(now, message)
        if self.report_messages:
            self._emit(Received(message))
        if ref is not None and type(ref) is str and ref in self._pings:
            self._emit(Pong(ref, now - self._pings.pop(ref)))

    # -- what the application does ----------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._conn is not None and self._conn.open

    @property
    def connection_state(self) -> str:
        if self._conn is None:
            return "reconnecting" if self._wanted else "closed"
        return "open" if self._conn.open else "connecting"

    @property
    def wanted(self) -> bool:
        """Whether the socket should be connected (``connect`` called, no ``disconnect`` since)."""
        return self._wanted

    def connect(self, now: float) -> None:
        if self._wanted:
            return
        self._wanted = True
        self._reconnect.reset()
        self._open()

    def disconnect(self, now: float, code: int = 1000, reason: str = "") -> None:
        """Close cleanly and stay closed; channels rejoin after the next ``connect``."""
        self._wanted = False
        self._reconnect.reset()
        conn = self._conn
        if conn is None:
            return
        was_open = conn.open
        self._drop_conn(conn)
        self._emit(Close(conn.id, code, reason))
        if was_open:
            self._error_channels(now, "connection_closed")
        self._emit(Closed(conn.id, code, reason))

    def close_channels(self, now: float, reason: str) -> None:
        for channel in self._all_channels():
            channel.close(now, reason)

    def channel(self, topic: str, params: Any = None, owner: Any = None) -> ChannelCore:
        if type(topic) is not str or not topic:
            raise UsageError(f"a topic must be a non-empty string, got {topic!r}")
        if params is not None and not callable(params) and not isinstance(params, dict):
            raise UsageError(
                f"channel params must be a dict or a callable returning one, got {params!r}"
            )
        channel = ChannelCore(self, topic, params, owner)
        self._channels.setdefault(topic, []).append(channel)
        return channel

    def ping(self, now: float) -> str | None:
        """Send a heartbeat now; :class:`Pong` carries the round trip (None if not connected)."""
        if not self.is_connected:
            return None
        ref = self.make_ref()
        self._pings[ref] = now
        self._push_frame(None, ref, "phoenix", "heartbeat", _EMPTY, None)
        return ref

    def make_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    @property
    def channels(self) -> list[ChannelCore]:
        return self._all_channels()

    @property
    def buffered_frames(self) -> int:
        """Frames waiting for the connection to open."""
        return len(self._send_buffer)

    # -- internals ---------------------------------------------------------------------------

    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _jittered(self, delay: float) -> float:
        if not self.jitter:
            return delay
        return delay * (1.0 + self._rng.uniform(-self.jitter, self.jitter))

    def _all_channels(self) -> list[ChannelCore]:
        return [ch for chans in self._channels.values() for ch in chans]

    def _has(self, channel: ChannelCore) -> bool:
        return channel in self._channels.get(channel.topic, ())

    def _remove(self, channel: ChannelCore) -> None:
        chans = self._channels.get(channel.topic)
        if chans is not None and channel in chans:
            chans.remove(channel)
            if not chans:
                del self._channels[channel.topic]

    def _open(self) -> None:
        self._next_conn += 1
        self._conn = _Conn(self._next_conn)
        self._emit(Open(self._next_conn))

    def _drop_conn(self, conn: _Conn) -> None:
        conn.open = False
        self._conn = None
        self._clear_heartbeats()
        for ref in self._pings:
            self._emit(Pong(ref, None))
        self._pings.clear()

    def _reconnect_fired(self, now: float) -> None:
        if self._wanted and self._conn is None:
            self._open()

    def _error_channels(self, now: float, reason: str) -> None:
        for channel in self._all_channels():
            state = channel.state
            if state is ChannelState.JOINING or state is ChannelState.JOINED:
                channel._errored(now)
                local = {"source": "transport", "reason": reason}
                self._emit(Deliver(channel, Message(None, None, channel.topic, PHX_ERROR, local)))
            elif state is ChannelState.LEAVING:
                channel._errored(now)

    def _leave_open_topic(self, now: float, joining: ChannelCore) -> None:
        for other in tuple(self._channels.get(joining.topic, ())):
            if other is not joining and other.state in (ChannelState.JOINED, ChannelState.JOINING):
                other.leave(now)

    # heartbeats

    def _reset_heartbeat(self, now: float) -> None:
        if self._conn is None or self._conn.skip_heartbeat:
            return
        self._clear_heartbeats()
        self._timers.set("heartbeat", now + self.heartbeat_interval, self._send_heartbeat)

    def _clear_heartbeats(self) -> None:
        self._timers.cancel("heartbeat")
        self._timers.cancel("heartbeat_timeout")
        self._pending_heartbeat = None

    def _send_heartbeat(self, now: float) -> None:
        if not self.is_connected:
            return
        self._pending_heartbeat = ref = self.make_ref()
        self._push_frame(None, ref, "phoenix", "heartbeat", _EMPTY, None)
        deadline = now + self.heartbeat_interval
        self._timers.set("heartbeat_timeout", deadline, self._heartbeat_timeout)

    def _heartbeat_timeout(self, now: float) -> None:
        conn = self._conn
        if self._pending_heartbeat is None or conn is None:
            return
        # No reply within a whole interval: the connection is presumed dead.
        self._drop_conn(conn)
        self._emit(Close(conn.id, 1000, "heartbeat timeout"))
        self._error_channels(now, "heartbeat_timeout")
        if self._wanted:
            self._reconnect.schedule(now)
        self._emit(Closed(conn.id, 1000, "heartbeat timeout"))

    # frames

    def _push_frame(
        self,
        join_ref: Ref,
        ref: Ref,
        topic: str,
        event: str,
        payload: Prepared,
        channel: ChannelCore | None,
    ) -> None:
        if self.is_connected:
            self._send(join_ref, ref, topic, event, payload, channel)
        else:
            self._send_buffer.append((join_ref, ref, topic, event, payload, channel))

    def _send(
        self,
        join_ref: Ref,
        ref: Ref,
        topic: str,
        event: str,
        payload: Prepared,
        channel: ChannelCore | None,
    ) -> None:
        # A push made for an earlier join of its channel (or after it closed) is not
        # sent; a leave still goes out, to end the server side of that join.
        if channel is not None and event != PHX_LEAVE and _outdated(join_ref, channel):
            return
        assert self._conn is not None
        data, binary = self.codec.encode(join_ref, ref, topic, event, payload)
        self._emit(Send(self._conn.id, data, binary))

    def _flush_send_buffer(self) -> None:
        buffered, self._send_buffer = self._send_buffer, []
        for join_ref, ref, topic, event, payload, channel in buffered:
            if channel is not None and _outdated(join_ref, channel):
                continue
            self._send(join_ref, ref, topic, event, payload, channel)


def _outdated(join_ref: Ref, channel: ChannelCore) -> bool:
    return join_ref != channel.join_ref or channel.state is ChannelState.CLOSED
