"""The socket machine of the client's core: the connection, heartbeats, reconnects.

:class:`SocketCore` is the client without I/O. The asyncio driver
(:mod:`phoenix_channels.client.socket`) feeds in what happened (a transport
opened, a frame arrived, a deadline passed, the application called
``connect``) with the time as an argument, and carries out the actions
(:mod:`._actions`) that come back from :meth:`SocketCore.take_actions`;
:meth:`SocketCore.next_deadline` says when to call
:meth:`SocketCore.advance`. No user code runs in here except the channel
``params`` callables, evaluated at every join so that a rejoin sends the
application's latest state.

The behaviour follows the official JS client (npm ``phoenix`` 1.8.16, see
``js-client-behaviour.md``): one ref counter per socket; a channel accepts a
message when the topic matches and the join ref is empty or its own;
heartbeats every ``heartbeat_interval``, and a missing reply within the same
interval closes the connection as dead; reconnects follow
``reconnect_after(tries)`` and errored channels rejoin when the socket opens
again (:mod:`._channel_machine`); pushes made while a channel is not joined
wait in its buffer and go out after the next successful join.

The connection is a small state machine of its own, read off two fields:
``_conn`` (None, or a connection that is connecting or open) and
``_wanted`` (``connect`` called, no ``disconnect`` since); see
:attr:`SocketCore.connection_state`.
"""

from __future__ import annotations

import random
from typing import Any

from ..errors import UsageError
from ..protocol.messages import PHX_ERROR, PHX_LEAVE, Message, Ref
from ._actions import Action, Close, Closed, Deliver, Errored, Open, Opened, Pong, Received, Send
from ._channel_machine import EMPTY, ChannelCore, ChannelState
from ._timers import Backoff, Timers
from .codec import Codec, Prepared, codec_for
from .options import SocketOptions

__all__ = ["SocketCore"]


_RNG = random.Random()  # shared: a Random holds 2.5 KB of state
_DEFAULTS = SocketOptions()


class _Conn:
    __slots__ = ("id", "open", "skip_heartbeat")

    def __init__(self, conn_id: int) -> None:
        self.id = conn_id
        self.open = False
        self.skip_heartbeat = False


