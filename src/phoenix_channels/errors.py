"""Every exception phoenix-channels raises, in one place.

The hierarchy separates what a remote peer did wrong (a malformed frame, a
bad handshake) from what the application did wrong (a push before join, a
payload that cannot be encoded, a bad option), so that callers can tell a
hostile client from a bug in their own code::

    PhoenixChannelsError
    ├── RemoteError                 the peer broke the protocol
    │   ├── DecodeError             a frame that no serializer accepts
    │   ├── WebSocketError          RFC 6455 framing broken (carries a close code)
    │   └── TokenError              a token did not verify
    │       ├── InvalidToken        forged, tampered, wrong salt or secret, garbage
    │       ├── ExpiredToken        older than its max age
    │       └── MissingToken        no token at all
    ├── UsageError                  the application misused the API
    │   ├── ConfigurationError      invalid option or route, found at startup
    │   ├── EncodeError             a value that cannot go on the wire
    │   └── NotJoinedError          push/broadcast/socket_ref before the join finished
    ├── JoinError                   raised by ``Channel.join`` to refuse a join
    ├── ConnectionRefused           ``Socket.connect`` said no (HTTP 403 on the wire)
    └── BroadcastError              the PubSub adapter could not publish

``JoinError`` is not a failure of the library: it is how a channel says "no"
and carries the response the client receives. ``ConnectionRefused`` is the
same for a socket: ``ChannelTest.connect`` raises it when ``connect`` refuses,
and the client raises its subclass
(:class:`phoenix_channels.client.ConnectionRefused`) when a server answers 403.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BroadcastError",
    "ConfigurationError",
    "ConnectionRefused",
    "DecodeError",
    "EncodeError",
    "ExpiredToken",
    "InvalidToken",
    "JoinError",
    "MissingToken",
    "NotJoinedError",
    "PhoenixChannelsError",
    "RemoteError",
    "TokenError",
    "UsageError",
    "WebSocketError",
]


class PhoenixChannelsError(Exception):
    """Base class of every error raised by phoenix-channels."""


class RemoteError(PhoenixChannelsError):
    """The remote peer sent something the protocol does not allow."""


class DecodeError(RemoteError):
    """A frame could not be decoded into a message.

    The connection that sent it is closed (code 1011, or 1007 for invalid
    UTF-8); no other connection or channel is affected.
    """


class WebSocketError(RemoteError):
    """A WebSocket framing rule was broken; ``code`` is the close code to send."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (close code {code})")
        self.code = code
        self.reason = reason


class TokenError(RemoteError):
    """A token did not verify (see :mod:`phoenix_channels.token`)."""


class InvalidToken(TokenError):
    """The token is not one we signed with this secret and salt (or it was altered)."""


class ExpiredToken(TokenError):
    """The token is genuine but older than its max age."""


class MissingToken(TokenError):
    """No token was given."""


class UsageError(PhoenixChannelsError):
    """The application used the API in a way it does not support."""


class ConfigurationError(UsageError):
    """An option, route or setting is invalid; raised when it is defined."""


class EncodeError(UsageError):
    """A value cannot be encoded for the wire (wrong type, field too long)."""


class NotJoinedError(UsageError):
    """The channel is not joined yet (or any more) for this operation."""


class JoinError(PhoenixChannelsError):
    """Raise from ``Channel.join`` to refuse the join.

    ``response`` is sent to the client as the error reply's response, e.g.
    ``raise JoinError({"reason": "unauthorized"})`` gives
    ``{"status": "error", "response": {"reason": "unauthorized"}}``.
    """

    def __init__(self, response: dict[str, Any] | None = None) -> None:
        got: object = response  # callers without a type checker pass anything
        if got is not None and type(got) is not dict:
            example = f"{{'reason': {got!r}}}" if type(got) is str else "{'reason': ...}"
            raise UsageError(
                f"JoinError takes a dict, the error reply the client receives; got "
                f"{got!r:.80}: write JoinError({example})"
            )
        self.response: Any = {} if response is None else response
        super().__init__(f"join refused: {self.response!r}")


class ConnectionRefused(PhoenixChannelsError):
    """The server refused a connection: ``Socket.connect`` did not return True.

    A real endpoint answers such a handshake with HTTP 403; ``ChannelTest.connect``
    raises this; the client raises its subclass with the URL and HTTP status.
    """


class BroadcastError(PhoenixChannelsError):
    """The PubSub adapter failed to publish a broadcast."""
