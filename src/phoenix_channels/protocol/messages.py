"""The three values that travel between a client and the server.

A :class:`Message` is what a client sends (and what the server pushes), a
:class:`Reply` answers one client message by its ``ref``, and a
:class:`Broadcast` is a PubSub publication that reaches every subscriber of a
topic. Refs are opaque: the server only compares and echoes them, so they
keep whatever JSON type the client used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "HEARTBEAT",
    "PHX_CLOSE",
    "PHX_ERROR",
    "PHX_JOIN",
    "PHX_LEAVE",
    "PHX_REPLY",
    "Broadcast",
    "Message",
    "Ref",
    "Reply",
]

Ref = str | int | None
"""A client-chosen reference: usually a decimal string, echoed as received."""

PHX_JOIN = "phx_join"
PHX_LEAVE = "phx_leave"
PHX_REPLY = "phx_reply"
PHX_ERROR = "phx_error"
PHX_CLOSE = "phx_close"
HEARTBEAT = "heartbeat"


@dataclass(frozen=True, slots=True)
class Message:
    """One client message, or one server push (``ref`` is then ``None``).

    ``payload`` is decoded JSON, or :class:`bytes` when it came in a binary frame.
    """

    join_ref: Ref
    ref: Ref
    topic: str
    event: str
    payload: Any


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to the client message whose ref is ``ref``."""

    join_ref: Ref
    ref: Ref
    topic: str
    status: str
    response: Any


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A publication on ``topic``: delivered to every subscriber of the topic.

    The payload must be a ``dict`` (sent as JSON) or ``bytes`` (sent as a
    binary frame to V2 clients). ``ref`` is ``None`` except on topics with
    history (:mod:`phoenix_channels.history`), where it carries the message's
    position, ``"<epoch>:<offset>"``, to the client in the frame's ref field.
    """

    topic: str
    event: str
    payload: Any
    ref: str | None = None

    def __post_init__(self) -> None:
        if type(self.topic) is not str or type(self.event) is not str:
            raise TypeError(
                f"Broadcast topic and event must be str, got {self.topic!r} and {self.event!r}"
            )
