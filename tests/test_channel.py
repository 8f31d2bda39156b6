"""Channel rules (channel.py), in process, on a memory transport (no network)."""

from __future__ import annotations

from typing import Any

import pytest

from phoenix_channels import Endpoint, NotJoinedError, Socket

from .rooms import EVENTS, RoomChannel, UserSocket, joined, make_endpoint
from .support import connect


@pytest.fixture
def endpoint() -> Endpoint:
    return make_endpoint()


async def test_join_replies_ok_with_the_join_value(endpoint: Endpoint) -> None:
    client = await connect(endpoint, UserSocket)
    client.send("1", "1", "room:lobby", "phx_join", {"welcome": True})
    client.send("2", "2", "room:plain", "phx_join", {})
    assert await client.frames(2) == [
        [
            "1",
            "1",
            "room:lobby",
            "phx_reply",
            {"response": {"welcome": "room:lobby"}, "status": "ok"},
        ],
        ["2", "2", "room:plain", "phx_reply", {"response": {}, "status": "ok"}],
    ]


async def test_refused_crashed_and_unmatched_joins(endpoint: Endpoint) -> None:
    client = await connect(endpoint, UserSocket)
    client.send("1", "1", "room:secret", "phx_join", {})
    client.send("2", "2", "room:crash", "phx_join", {})
    client.send("3", "3", "nochannel:x", "phx_join", {})
    client.send("4", "4", "room:push-in-join", "phx_join", {})
    client.send("1", "5", "room:secret", "echo", {})
    assert await client.frames(5) == [
        [
            "1",
            "1",
            "room:secret",
            "phx_reply",
            {"response": {"reason": "unauthorized"}, "status": "error"},
        ],
        [
            "2",
            "2",
            "room:crash",
            "phx_reply",
            {"response": {"reason": "join crashed"}, "status": "error"},
        ],
        [
            None,
            "3",
            "nochannel:x",
            "phx_reply",
            {"response": {"reason": "unmatched topic"}, "status": "error"},
        ],
        [
            "4",
            "4",
            "room:push-in-join",
            "phx_reply",
            {"response": {"reason": "join crashed"}, "status": "error"},
        ],
        [
            None,
            "5",
            "room:secret",
            "phx_reply",
            {"response": {"reason": "unmatched topic"}, "status": "error"},
        ],
    ]
    assert client.socket.channel_count == 0
    # a refused join runs terminate with "shutdown"; a crashed one does not
    assert ("room:secret", "shutdown") in EVENTS
    assert not [e for e in EVENTS if e[0] == "room:crash"]


async def test_push_before_join_explains_the_after_join_pattern() -> None:
    channel = RoomChannel.__new__(RoomChannel)
    channel._state = 0
    channel.topic = "room:x"
    with pytest.raises(NotJoinedError, match="handle_info"):
        channel._check_joined("push")


