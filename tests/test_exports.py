import phoenix_channels

EXPECTED = {
    "Broadcast",
    "BroadcastError",
    "Channel",
    "ChannelReply",
    "ConfigurationError",
    "DecodeError",
    "EncodeError",
    "Endpoint",
    "JoinError",
    "LocalAdapter",
    "Message",
    "NotJoinedError",
    "PhoenixChannelsError",
    "PubSub",
    "RemoteError",
    "Reply",
    "Socket",
    "SocketRef",
    "Stop",
    "Subscription",
    "UsageError",
    "WebSocketError",
    "__version__",
    "reply",
    "stop",
    "ExpiredToken",
    "InvalidToken",
    "MissingToken",
    "TokenError",
    "token",
    "telemetry",
    "RawSocket",
    "LongPoll",
    "Presence",
    "Tracker",
    "AlreadyTrackedError",
    "NotTrackedError",
    "History",
    "Position",
    "ConnectionRefused",
    "on",
    "InvalidPayload",
}


def test_public_names_change_only_on_purpose() -> None:
    assert set(phoenix_channels.__all__) == EXPECTED


def test_every_public_name_exists() -> None:
    for name in phoenix_channels.__all__:
        assert getattr(phoenix_channels, name) is not None, name


def test_one_connection_refused_for_server_tests_and_client() -> None:
    import warnings

    import pytest

    from phoenix_channels import client, errors, testing

    assert phoenix_channels.ConnectionRefused is errors.ConnectionRefused
    assert testing.ConnectionRefused is errors.ConnectionRefused
    assert issubclass(errors.ConnectionRefused, errors.PhoenixChannelsError)
    assert issubclass(client.ConnectionRefused, errors.ConnectionRefused)
    assert "ConnectRefused" not in testing.__all__
    with pytest.warns(DeprecationWarning, match="errors.ConnectionRefused"):
        old = testing.ConnectRefused
    assert old is errors.ConnectionRefused
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no attribute 'Nope'"):
            testing.Nope  # noqa: B018
