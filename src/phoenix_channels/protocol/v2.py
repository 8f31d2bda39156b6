"""The V2 serializer (``vsn`` 2.0.x): JSON arrays in text frames, and binary frames.

Text: ``[join_ref, ref, topic, event, payload]``. Binary frames carry a
payload of raw bytes behind a header of one-byte lengths; the kind byte is 0
for a push, 1 for a reply, 2 for a broadcast, and clients may only send
pushes. Every length field is one byte, so topic, event, refs and status are
limited to 255 bytes in binary frames.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import DecodeError, EncodeError
from ._json import dumps
from .messages import PHX_REPLY, Broadcast, Message, Ref

__all__ = ["V2"]

_PUSH, _REPLY, _BROADCAST = 0, 1, 2


def _ref_bytes(name: str, value: Ref) -> bytes:
    if value is None:
        return b""
    data = str(value).encode()
    if len(data) > 255:
        raise EncodeError(f"{name} is {len(data)} bytes; binary frames allow at most 255")
    return data


def _field(name: str, value: str) -> bytes:
    data = value.encode()
    if len(data) > 255:
        raise EncodeError(f"{name} is {len(data)} bytes; binary frames allow at most 255")
    return data


class V2:
    """Encoder/decoder for protocol version 2.0.x (the JS client's default)."""

    vsn = "2.0.0"
    supports_binary = True

    @staticmethod
    def decode(data: bytes, binary: bool) -> Message:
        if binary:
            return V2._decode_binary(data)
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
        if not _is_ref(join_ref) or not _is_ref(ref):
            raise DecodeError("join_ref and ref must be strings, numbers or null")
        return Message(join_ref, ref, topic, event, payload)

    @staticmethod
    def _decode_binary(data: bytes) -> Message:
        if len(data) < 5:
            raise DecodeError(f"binary frame of {len(data)} bytes is shorter than its header")
        if data[0] != _PUSH:
            raise DecodeError(f"binary frame kind {data[0]} is not a push (0)")
        jlen, rlen, tlen, elen = data[1], data[2], data[3], data[4]
        end = 5 + jlen + rlen + tlen + elen
        if len(data) < end:
            raise DecodeError("binary frame is shorter than its header says")
        # Lengths count bytes, so slice the bytes before decoding each field.
        raw = data[5:end]
        a, b, c = jlen, jlen + rlen, jlen + rlen + tlen
        try:
            join_ref = raw[:a].decode()
            ref = raw[a:b].decode()
            topic = raw[b:c].decode()
            event = raw[c:].decode()
        except UnicodeDecodeError:
            raise DecodeError("binary frame header fields are not valid UTF-8") from None
        return Message(join_ref, ref, topic, event, bytes(data[end:]))

    @staticmethod
    def encode_push(
        join_ref: Ref, ref: Ref, topic: str, event: str, payload: Any
    ) -> tuple[bytes, bool]:
        if type(payload) is bytes:
            jr, t, e = (
                _ref_bytes("join_ref", join_ref),
                _field("topic", topic),
                _field("event", event),
            )
            return bytes((_PUSH, len(jr), len(t), len(e))) + jr + t + e + payload, True
        if not isinstance(payload, dict):
            raise EncodeError(f"push payload must be a dict or bytes, got {type(payload).__name__}")
        return dumps([join_ref, ref, topic, event, payload], payload), False

    @staticmethod
    def encode_reply(
        join_ref: Ref, ref: Ref, topic: str, status: str, response: Any
    ) -> tuple[bytes, bool]:
        if type(response) is bytes:
            jr, r = _ref_bytes("join_ref", join_ref), _ref_bytes("ref", ref)
            t, s = _field("topic", topic), _field("status", status)
            header = bytes((_REPLY, len(jr), len(r), len(t), len(s)))
            return header + jr + r + t + s + response, True
        return dumps(
            [join_ref, ref, topic, PHX_REPLY, {"response": response, "status": status}],
            response,
            "reply response",
        ), False

    @staticmethod
    def encode_broadcast(broadcast: Broadcast) -> tuple[bytes, bool]:
        payload = broadcast.payload
        if type(payload) is bytes:
            t, e = _field("topic", broadcast.topic), _field("event", broadcast.event)
            return bytes((_BROADCAST, len(t), len(e))) + t + e + payload, True
        if not isinstance(payload, dict):
            raise EncodeError(
                f"broadcast payload must be a dict or bytes, got {type(payload).__name__}"
            )
        return dumps(
            [None, broadcast.ref, broadcast.topic, broadcast.event, payload], payload
        ), False


def _is_ref(value: object) -> bool:
    return value is None or type(value) in (str, int)
