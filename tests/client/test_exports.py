"""The client's public names: the API changes only on purpose."""

from __future__ import annotations

import phoenix_channels.client as client


def test_public_names() -> None:
    assert sorted(client.__all__) == [
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
    for name in client.__all__:
        assert getattr(client, name) is not None


def test_errors_belong_to_the_package_hierarchy() -> None:
    from phoenix_channels.errors import PhoenixChannelsError

    assert issubclass(client.ClientError, PhoenixChannelsError)
    assert issubclass(client.ConnectError, ConnectionError)
    assert issubclass(client.PushTimeout, TimeoutError)
    assert issubclass(client.JoinTimeout, client.PushTimeout)
