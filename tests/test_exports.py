import phoenix_channels

EXPECTED = {
    "Broadcast", "BroadcastError", "Channel", "ChannelReply", "ConfigurationError", "DecodeError",
    "EncodeError", "Endpoint", "JoinError", "LocalAdapter", "Message", "NotJoinedError",
    "PhoenixChannelsError", "PubSub", "RemoteError", "Reply", "Socket", "SocketRef", "Stop",
    "Subscription", "UsageError", "WebSocketError", "__version__", "reply", "stop",
    "ExpiredToken", "InvalidToken", "MissingToken", "TokenError", "token",
    "RawSocket",
    "LongPoll",
    "Presence", "Tracker", "AlreadyTrackedError", "NotTrackedError",
    "History", "Position",
}


def test_public_names_change_only_on_purpose() -> None:
    assert set(phoenix_channels.__all__) == EXPECTED


def test_every_public_name_exists() -> None:
    for name in phoenix_channels.__all__:
        assert getattr(phoenix_channels, name) is not None, name
