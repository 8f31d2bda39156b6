"""Every exception the server side of phoenix-channels raises, in one place.

Modules that raise one of these may re-export it under its old home (e.g.
``presence.NotTrackedError``); this module is where it is defined. Not
here: the client's own errors (:mod:`phoenix_channels.client`), the test
helpers' (:mod:`phoenix_channels.testing`), and errors private to a PubSub
adapter, which never leave it.

The hierarchy separates what a remote peer did wrong (a malformed frame, a
bad handshake) from what the application did wrong (a push before join, a
payload that cannot be encoded, a bad option), so that callers can tell a
hostile client from a bug in their own code::

    PhoenixChannelsError
    ├── RemoteError                 the peer broke the protocol
    │   ├── DecodeError             a frame that no serializer accepts
    │   │   └── MalformedMessage    bytes from a PubSub engine that are not a message
    │   ├── WebSocketError          RFC 6455 framing broken (carries a close code)
    │   │   └── FrameError          ... with the complete frames that came before it
    │   ├── ReplicationError        a tracker message from another node did not decode
    │   └── TokenError              a token did not verify
    │       ├── InvalidToken        forged, tampered, wrong salt or secret, garbage
    │       ├── ExpiredToken        older than its max age
    │       └── MissingToken        no token at all
    ├── UsageError                  the application misused the API
    │   ├── InvalidTransition       a state machine asked for a move its table lacks
    │   ├── ConfigurationError      invalid option or route, found at startup
    │   ├── EncodeError             a value that cannot go on the wire
    │   ├── NotJoinedError          push/broadcast/socket_ref before the join finished
    │   ├── AlreadyTrackedError     presence track of a key already tracked
    │   └── NotTrackedError         presence update of a key not tracked
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
    "AlreadyTrackedError",
    "BroadcastError",
    "ConfigurationError",
    "ConnectionRefused",
    "DecodeError",
    "EncodeError",
    "ExpiredToken",
    "FrameError",
    "InvalidToken",
    "InvalidTransition",
    "JoinError",
    "MalformedMessage",
    "MissingToken",
    "NotJoinedError",
    "NotTrackedError",
    "PhoenixChannelsError",
    "RemoteError",
    "ReplicationError",
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


class MalformedMessage(DecodeError):
    """Bytes from the engine that are not a message of this format (or of this version)."""


class WebSocketError(RemoteError):
    """A WebSocket framing rule was broken; ``code`` is the close code to send."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (close code {code})")
        self.code = code
        self.reason = reason


class FrameError(WebSocketError):
    """A violation, and the complete frames that came before it in the same data.

    Deliver ``frames`` first, then fail the connection with ``code``: a client
    that sent a good message and then a bad frame gets the answer to the
    good one (Autobahn|Testsuite checks this).
    """

    def __init__(self, error: WebSocketError, frames: list[tuple[int, bytes]]) -> None:
        super().__init__(error.code, error.reason)
        self.frames = frames


class ReplicationError(RemoteError):
    """A tracker message from another node could not be decoded (it is dropped)."""


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


class InvalidTransition(UsageError):
    """A state machine was asked for a move its transition table does not have.

    The message names the machine, the event and the state; see
    :mod:`phoenix_channels.protocol.transitions`.
    """


class ConfigurationError(UsageError):
    """An option, route or setting is invalid; raised when it is defined."""


class EncodeError(UsageError):
    """A value cannot be encoded for the wire (wrong type, field too long)."""


class NotJoinedError(UsageError):
    """The channel is not joined yet (or any more) for this operation."""


class AlreadyTrackedError(UsageError):
    """``track`` of an ``(owner, topic, key)`` that is already tracked; use ``update``."""


class NotTrackedError(UsageError):
    """``update`` of an ``(owner, topic, key)`` that is not tracked."""


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
