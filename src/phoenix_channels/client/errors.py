"""What the client raises, inside the package's one exception hierarchy.

::

    PhoenixChannelsError
    └── ClientError                 something a Phoenix server or the network did to the client
        ├── ConnectError            no connection within the connect timeout (also ConnectionError)
        │   └── ConnectionRefused   the server answered the handshake with a refusal (HTTP 403...)
        ├── JoinRefused             the server replied ``error`` to a join; ``response`` says why
        ├── PushTimeout             no reply within the push's timeout (also TimeoutError)
        │   └── JoinTimeout         ... for a join
        ├── ChannelClosedError      the channel closed (left, closed by the server, socket closed)
        └── PushBufferFull          too many pushes waiting for a join; the new one was refused

Misuse of the API (pushing before ``join()``, joining twice, a payload that
cannot be encoded) raises the package's :class:`~phoenix_channels.errors.UsageError`
subclasses, as on the server side.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConnectionRefused as _ConnectionRefused
from ..errors import PhoenixChannelsError

__all__ = [
    "ChannelClosedError",
    "ClientError",
    "ConnectError",
    "ConnectionRefused",
    "JoinRefused",
    "JoinTimeout",
    "PushBufferFull",
    "PushTimeout",
]


class ClientError(PhoenixChannelsError):
    """Base class of the errors the client raises for remote or network conditions."""


class ConnectError(ClientError, ConnectionError):
    """The socket could not open a connection in time; ``__cause__`` holds the last failure."""


class ConnectionRefused(ConnectError, _ConnectionRefused):
    """The server refused the connection (a Phoenix server answers 403 when ``connect`` says no).

    A subclass of :class:`phoenix_channels.errors.ConnectionRefused`, the one
    name for this idea on both sides.

    ``status`` is the HTTP status of the WebSocket handshake, or the status in
    the long-poll response body.
    """

    def __init__(self, url: str, status: int) -> None:
        super().__init__(f"{url} refused the connection (status {status})")
        self.url = url
        self.status = status


class JoinRefused(ClientError):
    """The server answered a join with an ``error`` reply (the channel's ``JoinError``)."""

    def __init__(self, topic: str, response: Any) -> None:
        super().__init__(f"joining {topic!r} was refused: {response!r}")
        self.topic = topic
        self.response = response


class PushTimeout(ClientError, TimeoutError):
    """No reply to a push arrived within its timeout (the server may still have handled it)."""

    def __init__(self, topic: str, event: str, timeout: float) -> None:
        super().__init__(f"no reply to {event!r} on {topic!r} within {timeout:g} s")
        self.topic = topic
        self.event = event
        self.timeout = timeout


class JoinTimeout(PushTimeout):
    """No reply to a join within its timeout; the channel was closed (a leave was sent)."""


class ChannelClosedError(ClientError):
    """The channel is closed, so this push can get no reply (or cannot be made)."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"channel {topic!r} is closed ({reason})")
        self.topic = topic
        self.reason = reason


class PushBufferFull(ClientError):
    """A channel already holds its maximum of pushes waiting for a join."""