async def test_crash_closes_only_that_channel(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:c1")
    client.send("2", "2", "room:c2", "phx_join", {})
    await client.frames(2)
    client.send("1", "4", "room:c1", "garbage", {})  # an invalid return value crashes
    frames = await client.frames(3)
    assert frames[2] == ["1", "1", "room:c1", "phx_error", {"reason": "channel_crash"}]
    client.send("1", "5", "room:c1", "echo", {})
    client.send("2", "6", "room:c2", "echo", {"alive": True})
    frames = await client.frames(5)
    assert frames[3:] == [
        [
            None,
            "5",
            "room:c1",
            "phx_reply",
            {"response": {"reason": "unmatched topic"}, "status": "error"},
        ],
        ["2", "6", "room:c2", "phx_reply", {"response": {"alive": True}, "status": "ok"}],
    ]
    assert ("room:c1", "UsageError") in EVENTS  # terminate ran with the exception
    # the client rejoins the crashed topic
    client.send("7", "7", "room:c1", "phx_join", {})
    frames = await client.frames(6)
    assert frames[5] == ["7", "7", "room:c1", "phx_reply", {"response": {}, "status": "ok"}]


async def test_stops(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:s1")
    for n, topic in enumerate(("room:s2", "room:s3"), start=2):
        client.send(str(n), str(n), topic, "phx_join", {})
    await client.frames(3)
    client.send("1", "10", "room:s1", "stop", {})
    client.send("2", "11", "room:s2", "stop", {"reason": "boom"})
    client.send("3", "12", "room:s3", "stop_reply", {})
    frames = await client.frames(7)
    assert sorted(map(str, frames[3:])) == sorted(
        map(
            str,
            [
                ["1", "1", "room:s1", "phx_close", {}],
                ["2", "2", "room:s2", "phx_error", {"reason": "channel_crash"}],
                ["3", "12", "room:s3", "phx_reply", {"response": {"bye": True}, "status": "ok"}],
                ["3", "3", "room:s3", "phx_close", {}],
            ],
        )
    )
    s3 = [f for f in frames if f[2] == "room:s3"]
    assert [f[3] for f in s3] == ["phx_reply", "phx_reply", "phx_close"]
    assert sorted(EVENTS) == [("room:s1", "normal"), ("room:s2", "boom"), ("room:s3", "normal")]


async def test_after_join_push_comes_after_the_reply(endpoint: Endpoint) -> None:
    client = await connect(endpoint, UserSocket)
    client.send("1", "1", "room:aj", "phx_join", {"after_join": True, "nick": "ana"})
    assert await client.frames(2) == [
        ["1", "1", "room:aj", "phx_reply", {"response": {}, "status": "ok"}],
        ["1", None, "room:aj", "after_join", {"nick": "ana"}],
    ]


async def test_async_reply_through_a_socket_ref(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:r")
    client.send("1", "9", "room:r", "later", {})
    frames = await client.frames(2)
    assert frames[1] == [
        "1",
        "9",
        "room:r",
        "phx_reply",
        {"response": {"late": True}, "status": "ok"},
    ]


async def test_broadcast_from_skips_the_sender(endpoint: Endpoint) -> None:
    a, b = await joined(endpoint, "room:bf"), await joined(endpoint, "room:bf")
    a.send("1", "2", "room:bf", "shout_from", {"x": 1})
    assert (await b.frames(2))[1] == [None, None, "room:bf", "shout", {"x": 1}]
    await a.settle()
    assert len(a.transport.sent) == 1


async def test_intercepted_events_go_through_handle_out(endpoint: Endpoint) -> None:
    a, b = await joined(endpoint, "room:i"), await joined(endpoint, "room:i")
    a.send("1", "2", "room:i", "censored", {"secret": 1})
    for client in (a, b):
        frames = await client.frames(2)
        assert frames[1] == ["1", None, "room:i", "censored", {"censored": True, "for": "1"}]


async def test_send_after_reaches_handle_info(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:t")
    client.send("1", "2", "room:t", "timer", {})
    assert (await client.frames(2))[1] == ["1", None, "room:t", "info", {"timer": True}]


async def test_assigns_are_copied_into_channels_with_route_assigns(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "static:1", query="vsn=2.0.0&user=42", nick="ana")
    client.send("1", "2", "static:1", "assigns", {})
    frames = await client.frames(2)
    assert frames[1][4]["response"] == {
        "channel": {"user": "42", "role": "admin"},
        "socket": {"user": "42", "nick": "ana"},
    }


async def test_on_stop_runs_once_however_the_channel_ends(endpoint: Endpoint) -> None:
    ended: list[str] = []
    client = await joined(endpoint, "room:w1")
    for n, topic in enumerate(("room:w2", "room:w3"), start=2):
        client.send(str(n), str(n), topic, "phx_join", {})
    await client.frames(3)
    for entry in client.socket._table.entries.values():
        entry.channel.on_stop(lambda ch: ended.append(ch.topic))
    client.send("1", "10", "room:w1", "phx_leave", {})  # left
    client.send("2", "11", "room:w2", "garbage", {})  # crashed
    client.send("9", "12", "room:w3", "phx_join", {})  # replaced by a duplicate join
    await client.frames(8)
    await client.settle()
    assert sorted(ended) == ["room:w1", "room:w2", "room:w3"]
    client.socket.connection_lost()
    await client.settle()
    assert len(ended) == 3


async def test_a_join_reply_that_cannot_be_encoded_is_a_crashed_join(endpoint: Endpoint) -> None:
    class Unencodable(RoomChannel):
        async def join(self, topic: str, payload: Any) -> Any:
            return {"value": object()}

    class S(Socket):
        channels = {"room:*": Unencodable}

    client = await connect(endpoint, S)
    client.send("1", "1", "room:u", "phx_join", {})
    assert await client.frames(1) == [
        [
            "1",
            "1",
            "room:u",
            "phx_reply",
            {"response": {"reason": "join crashed"}, "status": "error"},
        ]
    ]
    assert client.socket.channel_count == 0
    assert endpoint.pubsub.subscribers("room:u") == 0
