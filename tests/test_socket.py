"""Socket rules (socket.py): heartbeats, refs, joins and leaves, limits, closing; in process."""

from __future__ import annotations

import pytest

from phoenix_channels import Endpoint

from .rooms import EVENTS, UserSocket, joined, make_endpoint
from .support import connect


@pytest.fixture
def endpoint() -> Endpoint:
    return make_endpoint()


async def test_heartbeat_and_other_events_on_phoenix(endpoint: Endpoint) -> None:
    client = await connect(endpoint, UserSocket)
    client.send(None, "1", "phoenix", "heartbeat", {})
    client.send(None, "2", "phoenix", "heartbeat", {"x": 1})
    client.send(None, "3", "phoenix", "other_event", {})
    assert await client.frames(3) == [
        [None, "1", "phoenix", "phx_reply", {"response": {}, "status": "ok"}],
        [None, "2", "phoenix", "phx_reply", {"response": {}, "status": "ok"}],
        [
            None,
            "3",
            "phoenix",
            "phx_reply",
            {"response": {"reason": "unmatched topic"}, "status": "error"},
        ],
    ]


async def test_replies_and_stale_join_refs(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:e1")
    client.send("1", "2", "room:e1", "echo", {"hello": "world"})
    client.send("1", "3", "room:e1", "error_reply", {"why": "nope"})
    client.send("1", "4", "room:e1", "noreply", {})
    client.send("1", None, "room:e1", "echo", {"nullref": True})
    client.send("999", "6", "room:e1", "echo", {"wrong_join_ref": True})
    client.send(None, "7", "room:e1", "echo", {"null_join_ref": True})
    frames = await client.frames(5)
    await client.settle()
    assert client.transport.frames()[1:] == [
        ["1", "2", "room:e1", "phx_reply", {"response": {"hello": "world"}, "status": "ok"}],
        ["1", "3", "room:e1", "phx_reply", {"response": {"why": "nope"}, "status": "error"}],
        ["1", None, "room:e1", "phx_reply", {"response": {"nullref": True}, "status": "ok"}],
        ["1", "7", "room:e1", "phx_reply", {"response": {"null_join_ref": True}, "status": "ok"}],
    ]
    assert len(frames) == 5


async def test_leave_then_close_and_unmatched_afterwards(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:l1")
    client.send("1", "2", "room:l1", "phx_leave", {})
    await client.frames(3)  # a push racing the leave reaches the leaving channel and is lost
    client.send("1", "3", "room:l1", "echo", {})
    client.send(None, "4", "room:nojoin", "phx_leave", {})
    client.send("7", "5", "room:nojoin", "phx_leave", {})
    frames = await client.frames(6)
    assert frames[1:] == [
        ["1", "2", "room:l1", "phx_reply", {"response": {}, "status": "ok"}],
        ["1", "1", "room:l1", "phx_close", {}],
        [
            None,
            "3",
            "room:l1",
            "phx_reply",
            {"response": {"reason": "unmatched topic"}, "status": "error"},
        ],
        [None, "4", "room:nojoin", "phx_reply", {"response": {}, "status": "ok"}],
        ["7", "5", "room:nojoin", "phx_reply", {"response": {}, "status": "ok"}],
    ]
    assert EVENTS == [("room:l1", "shutdown:left")]


async def test_duplicate_join_closes_the_old_join_after_the_new_reply(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:d1")
    client.send("2", "2", "room:d1", "phx_join", {})
    client.send("1", "3", "room:d1", "echo", {"old": True})
    client.send("2", "4", "room:d1", "echo", {"new": True})
    frames = await client.frames(4)
    await client.settle()
    assert client.transport.frames()[1:] == [
        ["2", "2", "room:d1", "phx_reply", {"response": {}, "status": "ok"}],
        ["1", "1", "room:d1", "phx_close", {}],
        ["2", "4", "room:d1", "phx_reply", {"response": {"new": True}, "status": "ok"}],
    ]
    assert len(frames) == 4
    assert EVENTS == []  # the replaced channel is shut down without terminate


async def test_messages_sent_during_a_join_wait_for_it(endpoint: Endpoint) -> None:
    client = await connect(endpoint, UserSocket)
    client.send("1", "1", "room:slow", "phx_join", {})
    client.send("1", "2", "room:slow", "echo", {"after": "join"})
    frames = await client.frames(2)
    assert [f[3] for f in frames] == ["phx_reply", "phx_reply"]
    assert frames[1][4] == {"response": {"after": "join"}, "status": "ok"}


async def test_a_slow_channel_does_not_hold_up_another(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:a")
    client.send("2", "2", "room:b", "phx_join", {})
    await client.frames(2)
    client.send("1", "3", "room:a", "sleep", {"seconds": 0.2})
    client.send("2", "4", "room:b", "echo", {"fast": True})
    frames = await client.frames(3)
    assert frames[2][2] == "room:b"  # answered while room:a still sleeps
    frames = await client.frames(4)
    assert frames[3][:2] == ["1", "3"]


async def test_channel_limit(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:1")
    client.send("2", "2", "room:2", "phx_join", {})
    client.send("3", "3", "room:3", "phx_join", {})
    client.send("4", "4", "room:4", "phx_join", {})
    frames = await client.frames(4)
    assert frames[3] == [
        "4",
        "4",
        "room:4",
        "phx_reply",
        {"response": {"reason": "too many channels joined"}, "status": "error"},
    ]


async def test_disconnect_by_socket_id(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:dc", query="vsn=2.0.0&user=7")
    other = await joined(endpoint, "room:dc", query="vsn=2.0.0&user=8")
    await endpoint.broadcast("user_socket:7", "disconnect", {})
    assert await client.transport.wait_closed() == (1001, "disconnected")
    await client.settle()
    assert EVENTS == [("room:dc", "shutdown:disconnected")]
    assert other.transport.closed is None


async def test_closing_the_socket_terminates_every_channel(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:c")
    client.send("2", "2", "room:d", "phx_join", {})
    await client.frames(2)
    client.socket.connection_lost()
    await client.settle()
    assert sorted(EVENTS) == [("room:c", "shutdown:closed"), ("room:d", "shutdown:closed")]
    assert endpoint.pubsub.subscribers("room:c") == 0


async def test_socket_closed_is_a_flag_and_calling_it_still_works_with_a_warning(
    endpoint: Endpoint,
) -> None:
    client = await joined(endpoint, "room:flag")
    assert not client.socket.closed
    with pytest.deprecated_call(match="connection_lost"):
        client.socket.closed("shutdown:closed")  # the name transports used before
    await client.settle()
    assert client.socket.closed and client.socket.closed == True  # noqa: E712
    assert EVENTS == [("room:flag", "shutdown:closed")]


async def test_a_malformed_frame_closes_only_its_connection(endpoint: Endpoint) -> None:
    bad, good = await joined(endpoint, "room:m"), await joined(endpoint, "room:m")
    bad.send_raw(b"this is not json")
    code, reason = await bad.transport.wait_closed()
    assert code == 1011 and "JSON" in reason
    await endpoint.broadcast("room:m", "still", {"here": True})
    assert (await good.frames(2))[1] == [None, None, "room:m", "still", {"here": True}]
    assert endpoint.pubsub.subscribers("room:m") == 1


async def test_v1_clients(endpoint: Endpoint) -> None:
    client = await connect(endpoint, UserSocket, "vsn=1.0.0")
    client.socket.receive(b'{"topic":"room:v1","event":"phx_join","payload":{},"ref":"1"}', False)
    client.socket.receive(b'{"topic":"room:v1","event":"crash_me","payload":{},"ref":"2"}', False)
    client.socket.receive(b'{"topic":"room:v1","event":"garbage","payload":{},"ref":"3"}', False)
    frames = await client.frames(2)
    assert frames == [
        {
            "event": "phx_reply",
            "payload": {"response": {}, "status": "ok"},
            "ref": "1",
            "topic": "room:v1",
        },
        {
            "event": "phx_error",
            "payload": {"reason": "channel_crash"},
            "ref": None,
            "topic": "room:v1",
        },
    ]
