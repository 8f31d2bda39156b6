"""The node-to-node message format of the cluster adapters (Redis, NATS): versioned, compact.

Every message a node publishes on the engine is one byte string::

    version (1 byte) | kind (1 byte) | len(node) (1 byte) | node (UTF-8) | body (MessagePack)

* ``version`` is :data:`VERSION`. A node drops (and logs) a message of any
  other version, so a rolling upgrade to a new format never feeds a node
  bytes it would misread.
* ``kind`` is :data:`BROADCAST` (every node but ``node``, the sender, which
  has already delivered locally) or :data:`DIRECT` (only the node named
  ``node``). These are Phoenix's ``except`` and ``only`` modes.
* ``kind`` :data:`POSITIONED` is a broadcast on a topic with history, made
  by the history store's script on the engine: the header is followed by
  ``len(position) (1 byte) | position (ASCII)`` and the body is
  ``[topic, broadcast, token]``. Every node delivers it, the sender
  included (its own delivery comes from the engine, so every node sees one
  order); ``token`` (an int or nil) lets the sender skip the subscriber of a
  ``broadcast_from``. See :func:`decode_positioned`.
* The node name sits in a fixed-place header so a receiver can drop its own
  echo (Redis delivers a publisher's messages back to it) or a direct
  message meant for another node *without* decoding the body.
* ``body`` is MessagePack of ``[topic, message]``. MessagePack keeps what
  JSON would lose: ``bytes`` stay bytes, ``str`` stays str, integer map keys
  stay integers. Three extension types carry the rest exactly:
  :class:`~phoenix_channels.Broadcast` (code 1; a fourth field, its
  position, only when it has one), ``tuple`` (code 2, so a
  tuple stays a tuple and can be a map key) and integers beyond 64 bits
  (code 3). Subclasses of the plain types (an ``IntEnum``, an
  ``OrderedDict``) travel as their base type; a ``UUID`` or an ``Enum``
  member travels as the JSON sent to clients has it (``str``, the value). Anything else (a set, a
  datetime, an object) is refused with :class:`~phoenix_channels.EncodeError`
  when the message is published, never pickled.

Decoding bytes from the engine never raises anything but :class:`MalformedMessage`.
This module does no I/O.
"""

from __future__ import annotations

import enum
import uuid
from typing import Any

import msgpack

from ..errors import EncodeError, MalformedMessage
from ..protocol.messages import Broadcast

__all__ = [
    "BROADCAST",
    "DIRECT",
    "POSITIONED",
    "VERSION",
    "MalformedMessage",
    "decode",
    "decode_body",
    "decode_positioned",
    "decode_value",
    "encode",
    "encode_value",
    "positioned_head",
]

VERSION = 1
BROADCAST = 0
DIRECT = 1
POSITIONED = 2

_EXT_BROADCAST = 1
_EXT_TUPLE = 2
_EXT_BIGINT = 3
_MAX_NODE = 255


def _default(value: Any) -> Any:
    # Called for every value whose type is not exactly a MessagePack type
    # (strict_types), and for ints out of the 64-bit range.
    cls = type(value)
    if cls is Broadcast:
        fields = [value.topic, value.event, value.payload]
        if value.ref is not None:  # a position (history topics): a fourth field
            fields.append(value.ref)
        return msgpack.ExtType(_EXT_BROADCAST, _pack(fields))
    if cls is int:
        size = (value.bit_length() + 8) // 8
        return msgpack.ExtType(_EXT_BIGINT, value.to_bytes(size, "big", signed=True))
    if isinstance(value, tuple):
        return msgpack.ExtType(_EXT_TUPLE, _pack(list(value)))
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    # As the JSON sent to clients has them (protocol/_json.py: one payload rule).
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(
        f"a {cls.__module__}.{cls.__qualname__} cannot be sent to other nodes; "
        "use dict, list, tuple, str, bytes, int, float, bool, None or Broadcast"
    )


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, default=_default, use_bin_type=True, strict_types=True)
    return packed


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_BROADCAST:
        fields = _unpack(data)
        if type(fields) is not list or not 3 <= len(fields) <= 4:
            raise ValueError("a Broadcast must be [topic, event, payload] or [..., position]")
        if len(fields) == 4 and type(fields[3]) is not str:
            raise ValueError("a Broadcast position must be a str")
        return Broadcast(*fields)  # checks that topic and event are str
    if code == _EXT_TUPLE:
        items = _unpack(data)
        if type(items) is not list:
            raise ValueError("a tuple must be packed as an array")
        return tuple(items)
    if code == _EXT_BIGINT:
        if not data:
            raise ValueError("an empty big integer")
        return int.from_bytes(data, "big", signed=True)
    raise ValueError(f"unknown extension type {code}")


