"""The client's side of the wire: encode what a client sends, decode what a server sends.

The server's serializers (:mod:`phoenix_channels.protocol`) go the other way
(decode client frames, encode server frames), so the two meet on the wire
and the tests check each against the other. Both share the
:class:`~phoenix_channels.protocol.Message` value and the event names.

A payload is *prepared* once (JSON-encoded, or kept as bytes for a binary
frame) when the application pushes it, so a payload that cannot be encoded
fails in the caller, and a push that is sent again after a rejoin (with a new
ref) is not encoded again: :meth:`Codec.encode` only splices the refs, topic
and event around the prepared bytes.

* V2 (``vsn`` 2.0.x, the default): text frames ``[join_ref, ref, topic, event,
  payload]``; a ``bytes`` payload goes in a binary frame (kind 0, a push).
  From the server: text frames, and binary frames of kind 0 (push, no ref),
  1 (reply: the status in the header, the response is the rest) and 2
  (broadcast). A reply's binary response is delivered as ``bytes``.
* V1 (``vsn`` 1.0.x): one JSON object per text frame, no binary frames.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from ..errors import ConfigurationError, DecodeError, EncodeError
from ..protocol.messages import PHX_REPLY, Message, Ref

__all__ = ["V1_CODEC", "V2_CODEC", "Codec", "Prepared", "V1Codec", "V2Codec", "codec_for"]

Prepared = tuple[bytes, bool]
"""A payload ready for the wire: ``(json_bytes, False)`` or ``(raw_bytes, True)``."""

_PUSH, _REPLY, _BROADCAST = 0, 1, 2


class Codec(Protocol):
    """What the client needs from a protocol version."""

    vsn: str
    supports_binary: bool

    def prepare(self, topic: str, event: str, payload: Any) -> Prepared:
        """Check and encode a payload once; raises :class:`EncodeError`."""
        ...

    def encode(
        self, join_ref: Ref, ref: Ref, topic: str, event: str, payload: Prepared
    ) -> tuple[bytes, bool]:
        """A whole frame: ``(data, is_binary)``. Cannot fail for a prepared payload."""
        ...

    def decode(self, data: bytes | str, binary: bool) -> Message:
        """A server frame as a :class:`Message`; raises :class:`DecodeError`."""
        ...


def _json(payload: Any) -> bytes:
    try:
        data = orjson.dumps(payload)
    except TypeError as exc:  # orjson.JSONEncodeError subclasses TypeError
        raise EncodeError(f"payload cannot be encoded as JSON: {exc}") from None
    # orjson's result keeps a 4 KiB allocation however short it is; a prepared payload
    # can live as long as its channel (the join params), so small ones are copied.
    return bytes(memoryview(data)) if len(data) < 1024 else data


def _binary_field(name: str, value: str) -> None:
    size = len(value.encode())
    if size > 255:
        raise EncodeError(f"{name} is {size} bytes; binary frames allow at most 255")


def _as_bytes(payload: Any) -> bytes | None:
    if type(payload) is bytes:
        return payload
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    return None


def _ref_bytes(value: Ref) -> bytes:
    return b"" if value is None else str(value).encode()


def _check_ref(value: object) -> None:
    if value is not None and type(value) not in (str, int):
        raise DecodeError("join_ref and ref must be strings, numbers or null")


class V2Codec:
    """Protocol version 2.0.0: JSON arrays and binary frames (what the JS client speaks)."""

    vsn = "2.0.0"
    supports_binary = True

    def prepare(self, topic: str, event: str, payload: Any) -> Prepared:
        raw = _as_bytes(payload)
        if raw is not None:
            _binary_field("topic", topic)
            _binary_field("event", event)
            return raw, True
        return _json(payload), False

    def encode(
        self, join_ref: Ref, ref: Ref, topic: str, event: str, payload: Prepared
    ) -> tuple[bytes, bool]:
        data, binary = payload
        if binary:
            jr, r, t, e = _ref_bytes(join_ref), _ref_bytes(ref), topic.encode(), event.encode()
            header = bytes((_PUSH, len(jr), len(r), len(t), len(e)))
            return b"".join((header, jr, r, t, e, data)), True
        head = orjson.dumps([join_ref, ref, topic, event])
        return b"".join((head[:-1], b",", data, b"]")), False

    def decode(self, data: bytes | str, binary: bool) -> Message:
        if binary:
            if not isinstance(data, bytes | bytearray | memoryview):
                raise DecodeError("a binary frame must be bytes")
            return _decode_binary(bytes(data))
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"text frame is not valid JSON: {exc}") from None
        if type(value) is not list or len(value) < 5:
            raise DecodeError(
                "a V2 text frame must be a JSON array [join_ref, ref, topic, event, payload]"
            )
        join_ref, ref, topic, event, payload = value[:5]
        if type(topic) is not str or type(event) is not str:
            raise DecodeError("topic and event must be strings")
        _check_ref(join_ref)
        _check_ref(ref)
        return Message(join_ref, ref, topic, event, payload)


def _decode_binary(data: bytes) -> Message:
    if not data:
        raise DecodeError("empty binary frame")
    kind = data[0]
    # Each kind has a fixed header of one-byte lengths; the fields follow in order.
    names: tuple[str, ...]
    if kind == _PUSH:
        names = ("join_ref", "topic", "event")
    elif kind == _REPLY:
        names = ("join_ref", "ref", "topic", "status")
    elif kind == _BROADCAST:
        names = ("topic", "event")
    else:
        raise DecodeError(f"binary frame kind {kind} is not a push (0), reply (1) or broadcast (2)")
    sizes = data[1 : 1 + len(names)]
    if len(sizes) < len(names):
        raise DecodeError(f"binary frame of {len(data)} bytes is shorter than its header")
    offset = 1 + len(names)
    fields: dict[str, str] = {}
    try:
        for name, size in zip(names, sizes, strict=True):
            end = offset + size
            if end > len(data):
                raise DecodeError("binary frame is shorter than its header says")
            fields[name] = data[offset:end].decode()
            offset = end
    except UnicodeDecodeError:
        raise DecodeError("binary frame header fields are not valid UTF-8") from None
    rest = data[offset:]
    # An empty join_ref or ref field means "none" (the server writes null as no bytes).
    join_ref = fields.get("join_ref") or None
    if kind == _PUSH:
        return Message(join_ref, None, fields["topic"], fields["event"], rest)
    if kind == _REPLY:
        payload = {"status": fields["status"], "response": rest}
        return Message(join_ref, fields["ref"] or None, fields["topic"], PHX_REPLY, payload)
    return Message(None, None, fields["topic"], fields["event"], rest)


class V1Codec:
    """Protocol version 1.0.0: one JSON object per frame, no binary payloads.

    The client sends ``join_ref`` too (the server reads it when present, and
    uses it to drop messages meant for an earlier join); servers never send it.
    """

    vsn = "1.0.0"
    supports_binary = False

    def prepare(self, topic: str, event: str, payload: Any) -> Prepared:
        if _as_bytes(payload) is not None:
            raise EncodeError("protocol version 1.0.0 cannot carry binary payloads; use vsn 2.0.0")
        return _json(payload), False

    def encode(
        self, join_ref: Ref, ref: Ref, topic: str, event: str, payload: Prepared
    ) -> tuple[bytes, bool]:
        d = orjson.dumps
        return b"".join(
            (
                b'{"topic":',
                d(topic),
                b',"event":',
                d(event),
                b',"payload":',
                payload[0],
                b',"ref":',
                d(ref),
                b',"join_ref":',
                d(join_ref),
                b"}",
            )
        ), False

    def decode(self, data: bytes | str, binary: bool) -> Message:
        if binary:
            raise DecodeError("binary frames are not part of protocol version 1.0.0")
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"text frame is not valid JSON: {exc}") from None
        if type(value) is not dict:
            raise DecodeError("a V1 text frame must be a JSON object")
        missing = [key for key in ("topic", "event", "payload", "ref") if key not in value]
        if missing:
            raise DecodeError(f"V1 message is missing {', '.join(missing)}")
        topic, event = value["topic"], value["event"]
        if type(topic) is not str or type(event) is not str:
            raise DecodeError("topic and event must be strings")
        ref, join_ref = value["ref"], value.get("join_ref")
        _check_ref(ref)
        _check_ref(join_ref)
        return Message(join_ref, ref, topic, event, value["payload"])


V1_CODEC = V1Codec()
V2_CODEC = V2Codec()


def codec_for(vsn: str) -> Codec:
    """The codec for a ``vsn`` the client will announce: ``1.0.x`` or ``2.0.x``."""
    parts = vsn.split(".")
    if len(parts) == 3 and parts[0] == "2" and parts[1] == "0":
        return V2_CODEC
    if len(parts) == 3 and parts[0] == "1" and parts[1] == "0":
        return V1_CODEC
    raise ConfigurationError(
        f"unsupported vsn {vsn!r}: the client speaks 1.0.x (V1) and 2.0.x (V2)"
    )
