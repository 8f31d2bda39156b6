"""A joined topic as the application sees it: join, push, listen, leave.

Channels are made by :meth:`Socket.channel <phoenix_channels.client.Socket.channel>`.
The state machine lives in :mod:`phoenix_channels.client._channel_machine`;
this module turns its outcomes into awaitables, exceptions, handler calls and
an event queue. A channel reaches its socket only through :class:`SocketLink`
(which :class:`~phoenix_channels.client.Socket` implements), so this module
does not import the socket's.

Incoming events reach the application two ways, both in arrival order:

* handlers registered with :meth:`Channel.on` (plain functions, or ``async``
  functions, which then run as tasks);
* ``async for message in channel`` (or :meth:`Channel.receive`): every event
  except the protocol's own ``phx_*`` ones, from a queue that starts filling
  when the channel is created, so nothing pushed right after the join is
  missed. The queue holds ``max_queued_events`` messages (1,000 unless the
  socket or the channel says otherwise); when it is full the oldest message
  is dropped and counted in :attr:`Channel.dropped_events`. Pass
  ``max_queued_events=0`` for a channel that is only read through handlers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Generator
from typing import Any, Protocol

from ..errors import UsageError
from ..protocol.messages import Message, Reply
from ._actions import Outcome
from ._channel_machine import ChannelCore, PushCore
from ._recovery import Tracker
from ._socket_machine import SocketCore
from ._wakeup import Wakeup
from .errors import ChannelClosedError, JoinRefused, JoinTimeout, PushTimeout
from .options import check_max_queued_events

__all__ = ["Channel", "Handler", "Push", "SocketLink"]

log = logging.getLogger("phoenix_channels.client")

Handler = Callable[[Any], object]
"""An event handler: called with the payload; may return an awaitable (run as a task)."""


class SocketLink(Protocol):
    """What a :class:`Channel` needs of its socket: the core, the clock and the pump.

    :class:`~phoenix_channels.client.Socket` implements it; these are the
    socket's driver internals, not API for applications.
    """

    _core: SocketCore

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        """The socket's event loop (the running one, checked)."""

    def _now(self) -> float:
        """The loop's clock, the time the core is given."""

    def _pump(self) -> None:
        """Carry out the actions the core queued."""

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Run a core method at the current time, then pump."""

    def _call_user(self, callback: Callable[..., object], *args: Any) -> None:
        """Run application code; its exception is logged, not raised."""


class Push:
    """A message sent on a channel. Await it for the :class:`~phoenix_channels.Reply`.

    The push is sent (or buffered) when it is made; awaiting it is optional.
    ``await push`` returns the reply whatever its status (``reply.status`` is
    ``"ok"``, ``"error"`` or whatever the server's channel answered), and
    raises :class:`~phoenix_channels.client.PushTimeout` when no reply came
    in time, or :class:`~phoenix_channels.client.ChannelClosedError` when the
    channel closed first.
    """

    __slots__ = ("_core", "_future", "_result")

    def __init__(self, core: PushCore, future: asyncio.Future[None]) -> None:
        self._core = core
        self._future = future
        self._result: tuple[Outcome, str | None, Any, str | None, str | None] | None = None
        core.owner = self

    @property
    def event(self) -> str:
        return self._core.event

    @property
    def topic(self) -> str:
        return self._core.channel.topic

    @property
    def ref(self) -> str | None:
        """The ref of its latest send (each send, after a rejoin say, gets a new one)."""
        return self._core.ref

    @property
    def timeout(self) -> float:
        return self._core.timeout

    def done(self) -> bool:
        """Whether the push has its outcome (reply, timeout or closed channel)."""
        return self._result is not None

    def _settle(self, outcome: Outcome, status: str | None, response: Any) -> None:
        if self._result is None:
            join_ref = self._core.channel.join_ref
            self._result = (outcome, status, response, self._core.ref, join_ref)
            if not self._future.done():
                self._future.set_result(None)

    async def _outcome(self) -> tuple[Outcome, str | None, Any, str | None, str | None]:
        if self._result is None:
            # shield: a caller that gives up must not cancel the outcome for others.
            await asyncio.shield(self._future)
        assert self._result is not None
        return self._result

    async def _reply(self) -> Reply:
        outcome, status, response, ref, join_ref = await self._outcome()
        if outcome is Outcome.REPLY:
            return Reply(join_ref, ref, self.topic, status or "", response)
        if outcome is Outcome.TIMEOUT:
            raise PushTimeout(self.topic, self.event, self.timeout)
        raise ChannelClosedError(self.topic, str(response))

    def __await__(self) -> Generator[Any, None, Reply]:
        return self._reply().__await__()

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<Push {self.event!r} on {self.topic!r} ref={self.ref} {state}>"


class Channel:
    """One channel object: a topic and its params, joined once, rejoined by itself.

    ``params`` (a dict, or a function returning one) is sent with every join;
    a function is called at each join and rejoin, so a client can send the
    latest state it has (the last message id it saw, say).
    """

    def __init__(
        self,
        socket: SocketLink,
        topic: str,
        params: Any,
        max_queued_events: int,
        recover: bool = False,
    ) -> None:
        check_max_queued_events(max_queued_events)
        if params is not None and not callable(params) and not isinstance(params, dict):
            raise UsageError(
                f"channel params must be a dict or a callable returning one, got {params!r}"
            )
        self._socket = socket
        self._recovery = Tracker(params, recover)
        self._recovery_listeners: list[Callable[[Any], object]] = []
        self._core: ChannelCore = socket._core.channel(topic, self._recovery.join_params, self)
        self._bindings: list[tuple[str, int, Handler]] = []
        self._binding_ref = 0
        self._join_listeners: list[Callable[[Any], object]] = []
        self._close_listeners: list[Callable[[str], object]] = []
        self._queue: deque[Message] = deque()
        self._max_queued = max_queued_events
        self._wakeup = Wakeup()
        self._ended: str | None = None
        self._overflowing = False
        self.dropped_events = 0
        """Events dropped because the queue was full (see the module docs)."""

    # -- state -----------------------------------------------------------------------------

    @property
    def topic(self) -> str:
        return self._core.topic

    @property
    def state(self) -> str:
        """``closed``, ``joining``, ``joined``, ``errored`` (rejoin pending) or ``leaving``."""
        return self._core.state.value

    @property
    def joined(self) -> bool:
        return self.state == "joined"

    @property
    def join_ref(self) -> str | None:
        """The ref of the current join; it changes at every rejoin."""
        return self._core.join_ref

    @property
    def join_response(self) -> Any:
        """The response of the latest successful join."""
        return self._core.last_join_response

    @property
    def closed_reason(self) -> str | None:
        """Why the channel ended (``"left"``, ``"closed by the server"``...), None while open."""
        return self._ended

    @property
    def queued_events(self) -> int:
        return len(self._queue)

    # -- operations --------------------------------------------------------------------------

    async def join(self, timeout: float | None = None) -> Any:
        """Join the topic; the join reply's response.

        Raises :class:`~phoenix_channels.client.JoinRefused` when the server
        answers ``error`` and :class:`~phoenix_channels.client.JoinTimeout`
        when no reply comes within ``timeout`` seconds (the socket's
        ``timeout`` by default), even if no connection could be opened
        meanwhile. Either way the channel is then closed; create another to
        try again. Once joined, the channel rejoins by itself after a lost
        connection or a crash on the server, as the JS client does.
        """
        socket = self._socket
        loop = socket._ensure_loop()
        core = self._core.join(socket._now(), timeout)
        push = Push(core, loop.create_future())
        socket._pump()
        try:
            outcome, status, response, _, _ = await push._outcome()
        except asyncio.CancelledError:
            if not push.done():  # the caller gave up: do not leave a join behind
                socket._call(self._core.leave)
            raise
        if outcome is Outcome.REPLY and status == "ok":
            return response
        if outcome is Outcome.REPLY:
            raise JoinRefused(self.topic, response)
        if outcome is Outcome.TIMEOUT:
            raise JoinTimeout(self.topic, "phx_join", self._core.timeout)
        raise ChannelClosedError(self.topic, str(response))

    def push(self, event: str, payload: Any = None, timeout: float | None = None) -> Push:
        """Send ``event``; await the returned :class:`Push` for the reply.

        ``payload`` is a JSON value (``None`` means ``{}``), or ``bytes`` for a
        binary frame (protocol V2). When the channel is not joined right now
        (reconnecting, rejoining) the push waits in the channel's buffer and
        goes out after the next successful join; its ``timeout`` (seconds,
        the socket's ``timeout`` by default) runs from now.
        """
        if type(event) is not str:
            raise UsageError(f"event must be a str, got {event!r}")
        socket = self._socket
        loop = socket._ensure_loop()
        core = self._core.push(socket._now(), event, payload, timeout)
        push = Push(core, loop.create_future())
        socket._pump()
        return push

    async def leave(self, timeout: float | None = None) -> None:
        """Leave the topic: waits for the server's ``ok`` (or the timeout); the channel closes.

        Does nothing on a channel that is already closed.
        """
        socket = self._socket
        loop = socket._ensure_loop()
        core = self._core.leave(socket._now(), timeout)
        if core is None or core.received is not None:  # closed already, or at once (offline)
            socket._pump()
            return
        push = core.owner if isinstance(core.owner, Push) else Push(core, loop.create_future())
        socket._pump()
        await push._outcome()

    # -- listening -----------------------------------------------------------------------------

    def on(self, event: str, handler: Handler) -> int:
        """Call ``handler(payload)`` for every ``event`` received; returns a ref for :meth:`off`.

        Any event can be listened to, including ``phx_reply``, ``phx_error``
        and ``phx_close``. Handlers run in the order they were added.
        """
        if not callable(handler):
            raise UsageError(f"handler must be callable, got {handler!r}")
        self._binding_ref += 1
        self._bindings.append((event, self._binding_ref, handler))
        return self._binding_ref

    def off(self, event: str, ref: int | None = None) -> None:
        """Remove the handler ``ref`` of ``event``, or every handler of ``event``."""
        self._bindings = [
            b for b in self._bindings if not (b[0] == event and (ref is None or ref == b[1]))
        ]

    def on_join(self, callback: Callable[[Any], object]) -> None:
        """Call ``callback(response)`` after every successful join, the rejoins included."""
        self._join_listeners.append(callback)

    def on_error(self, callback: Handler) -> int:
        """Call ``callback(payload)`` when the channel errors: a crash on the server
        (``{"reason": "channel_crash"}``) or a lost connection
        (``{"source": "transport", "reason": ...}``). It rejoins by itself."""
        return self.on("phx_error", callback)

    @property
    def position(self) -> str | None:
        """The last history position seen on this topic (``"<epoch>:<offset>"``), if any.

        Sent back at every rejoin so the server replays what was missed
        (``docs/recovery.md``).
        """
        return self._recovery.position

    @property
    def recovery(self) -> dict[str, Any] | None:
        """The server's last ``phx_recovery`` outcome for this channel, if any.

        ``{"recovered": bool, "reason": str | None, "position": str | None,
        "replayed": int}``; ``recovered`` False means messages were missed
        for good (the reason says why): reload what you show.
        """
        return self._recovery.outcome

    def on_recovery(self, callback: Callable[[Any], object]) -> None:
        """Call ``callback(outcome)`` for each ``phx_recovery`` (after each (re)join that asked)."""
        self._recovery_listeners.append(callback)

    def on_close(self, callback: Callable[[str], object]) -> None:
        """Call ``callback(reason)`` once, when this channel object ends for good."""
        self._close_listeners.append(callback)

    async def receive(self) -> Message:
        """The next queued event; raises :class:`ChannelClosedError` once the channel has
        ended and every queued event was read."""
        if self._max_queued == 0:
            raise UsageError(
                f"channel {self.topic!r} was created with max_queued_events=0: use on() handlers"
            )
        while not self._queue:
            if self._ended is not None:
                raise ChannelClosedError(self.topic, self._ended)
            await self._wakeup.wait()
        self._overflowing = False
        return self._queue.popleft()

    def __aiter__(self) -> Channel:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except ChannelClosedError:
            raise StopAsyncIteration from None

    # -- from the socket's driver ----------------------------------------------------------------

    def _deliver(self, message: Message) -> None:
        event = message.event
        if self._recovery.observe(event, message.payload, message.ref):
            for callback in tuple(self._recovery_listeners):
                self._socket._call_user(callback, message.payload)
        for bound_event, _, handler in tuple(self._bindings):
            if bound_event == event:
                self._socket._call_user(handler, message.payload)
        if self._max_queued and not event.startswith("phx_"):
            queue = self._queue
            if len(queue) >= self._max_queued:
                queue.popleft()
                self.dropped_events += 1
                if not self._overflowing:
                    self._overflowing = True
                    log.warning(
                        "channel %r: event queue full (%d), dropping the oldest events; read "
                        "them with `async for`, or create the channel with max_queued_events=0",
                        self.topic,
                        self._max_queued,
                    )
            queue.append(message)
            self._wakeup.set()

    def _joined(self, response: Any) -> None:
        for callback in tuple(self._join_listeners):
            self._socket._call_user(callback, response)

    def _ended_with(self, reason: str) -> None:
        if self._ended is None:
            self._ended = reason
            self._wakeup.set()
            for callback in tuple(self._close_listeners):
                self._socket._call_user(callback, reason)

    def __repr__(self) -> str:
        return f"<Channel {self.topic!r} {self.state} join_ref={self.join_ref}>"
