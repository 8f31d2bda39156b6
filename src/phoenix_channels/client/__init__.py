"""An asyncio client for Phoenix Channels: for our servers and for Phoenix's alike.

It speaks what the official JavaScript client speaks (``js-client-behaviour.md``
in the spec): the V2 and V1 serializers and binary frames, WebSocket and long
polling, heartbeats that detect a dead connection, reconnects with the JS
backoff (plus jitter), automatic rejoin of every joined channel with its
params, pushes buffered while disconnected, and the Presence helper::

    from phoenix_channels.client import Socket

    async with Socket("ws://localhost:4000/socket") as socket:
        channel = socket.channel("room:lobby", {"nick": "ana"})
        await channel.join()
        reply = await channel.push("new_msg", {"body": "hello"})
        async for message in channel:
            print(message.event, message.payload)

See ``docs/client.md`` for the guide.
"""

from ..protocol.messages import Message, Reply
from ._timers import default_reconnect_after, default_rejoin_after
from .channel import Channel, Push
from .errors import (
    ChannelClosedError,
    ClientError,
    ConnectError,
    ConnectionRefused,
    JoinRefused,
    JoinTimeout,
    PushBufferFull,
    PushTimeout,
)
from .options import SocketOptions
from .presence import Presence, list_presences, sync_diff, sync_state
from .socket import Socket
from .transports import LongPollTransport, Transport, TransportOptions, WebSocketTransport

__all__ = [
    "Channel",
    "ChannelClosedError",
    "ClientError",
    "ConnectError",
    "ConnectionRefused",
    "JoinRefused",
    "JoinTimeout",
    "LongPollTransport",
    "Message",
    "Presence",
    "Push",
    "PushBufferFull",
    "PushTimeout",
    "Reply",
    "Socket",
    "SocketOptions",
    "Transport",
    "TransportOptions",
    "WebSocketTransport",
    "default_reconnect_after",
    "default_rejoin_after",
    "list_presences",
    "sync_diff",
    "sync_state",
]
