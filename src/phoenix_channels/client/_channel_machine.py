"""The channel machine of the client's core: one channel object, its join and its pushes.

A :class:`ChannelCore` is a topic joined (once, by the application) and
rejoined (by itself) over its socket; a :class:`PushCore` is one message
sent on it, waiting for the reply that carries its ref. No I/O happens here:
the channel talks to its socket only through :class:`SocketPort`, the few
methods the socket machine (:mod:`._socket_machine`) offers its channels,
so neither module needs the other to be read or type-checked.

The channel's states are a transition table, ``_TRANSITIONS``:
``(state, event) -> next state``. An event the table does not list for the
current state is a bug in this package and raises :class:`InvalidTransition`
naming both::

    closed|errored|joining|joined --join--> joining --joined--> joined
    joining|joined|errored --error--> errored
    joining|joined|errored --leave--> leaving
    any --close--> closed

What the JS client leaves to callbacks, this client settles (an awaiting
caller must not hang): the *first* join of a channel object either succeeds,
or raises and closes the channel (an ``error`` reply, its timeout, or no
connection for that long); once joined, a channel rejoins forever as in JS;
``leave`` waits for the server's ``ok`` (or the timeout) when connected;
pushes still waiting when their channel closes end at once as closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Protocol

from ..errors import NotJoinedError, UsageError
from ..protocol.messages import PHX_CLOSE, PHX_ERROR, PHX_JOIN, PHX_LEAVE, PHX_REPLY, Message, Ref
from ._actions import Action, ChannelEnded, Deliver, Joined, Outcome, Settled
from ._timers import Backoff, Timers
from .codec import Codec, Prepared
from .errors import ChannelClosedError, PushBufferFull

__all__ = [
    "ChannelCore",
    "ChannelState",
    "InvalidTransition",
    "PushCore",
    "SocketPort",
]

log = logging.getLogger("phoenix_channels.client")

EMPTY: Prepared = (b"{}", False)
"""The prepared ``{}`` payload of joins without params, leaves and heartbeats."""


class SocketPort(Protocol):
    """What a channel needs of its socket (:class:`~._socket_machine.SocketCore` has it)."""

    codec: Codec
    timeout: float
    max_buffered_pushes: int
    timers: Timers

    @property
    def rejoin_after(self) -> Callable[[int], float]: ...

    @property
    def is_connected(self) -> bool: ...

    def make_ref(self) -> str: ...

    def jittered(self, delay: float) -> float: ...

    def emit(self, action: Action) -> None: ...

    def push_frame(
        self,
        join_ref: Ref,
        ref: Ref,
        topic: str,
        event: str,
        payload: Prepared,
        channel: ChannelCore | None,
    ) -> None:
        """Send a frame now, or buffer it until the connection opens."""

    def has_channel(self, channel: ChannelCore) -> bool: ...

    def remove_channel(self, channel: ChannelCore) -> None: ...

    def leave_open_topic(self, now: float, joining: ChannelCore) -> None:
        """Leave the other channel objects joined (or joining) on ``joining``'s topic."""


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
        ch.socket.push_frame(ch.join_ref, self.ref, ch.topic, self.event, self.payload, ch)

    def resend(self, now: float, timeout: float) -> None:
        self.timeout = timeout
        self.reset()
        self.send(now)

    def start_timeout(self, now: float) -> None:
        self._forget_ref()
        socket = self.channel.socket
        self.ref = socket.make_ref()
        self.channel.replies[self.ref] = self
        socket.timers.set(self, now + self.timeout, self._timed_out)

    def reset(self) -> None:
        """Forget the current ref: a late reply to it no longer counts (nor does its timer)."""
        self._forget_ref()
        self.channel.socket.timers.cancel(self)
        self.ref = None
        self.received = None
        self.sent = False

    def cancel_timeout(self) -> None:
        self.channel.socket.timers.cancel(self)

    def _forget_ref(self) -> None:
        if self.ref is not None and self.channel.replies.get(self.ref) is self:
            del self.channel.replies[self.ref]

    def _timed_out(self, now: float) -> None:
        self._resolve(now, Outcome.TIMEOUT, None, None)

    def _resolve(self, now: float, outcome: Outcome, status: str | None, response: Any) -> None:
        self._forget_ref()
        self.channel.socket.timers.cancel(self)
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

    def __init__(self, socket: SocketPort, topic: str, params: Any, owner: Any = None) -> None:
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
        self.join_push = PushCore(self, PHX_JOIN, EMPTY, self.timeout, self._join_outcome)
        self._params = params
        self._rejoin = Backoff(
            socket.timers,
            (self, "rejoin"),
            socket.rejoin_after,
            self._rejoin_fired,
            socket.jittered,
        )
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
        self.socket.timers.set(self._deadline, now + self.timeout, self._deadline_passed)
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
            EMPTY,
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
        self.socket.leave_open_topic(now, self)
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
            self.socket.emit(Joined(self, response))
            if self._initial:
                self._settle_initial(Outcome.REPLY, "ok", response)
            return
        if outcome is Outcome.TIMEOUT:
            # The server may still join late: tell it to leave that join.
            PushCore(self, PHX_LEAVE, EMPTY, self.timeout).send(now)
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
            PushCore(self, PHX_LEAVE, EMPTY, self.timeout).send(now)
        self.join_push.reset()
        self._settle_initial(Outcome.TIMEOUT, None, None)
        self._close(now, "the join failed")

    def _settle_initial(self, outcome: Outcome, status: str | None, response: Any) -> None:
        self._initial = False
        self.socket.timers.cancel(self._deadline)
        push = self.join_push
        if push.owner is not None:
            self.socket.emit(Settled(push, push.owner, outcome, status, response))
            push.owner = None

    def _push_outcome(
        self, now: float, push: PushCore, outcome: Outcome, status: str | None, response: Any
    ) -> None:
        self.push_buffer.pop(push, None)
        if push.owner is not None:
            self.socket.emit(Settled(push, push.owner, outcome, status, response))
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
        if self.state is ChannelState.CLOSED and not self.socket.has_channel(self):
            return
        self._rejoin.reset()
        self.join_push.reset()
        self._to("close")
        self.closed_reason = reason
        self.socket.remove_channel(self)
        if self._initial:
            self._settle_initial(Outcome.CLOSED, None, reason)
        waiting = list(self.push_buffer) + [p for p in self.replies.values() if p is not None]
        self.push_buffer.clear()
        for push in dict.fromkeys(waiting):
            push.cancel_timeout()
            push._forget_ref()
            if push.owner is not None:
                self.socket.emit(Settled(push, push.owner, Outcome.CLOSED, None, reason))
                push.owner = None
        self.replies.clear()
        self.socket.emit(ChannelEnded(self, reason))

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
        self.socket.emit(Deliver(self, message))

    def __repr__(self) -> str:
        return f"<ChannelCore {self.topic!r} {self.state.value} join_ref={self.join_ref}>"