class SocketCore:
    """The connection, the heartbeat, the reconnects and every channel of one socket."""

    def __init__(self, options: SocketOptions = _DEFAULTS) -> None:
        self.options = options
        self.codec: Codec = codec_for(options.vsn)
        self.timeout = options.timeout
        self.heartbeat_interval = options.heartbeat_interval
        self.rejoin_after = options.rejoin_after
        self.jitter = options.jitter
        self.max_buffered_pushes = options.max_buffered_pushes
        self.report_messages = False
        self.established_connections = 0
        self._rng = options.rng or _RNG
        self._ref = 0
        self._next_conn = 0
        self._conn: _Conn | None = None
        self._wanted = False
        self._actions: list[Action] = []
        self.timers = Timers()
        self._send_buffer: list[tuple[Ref, Ref, str, str, Prepared, ChannelCore | None]] = []
        self._channels: dict[str, list[ChannelCore]] = {}
        self._pending_heartbeat: str | None = None
        self._pings: dict[str, float] = {}
        self._reconnect = Backoff(
            self.timers, "reconnect", options.reconnect_after, self._reconnect_fired, self.jittered
        )

    # -- the driver's side ----------------------------------------------------------------

    def take_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def advance(self, now: float) -> None:
        """Run every timer due at ``now``."""
        while (fire := self.timers.pop_due(now)) is not None:
            fire(now)

    def transport_opened(self, now: float, conn_id: int, *, skip_heartbeat: bool = False) -> None:
        conn = self._conn
        if conn is None or conn.id != conn_id:
            return
        conn.open = True
        conn.skip_heartbeat = skip_heartbeat
        self.established_connections += 1
        self.emit(Opened(conn_id))
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
            self.emit(Errored(conn_id, error))
            for channel in self._all_channels():
                channel._rejoin.reset()
            self._error_channels(now, "connection_error")
        self._error_channels(now, "connection_closed")
        if self._wanted:
            self._reconnect.schedule(now)
        self.emit(Closed(conn_id, code, reason))

    def received(self, now: float, conn_id: int, message: Message) -> None:
        conn = self._conn
        if conn is None or conn.id != conn_id or not conn.open:
            return
        ref = message.ref
        if ref is not None and ref == self._pending_heartbeat:
            self._clear_heartbeats()
            self.timers.set("heartbeat", now + self.heartbeat_interval, self._send_heartbeat)
        for channel in tuple(self._channels.get(message.topic, ())):
            if channel.is_member(message):
                channel._trigger(now, message)
        if self.report_messages:
            self.emit(Received(message))
        if ref is not None and type(ref) is str and ref in self._pings:
            self.emit(Pong(ref, now - self._pings.pop(ref)))

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
        self.emit(Close(conn.id, code, reason))
        if was_open:
            self._error_channels(now, "connection_closed")
        self.emit(Closed(conn.id, code, reason))

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
        self.push_frame(None, ref, "phoenix", "heartbeat", EMPTY, None)
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

    def emit(self, action: Action) -> None:
        self._actions.append(action)

    def jittered(self, delay: float) -> float:
        if not self.jitter:
            return delay
        return delay * (1.0 + self._rng.uniform(-self.jitter, self.jitter))

    def _all_channels(self) -> list[ChannelCore]:
        return [ch for chans in self._channels.values() for ch in chans]

    def has_channel(self, channel: ChannelCore) -> bool:
        return channel in self._channels.get(channel.topic, ())

    def remove_channel(self, channel: ChannelCore) -> None:
        chans = self._channels.get(channel.topic)
        if chans is not None and channel in chans:
            chans.remove(channel)
            if not chans:
                del self._channels[channel.topic]

    def _open(self) -> None:
        self._next_conn += 1
        self._conn = _Conn(self._next_conn)
        self.emit(Open(self._next_conn))

    def _drop_conn(self, conn: _Conn) -> None:
        conn.open = False
        self._conn = None
        self._clear_heartbeats()
        for ref in self._pings:
            self.emit(Pong(ref, None))
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
                self.emit(Deliver(channel, Message(None, None, channel.topic, PHX_ERROR, local)))
            elif state is ChannelState.LEAVING:
                channel._errored(now)

    def leave_open_topic(self, now: float, joining: ChannelCore) -> None:
        for other in tuple(self._channels.get(joining.topic, ())):
            if other is not joining and other.state in (ChannelState.JOINED, ChannelState.JOINING):
                other.leave(now)

    # heartbeats

    def _reset_heartbeat(self, now: float) -> None:
        if self._conn is None or self._conn.skip_heartbeat:
            return
        self._clear_heartbeats()
        self.timers.set("heartbeat", now + self.heartbeat_interval, self._send_heartbeat)

    def _clear_heartbeats(self) -> None:
        self.timers.cancel("heartbeat")
        self.timers.cancel("heartbeat_timeout")
        self._pending_heartbeat = None

    def _send_heartbeat(self, now: float) -> None:
        if not self.is_connected:
            return
        self._pending_heartbeat = ref = self.make_ref()
        self.push_frame(None, ref, "phoenix", "heartbeat", EMPTY, None)
        deadline = now + self.heartbeat_interval
        self.timers.set("heartbeat_timeout", deadline, self._heartbeat_timeout)

    def _heartbeat_timeout(self, now: float) -> None:
        conn = self._conn
        if self._pending_heartbeat is None or conn is None:
            return
        # No reply within a whole interval: the connection is presumed dead.
        self._drop_conn(conn)
        self.emit(Close(conn.id, 1000, "heartbeat timeout"))
        self._error_channels(now, "heartbeat_timeout")
        if self._wanted:
            self._reconnect.schedule(now)
        self.emit(Closed(conn.id, 1000, "heartbeat timeout"))

    # frames

    def push_frame(
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
        self.emit(Send(self._conn.id, data, binary))

    def _flush_send_buffer(self) -> None:
        buffered, self._send_buffer = self._send_buffer, []
        for join_ref, ref, topic, event, payload, channel in buffered:
            if channel is not None and _outdated(join_ref, channel):
                continue
            self._send(join_ref, ref, topic, event, payload, channel)


def _outdated(join_ref: Ref, channel: ChannelCore) -> bool:
    return join_ref != channel.join_ref or channel.state is ChannelState.CLOSED
