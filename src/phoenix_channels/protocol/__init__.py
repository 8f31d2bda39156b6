"""The Phoenix wire protocol without I/O: messages, serializers, version negotiation.

A serializer turns bytes into a :class:`Message` (``decode``) and values into
``(data, is_binary)`` pairs (``encode_push``, ``encode_reply``,
``encode_broadcast``). Which serializer a connection uses is decided once, by
the ``vsn`` query parameter the client sent (:func:`serializer_for`).
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from .messages import (
    HEARTBEAT,
    PHX_CLOSE,
    PHX_ERROR,
    PHX_JOIN,
    PHX_LEAVE,
    PHX_REPLY,
    Broadcast,
    Message,
    Ref,
    Reply,
)
from .v1 import V1
from .v2 import V2


class _Raw:
    """The "serializer" of raw sockets: frames are bytes, nothing is decoded or encoded."""

    vsn = "raw"
    supports_binary = True

    @staticmethod
    def _refuse(*args: Any) -> Any:
        raise TypeError("raw sockets send bytes with RawSocket.send; no Phoenix messages")

    decode = encode_push = encode_reply = encode_broadcast = _refuse


RAW: Serializer = _Raw()

__all__ = [
    "HEARTBEAT",
    "PHX_CLOSE",
    "PHX_ERROR",
    "PHX_JOIN",
    "PHX_LEAVE",
    "PHX_REPLY",
    "RAW",
    "V1",
    "V2",
    "Broadcast",
    "Message",
    "Ref",
    "Reply",
    "Serializer",
    "serializer_for",
]


class Serializer(Protocol):
    """What a serializer provides. ``V1`` and ``V2`` are the two built in."""

    vsn: str
    supports_binary: bool

    def decode(self, data: bytes, binary: bool) -> Message: ...

    def encode_push(
        self, join_ref: Ref, ref: Ref, topic: str, event: str, payload: Any
    ) -> tuple[bytes, bool]: ...

    def encode_reply(
        self, join_ref: Ref, ref: Ref, topic: str, status: str, response: Any
    ) -> tuple[bytes, bool]: ...

    def encode_broadcast(self, broadcast: Broadcast) -> tuple[bytes, bool]: ...


# SemVer: MAJOR.MINOR.PATCH with optional -pre and +build parts.
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
)

# (major, minor) -> serializer; Phoenix matches "~> 1.0.0" and "~> 2.0.0".
_TABLE: dict[tuple[int, int], Serializer] = {(1, 0): V1, (2, 0): V2}


def serializer_for(vsn: str | None) -> Serializer | None:
    """The serializer for a client's ``vsn``, or ``None`` if it is invalid or unsupported.

    A missing ``vsn`` means ``1.0.0``, as in Phoenix.
    """
    if vsn == "2.0.0":  # what the JS client sends: skip the parse
        return V2
    match = _SEMVER.match("1.0.0" if vsn is None else vsn)
    if match is None:
        return None
    major, minor = int(match[1]), int(match[2])
    # "~> 2.0.0" excludes pre-releases of 2.0.0 itself ("2.0.0-rc" < "2.0.0").
    if match[3] == "0" and "-" in (vsn or "").split("+")[0]:
        return None
    return _TABLE.get((major, minor))
