"""The V1 serializer (``vsn`` 1.0.x, or no ``vsn``): one JSON object per text frame.

Clients send ``{"topic", "event", "payload", "ref"}`` and optionally
``"join_ref"``; the server never emits ``join_ref``. V1 has no binary frames.
Keys are written in the order Phoenix writes them (sorted).
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import DecodeError, EncodeError
from ._json import dumps
from .messages import PHX_REPLY, Broadcast, Message, Ref

__all__ = ["V1"]

_REQUIRED = ("topic", "event", "payload", "ref")


class V1:
    """Encoder/decoder for protocol version 1.0.x."""

    vsn = "1.0.0"
    supports_binary = False

    @staticmethod
    def decode(data: bytes, binary: bool) -> Message:
        if binary:
            raise DecodeError("binary frames are not part of protocol version 1.0.0")
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"text frame is not valid JSON: {exc}") from None
        if type(value) is not dict:
            raise DecodeError("a V1 text frame must be a JSON object")
        missing = [key for key in _REQUIRED if key not in value]
        if missing:
            raise DecodeError(f"V1 message is missing {', '.join(missing)}")
        topic, event = value["topic"], value["event"]
        if type(topic) is not str or type(event) is not str:
            raise DecodeError("topic and event must be strings")
        ref, join_ref = value["ref"], value.get("join_ref")
        for r in (ref, join_ref):
            if r is not None and type(r) not in (str, int):
                raise DecodeError("join_ref and ref must be strings, numbers or null")
        return Message(join_ref, ref, topic, event, value["payload"])

    @staticmethod
    def encode_push(
        join_ref: Ref, ref: Ref, topic: str, event: str, payload: Any
    ) -> tuple[bytes, bool]:
        if type(payload) is bytes:
            raise EncodeError("protocol version 1.0.0 cannot carry binary payloads")
        return dumps(
            {"event": event, "payload": payload, "ref": ref, "topic": topic}, payload
        ), False

    @staticmethod
    def encode_reply(
        join_ref: Ref, ref: Ref, topic: str, status: str, response: Any
    ) -> tuple[bytes, bool]:
        if type(response) is bytes:
            raise EncodeError("protocol version 1.0.0 cannot carry binary payloads")
        payload = {"response": response, "status": status}
        return dumps(
            {"event": PHX_REPLY, "payload": payload, "ref": ref, "topic": topic},
            response,
            "reply response",
        ), False

    @staticmethod
    def encode_broadcast(broadcast: Broadcast) -> tuple[bytes, bool]:
        if type(broadcast.payload) is bytes:
            raise EncodeError("protocol version 1.0.0 cannot carry binary payloads")
        return dumps(
            {
                "event": broadcast.event,
                "payload": broadcast.payload,
                "ref": broadcast.ref,
                "topic": broadcast.topic,
            },
            broadcast.payload,
        ), False
