"""What the client's core asks its driver to do: the actions, as plain values.

The core (:mod:`._socket_machine` and :mod:`._channel_machine`) never does
I/O; each method call appends actions that the asyncio driver
(:mod:`phoenix_channels.client.socket`) takes with
:meth:`~._socket_machine.SocketCore.take_actions` and carries out:

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

This module is a leaf: the actions name the channel and the push they are
about through the small :class:`ChannelRef` and :class:`PushRef`
protocols, so it imports neither machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from ..protocol.messages import Message

__all__ = [
    "Action",
    "ChannelEnded",
    "ChannelRef",
    "Close",
    "Closed",
    "Deliver",
    "Errored",
    "Joined",
    "Open",
    "Opened",
    "Outcome",
    "Pong",
    "PushRef",
    "Received",
    "Send",
    "Settled",
]


class ChannelRef(Protocol):
    """What an action tells of its channel (a :class:`~._channel_machine.ChannelCore`)."""

    @property
    def topic(self) -> str: ...

    @property
    def owner(self) -> Any:
        """Whatever the driver attached to the channel (its :class:`~.channel.Channel`)."""


class PushRef(Protocol):
    """What an action tells of its push (a :class:`~._channel_machine.PushCore`)."""

    @property
    def event(self) -> str: ...

    @property
    def ref(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Open:
    """Start transport connection number ``conn``."""

    conn: int


@dataclass(frozen=True, slots=True)
class Close:
    """Close connection ``conn``; its later events are ignored."""

    conn: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Send:
    """Write one frame on connection ``conn``."""

    conn: int
    data: bytes
    binary: bool


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand ``message`` to the listeners of ``channel``."""

    channel: ChannelRef
    message: Message


class Outcome(StrEnum):
    """How a push ended: a reply came, its timeout passed, or its channel closed first."""

    REPLY = "reply"
    TIMEOUT = "timeout"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Settled:
    """A push has its outcome; resolve what ``owner`` (the driver's object) awaits."""

    push: PushRef
    owner: Any
    outcome: Outcome
    status: str | None
    response: Any


@dataclass(frozen=True, slots=True)
class Joined:
    """``channel`` joined (or rejoined): tell its ``on_join`` listeners."""

    channel: ChannelRef
    response: Any


@dataclass(frozen=True, slots=True)
class ChannelEnded:
    """``channel`` ended for good: end its event iterators."""

    channel: ChannelRef
    reason: str


@dataclass(frozen=True, slots=True)
class Opened:
    """Connection ``conn`` opened: call the socket's ``on_open`` listeners."""

    conn: int


@dataclass(frozen=True, slots=True)
class Closed:
    """Connection ``conn`` closed: call the socket's ``on_close`` listeners."""

    conn: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Errored:
    """Connection ``conn`` failed: call the socket's ``on_error`` listeners."""

    conn: int
    error: BaseException


@dataclass(frozen=True, slots=True)
class Received:
    """A message arrived (only when someone listens with ``on_message``)."""

    message: Message


@dataclass(frozen=True, slots=True)
class Pong:
    """The reply to a ``ping``, with its round trip (None: the connection closed first)."""

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
