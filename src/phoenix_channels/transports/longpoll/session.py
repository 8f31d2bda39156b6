"""A long-poll session: the Transport of one long-poll client, an outbox between polls.

A session plays the part of a WebSocket connection: it carries one socket,
keeps an outbox of encoded frames, and is reached by independent HTTP
requests (see :mod:`.handler`) or, from other nodes, by relay commands (see
:mod:`.relay`). A session nobody polled for ``1.5 * window`` seconds is
closed and its channels end with ``"shutdown:inactive"``.

Its life follows this table (``SessionState``, ``_TRANSITIONS``, moved by
:func:`~phoenix_channels.protocol.transitions.advance`); any other (state,
event) pair raises :class:`~phoenix_channels.errors.InvalidTransition`
naming both::

    state     event      next
    opening   opened     open       registered, reachable, socket attached
    opening   close      closed     the handshake was cut short
    open      send       open       a frame joins the outbox
    open      poll       open
    open      dispatch   open       client frames go to the socket
    open      close      closed
    closed    close      closed     (a no-op: closing twice is fine)
    closed    send       closed     (dropped: the client will not poll again)
    closed    poll       closed     (answered at once with what was left)
    closed    dispatch   closed     (dropped)
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from enum import Enum
from typing import TYPE_CHECKING, Any

from ...errors import DecodeError, UsageError
from ...protocol.close_codes import CloseCode
from ...protocol.transitions import advance
from ...telemetry import SOCKET_LIMIT, limit_hit
from ..base import FrameEncoder
from . import relay
from .encoding import ENCODERS
from .options import LongPoll

if TYPE_CHECKING:
    from ...handshake import TransportHost as Endpoint
    from ..base import SocketHandler

__all__ = ["LongPollSession", "SessionState"]

log = logging.getLogger("phoenix_channels.longpoll")


class SessionState(Enum):
    OPENING = "opening"
    OPEN = "open"
    CLOSED = "closed"


_OPENING, _OPEN, _CLOSED = SessionState.OPENING, SessionState.OPEN, SessionState.CLOSED

_TRANSITIONS: dict[tuple[SessionState, str], SessionState] = {
    (_OPENING, "opened"): _OPEN,
    (_OPENING, "close"): _CLOSED,
    (_OPEN, "send"): _OPEN,
    (_OPEN, "poll"): _OPEN,
    (_OPEN, "dispatch"): _OPEN,
    (_OPEN, "close"): _CLOSED,
    (_CLOSED, "close"): _CLOSED,
    (_CLOSED, "send"): _CLOSED,
    (_CLOSED, "poll"): _CLOSED,
    (_CLOSED, "dispatch"): _CLOSED,
}


class LongPollSession:
    """The Transport of one long-poll client: an outbox between polls."""

    name = "longpoll"

    def __init__(self, endpoint: Endpoint, socket: SocketHandler, options: LongPoll) -> None:
        self.endpoint = endpoint
        self.socket: SocketHandler | None = socket
        self.options = options
        self.encoder: FrameEncoder = ENCODERS[socket.serializer.vsn]
        self.id = secrets.token_urlsafe(12)
        self.topic = f"phx:lp:{secrets.token_urlsafe(16)}{int(time.time() * 1000)}"
        self.timeout = 1.5 * options.window
        self.last_seen = time.monotonic()
        self.token = ""
        self.state = _OPENING
        self._outbox: deque[str] = deque()
        self._waiter: asyncio.Future[list[str]] | None = None
        self._wake_scheduled = False
        self._remote_waiter: str | None = None  # ref of a poll waiting on another node
        self._answers = relay.AnswerSender(endpoint.pubsub, self.topic, self._on_command)

    def _advance(self, event: str) -> SessionState:
        """Move along the table; the state before."""
        before = self.state
        self.state = advance(_TRANSITIONS, before, event, f"long-poll session {self.id}")
        return before

    @property
    def closed(self) -> bool:
        return self.state is _CLOSED

    def opened(self) -> None:
        """Registered and reachable: the socket may send from now on."""
        self._advance("opened")

    # -- the Transport API -----------------------------------------------------------

    def send(self, item: str | None) -> None:
        if item is None or self._advance("send") is _CLOSED:
            return
        self._outbox.append(item)
        if len(self._outbox) > self.options.max_outbox:
            log.warning(
                "closing a long-poll session whose client stopped polling (%d frames waiting)",
                len(self._outbox),
            )
            sock = self.socket
            if SOCKET_LIMIT.on:
                limit_hit(sock, "slow_consumer", True, self.name)
            if sock is not None:
                sock.close(CloseCode.TRY_AGAIN_LATER, "slow consumer")
            return
        if (self._waiter is not None or self._remote_waiter) and not self._wake_scheduled:
            # Wake the poller on the next turn, so frames sent together leave together.
            self._wake_scheduled = True
            asyncio.get_running_loop().call_soon(self._wake)

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """End the session; frames still waiting go to a poll in progress, if any."""
        if self._advance("close") is _CLOSED:
            return
        self.endpoint.registry.session_closed(self)
        self.endpoint.pubsub.unsubscribe(self.topic, self._on_command)
        sock, self.socket = self.socket, None
        if sock is not None:
            sock.connection_lost("shutdown:closed")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._take())

    def pause_reading(self) -> None:
        """Requests are read one at a time already."""

    def resume_reading(self) -> None:
        """See :meth:`pause_reading`."""

    # -- the endpoint's hooks ------------------------------------------------------------

    def idle_close(self) -> None:
        log.debug("long-poll session %s inactive: closing", self.id)
        self._end(CloseCode.GOING_AWAY, "inactive", "shutdown:inactive")

    def drain(self) -> None:
        self._end(CloseCode.SERVICE_RESTART, "server restart", "shutdown:draining")

    def _end(self, code: int, reason: str, channel_reason: Any) -> None:
        sock = self.socket
        if sock is not None:
            sock.close(code, reason, channel_reason)
        else:
            self.close(code, reason)

    # -- polling (on this node) --------------------------------------------------------------

    def _take(self) -> list[str]:
        frames = list(self._outbox)
        self._outbox.clear()
        return frames

    def _wake(self) -> None:
        self._wake_scheduled = False
        waiter = self._waiter
        if waiter is not None and not waiter.done() and self._outbox:
            self._waiter = None
            waiter.set_result(self._take())
        if self._remote_waiter and self._outbox:
            ref, self._remote_waiter = self._remote_waiter, None
            self._answers.send(relay.NowAvailable(ref))

    async def poll(self, window: float) -> list[str]:
        """Frames waiting now, or the first ones to come within ``window`` seconds."""
        self.last_seen = time.monotonic()
        if self._advance("poll") is _CLOSED or self._outbox:
            return self._take()
        previous = self._waiter
        if previous is not None and not previous.done():
            previous.set_result([])  # a newer poll replaces it
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), window)
        except TimeoutError:
            # frames handed over just as the window closed are not dropped
            return waiter.result() if waiter.done() and not waiter.cancelled() else []
        except asyncio.CancelledError:
            # the client went away: frames handed to this poll go back for the next one
            if waiter.done() and not waiter.cancelled():
                self._outbox.extendleft(reversed(waiter.result()))
            raise
        finally:
            if self._waiter is waiter:
                self._waiter = None
            if not waiter.done():
                waiter.cancel()

    def dispatch(self, frames: list[tuple[bytes, bool]] | tuple[tuple[bytes, bool], ...]) -> None:
        """Hand the client's frames to the socket, in order."""
        if self._advance("dispatch") is _CLOSED:
            return
        for data, binary in frames:
            sock = self.socket
            if sock is None or self.closed:
                return
            sock.receive(data, binary)

    # -- commands from other nodes, through the relay ----------------------------------------

    def _on_command(self, message: Any) -> None:
        if not isinstance(message, dict) or "cmd" not in message:
            return  # answers travel on the same topic
        try:
            command = relay.decode(message)
        except DecodeError as exc:
            log.warning("long-poll relay: dropped a malformed command on %s: %s", self.topic, exc)
            return
        if not isinstance(command, relay.Command):
            return
        answer = self.handle_command(command)
        if answer is not None:
            self._answers.send(answer)

    def handle_command(self, command: relay.Command) -> relay.Answer | None:
        """Carry out one relay command; the answer to send back, if any."""
        match command:
            case relay.Ping(ref):
                return relay.Pong(ref)
            case relay.Flush(ref):
                self.last_seen = time.monotonic()
                if self._outbox:
                    return relay.Messages(ref, tuple(self._take()))
                self._remote_waiter = ref
                return None
            case relay.Expired(ref):
                if self._remote_waiter == ref:
                    self._remote_waiter = None
                return None
            case relay.Dispatch(ref, frames):
                self.dispatch(frames)
                return relay.Ok(ref)
        raise UsageError(f"not a long-poll relay command: {command!r}")