def _unpack(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(
        data, raw=False, strict_map_key=False, ext_hook=_ext_hook, use_list=True, timestamp=0
    )


def encode_value(value: Any) -> bytes:
    """MessagePack of ``value`` with this module's extension types."""
    try:
        return _pack(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(str(exc)) from None


def decode_value(data: bytes | memoryview) -> Any:
    """The inverse of :func:`encode_value`; raises :class:`MalformedMessage`."""
    try:
        return _unpack(data)
    except Exception as exc:  # msgpack raises many types for bad input; one error here
        raise MalformedMessage(f"undecodable body: {type(exc).__name__}: {exc}") from None


def encode(kind: int, node: bytes, topic: str, message: Any) -> bytes:
    """One message for the engine; ``node`` is the sender (BROADCAST) or the target (DIRECT)."""
    if len(node) > _MAX_NODE:
        raise EncodeError(f"node name is {len(node)} bytes long; at most {_MAX_NODE} are allowed")
    return bytes((VERSION, kind, len(node))) + node + encode_value([topic, message])


def decode(data: bytes, me: bytes) -> tuple[str, Any] | None:
    """``(topic, message)`` to deliver on node ``me``, or None if the message is not for it.

    Not for ``me``: its own broadcast coming back, or a direct message for
    another node; the body is not decoded then. Raises :class:`MalformedMessage`.
    """
    if len(data) < 3:
        raise MalformedMessage(f"{len(data)} bytes is too short for a message header")
    if data[0] != VERSION:
        raise MalformedMessage(
            f"message format version {data[0]}, this node reads version {VERSION} "
            "(are nodes of different releases sharing the engine?)"
        )
    kind = data[1]
    end = 3 + data[2]
    if len(data) < end:
        raise MalformedMessage("the node name runs past the end of the message")
    node = data[3:end]
    if kind == BROADCAST:
        if node == me:
            return None
    elif kind == DIRECT:
        if node != me:
            return None
    elif kind == POSITIONED:
        raise MalformedMessage("a positioned message must be read with decode_positioned")
    else:
        raise MalformedMessage(f"unknown message kind {kind}")
    body = decode_value(memoryview(data)[end:])
    if type(body) is not list or len(body) != 2 or type(body[0]) is not str:
        raise MalformedMessage("the body must be [topic, message] with a str topic")
    return body[0], body[1]


def positioned_head(node: bytes) -> bytes:
    """The header of a :data:`POSITIONED` message from ``node`` (the script appends the rest)."""
    if len(node) > _MAX_NODE:
        raise EncodeError(f"node name is {len(node)} bytes long; at most {_MAX_NODE} are allowed")
    return bytes((VERSION, POSITIONED, len(node))) + node


def decode_positioned(data: bytes, me: bytes) -> tuple[str, Broadcast, int | None]:
    """``(topic, broadcast with its position in ref, token)`` of a :data:`POSITIONED` message.

    ``token`` is None unless ``me`` sent it. Raises :class:`MalformedMessage`.
    """
    if len(data) < 4 or data[0] != VERSION or data[1] != POSITIONED:
        raise MalformedMessage("not a positioned message of this version")
    end = 3 + data[2]
    if len(data) < end + 1:
        raise MalformedMessage("the node name runs past the end of the message")
    node = data[3:end]
    stop = end + 1 + data[end]
    if len(data) < stop:
        raise MalformedMessage("the position runs past the end of the message")
    try:
        position = data[end + 1 : stop].decode("ascii")
    except UnicodeDecodeError:
        raise MalformedMessage("the position is not ASCII") from None
    topic, broadcast, token = decode_body(memoryview(data)[stop:])
    if node != me:
        token = None
    return topic, Broadcast(broadcast.topic, broadcast.event, broadcast.payload, position), token


def decode_body(data: bytes | memoryview) -> tuple[str, Broadcast, int | None]:
    """``[topic, broadcast, token]``: the body of a positioned message (and of a stored one)."""
    body = decode_value(data)
    if (
        type(body) is not list
        or len(body) != 3
        or type(body[0]) is not str
        or type(body[1]) is not Broadcast
        or (body[2] is not None and type(body[2]) is not int)
    ):
        raise MalformedMessage("the body must be [topic, Broadcast, token]")
    return body[0], body[1], body[2]
