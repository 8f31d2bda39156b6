"""Frames for long-poll clients: JSON text only.

Server-to-client binary frames cannot travel over long polling (the JS
client decodes every long-poll message as JSON text). Rather than fail the
whole poll as Phoenix does, a binary *reply* becomes an error reply saying
so, a binary *push* raises :class:`~phoenix_channels.errors.EncodeError` in
the pushing code, and a binary *broadcast* skips long-poll subscribers with
a warning.
"""

from __future__ import annotations

import logging
from typing import Any

from ...errors import EncodeError
from ...protocol import V1, V2, Broadcast, Ref
from ..base import FrameEncoder

__all__ = ["ENCODERS", "LongPollEncoder"]

log = logging.getLogger("phoenix_channels.longpoll")

_BINARY_REPLY = {"reason": "binary payloads cannot be sent over long polling"}


def _text(data: bytes, binary: bool) -> str:
    if binary:
        raise EncodeError(
            "binary payloads cannot be sent over long polling; send JSON to "
            "long-poll clients (socket.transport.name == 'longpoll')"
        )
    return data.decode()


class LongPollEncoder(FrameEncoder):
    """Frames as JSON text; binary payloads handled as the module docstring says."""

    __slots__ = ()

    def reply(self, join_ref: Ref, ref: Ref, topic: str, status: str, response: Any) -> Any:
        if type(response) is bytes:
            log.warning("binary reply on %r turned into an error reply: the client polls", topic)
            status, response = "error", _BINARY_REPLY
        return super().reply(join_ref, ref, topic, status, response)

    def broadcast(self, broadcast: Broadcast) -> Any:
        if type(broadcast.payload) is bytes:
            log.warning(
                "binary broadcast %r on %r not sent to long-poll clients",
                broadcast.event,
                broadcast.topic,
            )
            return None
        return super().broadcast(broadcast)


#: One shared encoder per serializer version.
ENCODERS: dict[str, FrameEncoder] = {s.vsn: LongPollEncoder("longpoll", s, _text) for s in (V1, V2)}
