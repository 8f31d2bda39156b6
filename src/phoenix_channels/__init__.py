"""Phoenix Channels for Python: the Phoenix wire protocol, channels, sockets and PubSub.

The official Phoenix JavaScript client (and every other Phoenix client)
talks to these servers unchanged. Start with :class:`Channel`,
:class:`Socket` and :class:`Endpoint`; see the README for a tour.
"""

from . import telemetry, token
from .channel import Channel, ChannelReply, SocketRef, Stop, reply, stop
from .endpoint import Endpoint
from .errors import (
    BroadcastError,
    ConfigurationError,
    ConnectionRefused,
    DecodeError,
    EncodeError,
    ExpiredToken,
    InvalidToken,
    JoinError,
    MissingToken,
    NotJoinedError,
    PhoenixChannelsError,
    RemoteError,
    TokenError,
    UsageError,
    WebSocketError,
)
from .presence import AlreadyTrackedError, NotTrackedError, Presence, Tracker
from .protocol import Broadcast, Message, Reply
from .pubsub import LocalAdapter, PubSub, Subscription
from .raw import RawSocket
from .socket import Socket
from .transports.longpoll import LongPoll
from .typed import InvalidPayload, on

__version__ = "0.1.0"

__all__ = [
    "AlreadyTrackedError",
    "Broadcast",
    "BroadcastError",
    "Channel",
    "ChannelReply",
    "ConfigurationError",
    "ConnectionRefused",
    "DecodeError",
    "EncodeError",
    "Endpoint",
    "ExpiredToken",
    "InvalidPayload",
    "InvalidToken",
    "JoinError",
    "LocalAdapter",
    "LongPoll",
    "Message",
    "MissingToken",
    "NotJoinedError",
    "NotTrackedError",
    "PhoenixChannelsError",
    "Presence",
    "PubSub",
    "RawSocket",
    "RemoteError",
    "Reply",
    "Socket",
    "SocketRef",
    "Stop",
    "Subscription",
    "TokenError",
    "Tracker",
    "UsageError",
    "WebSocketError",
    "__version__",
    "on",
    "reply",
    "stop",
    "telemetry",
    "token",
]
