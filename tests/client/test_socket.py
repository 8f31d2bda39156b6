"""The client against our server over real sockets on loopback, on both transports.

The server runs in the test's event loop (``tests.support.Server``, the fast
path) with the app of ``tests/client/app.py``; everything the tests assert was
seen on the wire or in the state of the client or the server.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from phoenix_channels import EncodeError, NotJoinedError
from phoenix_channels.client import (
    ChannelClosedError,
    ConnectError,
    ConnectionRefused,
    JoinRefused,
    JoinTimeout,
    Presence,
    PushTimeout,
    Reply,
    Socket,
)

from ..support import Server
from .app import SEEN, endpoint
from .helpers import Recorder, eventually, free_port, next_message

_topics = itertools.count()


def topic(name: str) -> str:
    return f"room:{name}-{next(_topics)}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[Server]:
    async with Server(endpoint) as srv:
        yield srv


@pytest.fixture(params=["websocket", "longpoll"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(server: Server, transport: str = "websocket", **options: Any) -> Socket:
    options.setdefault("timeout", 5.0)
    options.setdefault("reconnect_after", lambda tries: 0.05)
    options.setdefault("rejoin_after", lambda tries: 0.05)
    return Socket(
        f"ws://127.0.0.1:{server.port}/socket",
        transport=transport,  # type: ignore[arg-type]
        **options,
    )


pytestmark = pytest.mark.asyncio(loop_scope="module")


# -- join, push, reply, broadcast -----------------------------------------------------------------


async def test_join_push_reply_and_broadcasts(server: Server, transport: str) -> None:
    t = topic("basics")
    async with (
        make(server, transport, params={"user_id": "ana"}) as one,
        make(server, transport) as two,
    ):
        first = one.channel(t, {"nick": "ana"})
        response = await first.join()
        assert response["params"] == {"nick": "ana"} and response["user_id"] == "ana"
        assert first.joined and first.join_response == response
        second = two.channel(t)
        await second.join()

        reply = await first.push("echo", {"body": "héllo ✓"})
        assert reply == Reply(first.join_ref, reply.ref, t, "ok", {"body": "héllo ✓"})
        error = await first.push("error_reply", {"why": "because"})
        assert (error.status, error.response) == ("error", {"why": "because"})

        seen: list[Any] = []
        second.on("shout", seen.append)
        assert (await second.push("shout", {"n": 1})).status == "ok"
        for channel in (first, second):
            message = await next_message(channel)
            assert (message.event, message.payload, message.join_ref) == ("shout", {"n": 1}, None)
        assert seen == [{"n": 1}]


async def test_a_refused_join_raises_and_closes_the_channel(server: Server, transport: str) -> None:
    async with make(server, transport) as socket:
        channel = socket.channel(topic("deny"), {"deny": True})
        with pytest.raises(JoinRefused) as info:
            await channel.join()
        assert info.value.response == {"reason": "denied"}
        assert channel.state == "closed" and channel not in socket.channels
        with pytest.raises(ChannelClosedError):
            channel.push("echo", {})


async def test_a_join_without_reply_in_time_raises_join_timeout(
    server: Server, transport: str
) -> None:
    async with make(server, transport) as socket:
        channel = socket.channel(topic("slow"), {"slow": 1.5})
        with pytest.raises(JoinTimeout, match=r"within 0\.3 s"):
            await channel.join(timeout=0.3)
        assert channel.state == "closed"
        # the connection is still fine for other channels
        other = socket.channel(topic("fine"))
        await other.join()


async def test_a_push_without_reply_times_out_and_the_channel_goes_on(
    server: Server, transport: str
) -> None:
    async with make(server, transport) as socket:
        channel = socket.channel(topic("noreply"))
        await channel.join()
        with pytest.raises(PushTimeout) as info:
            await channel.push("noreply", {}, timeout=0.2)
        assert (info.value.event, info.value.timeout) == ("noreply", 0.2)
        assert isinstance(info.value, TimeoutError)
        assert (await channel.push("echo", {"still": "here"})).response == {"still": "here"}


async def test_pushes_are_answered_in_order(server: Server, transport: str) -> None:
    async with make(server, transport) as socket:
        channel = socket.channel(topic("order"))
        await channel.join()
        pushes = [channel.push("echo", {"n": n}) for n in range(150)]  # > one long-poll batch
        replies = await asyncio.gather(*pushes)
        assert [r.response["n"] for r in replies] == list(range(150))
        t = channel.topic
        assert [p["n"] for topic_, event, p in SEEN if topic_ == t and event == "echo"] == list(
            range(150)
        )


async def test_push_before_join_is_a_usage_error(server: Server) -> None:
    async with make(server) as socket:
        with pytest.raises(NotJoinedError, match=r"await channel\.join\(\) first"):
            socket.channel(topic("early")).push("echo", {})


# -- binary and V1 --------------------------------------------------------------------------------


async def test_binary_payloads_both_ways_over_websocket(server: Server) -> None:
    t = topic("bin")
    async with make(server) as one, make(server) as two:
        first, second = one.channel(t), two.channel(t)
        await first.join()
        await second.join()
        reply = await first.push("echo", b"\x00\x01\xff")
        assert reply.response == b"\x00\x01\xff"
        await first.push("shout", b"\xde\xad")
        message = await next_message(second)
        assert (message.event, message.payload) == ("shout", b"\xde\xad")
        await second.push("push_binary", {})
        message = await next_message(second)
        assert (message.event, message.payload, message.join_ref) == (
            "binary",
            bytes(range(256)),
            second.join_ref,
        )


async def test_binary_pushes_go_to_the_server_over_long_polling(server: Server) -> None:
    t = topic("lpbin")
    async with make(server, "longpoll") as poller, make(server) as watcher:
        sender, receiver = poller.channel(t), watcher.channel(t)
        await sender.join()
        await receiver.join()
        assert (await sender.push("shout", b"\x01\x02")).status == "ok"
        message = await next_message(receiver)
        assert message.payload == b"\x01\x02"


async def test_protocol_v1_on_request(server: Server, transport: str) -> None:
    t = topic("v1")
    async with make(server, transport, vsn="1.0.0") as old, make(server) as new:
        channel = old.channel(t, {"v": 1})
        assert (await channel.join())["params"] == {"v": 1}
        assert (await channel.push("echo", {"x": 1})).response == {"x": 1}
        other = new.channel(t)
        await other.join()
        await other.push("shout", {"to": "v1"})
        message = await next_message(channel)
        assert (message.event, message.payload) == ("shout", {"to": "v1"})
        with pytest.raises(EncodeError, match="binary"):
            channel.push("echo", b"\x00")


# -- connections ----------------------------------------------------------------------------------


async def test_a_refused_connection_raises_connection_refused(
    server: Server, transport: str
) -> None:
    socket = make(server, transport, params={"token": "reject"})
    with pytest.raises(ConnectionRefused) as info:
        await socket.connect()
    assert info.value.status == 403
    assert socket.connection_state == "closed"
    assert "token=reject" not in str(info.value), "query params (tokens) stay out of messages"


async def test_no_server_means_connect_error_after_the_connect_timeout(transport: str) -> None:
    socket = Socket(
        f"ws://127.0.0.1:{free_port()}/socket",
        transport=transport,  # type: ignore[arg-type]
        connect_timeout=0.5,
    )
    recorder = Recorder(socket)
    with pytest.raises(ConnectError, match=r"within 0\.5 s"):
        await socket.connect()
    assert recorder.count("error") >= 2, "failed attempts were retried with the backoff"
    assert socket.connection_state == "closed"


async def test_the_auth_token_reaches_connect_info(server: Server, transport: str) -> None:
    async with make(server, transport, auth_token=lambda: "s3cr3t") as socket:
        assert (await socket.channel(topic("auth")).join())["auth_token"] == "s3cr3t"


async def test_heartbeats_keep_a_websocket_alive(server: Server) -> None:
    async with make(server, heartbeat_interval=0.3) as socket:
        replies: list[Any] = []
        socket.on_message(lambda m: m.topic == "phoenix" and replies.append(m.payload))
        await eventually(lambda: len(replies) >= 3, "three heartbeats were answered")
        assert all(r == {"status": "ok", "response": {}} for r in replies)
        assert socket.established_connections == 1 and socket.is_connected
        assert await socket.ping() >= 0


async def test_long_polling_sends_no_heartbeats(server: Server) -> None:
    async with make(server, "longpoll", heartbeat_interval=0.05) as socket:
        channel = socket.channel(topic("lp-quiet"))
        await channel.join()
        seen: list[Any] = []
        socket.on_message(seen.append)
        for n in range(5):  # a few round trips, longer than several heartbeat intervals
            await channel.push("echo", {"n": n})
            await asyncio.sleep(0.05)
        assert [m.topic for m in seen if m.topic == "phoenix"] == []
        assert socket.established_connections == 1


async def test_a_server_side_disconnect_reconnects_and_rejoins(
    server: Server, transport: str
) -> None:
    async with make(server, transport, params={"user_id": f"dc-{transport}"}) as socket:
        recorder = Recorder(socket)
        calls = itertools.count(1)
        channel = socket.channel(topic("dc"), lambda: {"call": next(calls)})
        first = await channel.join()
        rejoins: list[Any] = []
        channel.on_join(rejoins.append)
        channel.push("disconnect_me", {})
        await eventually(lambda: rejoins, "the channel rejoined after the server closed")
        assert socket.established_connections == 2
        assert rejoins[0]["params"] == {"call": 2} and rejoins[0]["serial"] > first["serial"]
        if transport == "websocket":
            assert (1001, "disconnected") in recorder.of("close")
        assert (await channel.push("echo", {"after": True})).response == {"after": True}


# -- errors, closes, leaves -----------------------------------------------------------------------


async def test_a_crash_errors_the_channel_which_rejoins_with_fresh_params(
    server: Server, transport: str
) -> None:
    async with make(server, transport) as socket:
        calls = itertools.count(1)
        channel = socket.channel(topic("crash"), lambda: {"call": next(calls)})
        await channel.join()
        errors: list[Any] = []
        channel.on_error(errors.append)
        rejoined: list[Any] = []
        channel.on_join(rejoined.append)
        channel.push("crash", {})
        await eventually(lambda: rejoined, "the crashed channel rejoined")
        assert errors == [{"reason": "channel_crash"}]
        assert rejoined[0]["params"] == {"call": 2}
        assert channel.join_response == rejoined[0]
        assert (await channel.push("echo", {"ok": 1})).response == {"ok": 1}


async def test_a_graceful_stop_closes_the_channel_for_good(server: Server, transport: str) -> None:
    async with make(server, transport) as socket:
        channel = socket.channel(topic("stop"))
        await channel.join()
        closed: list[str] = []
        channel.on_close(closed.append)
        pending = channel.push("noreply", {}, timeout=30)
        channel.push("stop_normal", {})
        with pytest.raises(ChannelClosedError, match="closed by the server"):
            await next_message(channel)  # the iterator ends
        assert closed == ["closed by the server"]
        with pytest.raises(ChannelClosedError):
            await pending  # a waiting push ends at once, not after its 30 s
        joins = sum(1 for t, e, _ in SEEN if t == channel.topic and e == "phx_join")
        await asyncio.sleep(0.2)
        assert sum(1 for t, e, _ in SEEN if t == channel.topic and e == "phx_join") == joins


async def test_leave_waits_for_the_server_and_ends_the_channel(
    server: Server, transport: str
) -> None:
    t = topic("leave")
    async with make(server, transport) as socket, make(server) as other:
        channel = socket.channel(t)
        await channel.join()
        assert endpoint.pubsub.subscribers(t) == 1
        await channel.leave()
        assert channel.state == "closed" and channel.closed_reason == "left"
        assert [m async for m in channel] == []
        assert endpoint.pubsub.subscribers(t) == 0, "the server left the topic"
        watcher = other.channel(t)
        await watcher.join()
        await channel.leave()  # a second leave does nothing


async def test_a_second_channel_object_for_a_topic_replaces_the_first(server: Server) -> None:
    t = topic("dup")
    async with make(server) as socket:
        first = socket.channel(t)
        await first.join()
        second = socket.channel(t)
        await second.join()
        await eventually(lambda: first.state == "closed", "the first channel object closed")
        assert second.joined and socket.channels == [second]


async def test_closing_the_socket_ends_channels_and_their_iterators(server: Server) -> None:
    socket = make(server)
    await socket.connect()
    channel = socket.channel(topic("end"))
    await channel.join()
    waiting = asyncio.ensure_future(channel.receive())
    await asyncio.sleep(0)
    await socket.close()
    with pytest.raises(ChannelClosedError, match="socket was closed"):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(ChannelClosedError):
        channel.push("echo", {})


# -- listening ------------------------------------------------------------------------------------


async def test_handlers_sync_async_removed_and_failing(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    async with make(server) as socket:
        channel = socket.channel(topic("handlers"))
        await channel.join()
        sync_seen: list[Any] = []
        async_seen: list[Any] = []
        removed: list[Any] = []

        async def later(payload: Any) -> None:
            await asyncio.sleep(0)
            async_seen.append(payload)

        def broken(payload: Any) -> None:
            raise ValueError("handler bug")

        channel.on("shout", broken)
        channel.on("shout", sync_seen.append)
        channel.on("shout", later)
        ref = channel.on("shout", removed.append)
        channel.off("shout", ref)
        with caplog.at_level(logging.ERROR, "phoenix_channels.client"):
            await channel.push("shout", {"n": 1})
            await eventually(lambda: async_seen, "the async handler ran")
        assert sync_seen == async_seen == [{"n": 1}] and removed == []
        assert "handler bug" in caplog.text


async def test_the_event_queue_drops_the_oldest_when_full(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    async with make(server) as socket:
        channel = socket.channel(topic("queue"), max_queued_events=2)
        await channel.join()
        with caplog.at_level(logging.WARNING, "phoenix_channels.client"):
            for n in range(5):
                await channel.push("shout", {"n": n})
        await eventually(lambda: channel.dropped_events == 3, "three events were dropped")
        assert [(await channel.receive()).payload["n"] for _ in range(2)] == [3, 4]
        assert "event queue full" in caplog.text


# -- presence -------------------------------------------------------------------------------------


async def test_presence_helpers_converge_as_people_come_and_go(
    server: Server, transport: str
) -> None:
    t = topic("presence")
    async with make(server, transport) as a, make(server) as b:
        ana = a.channel(t, {"presence": "ana"})
        ana_view = Presence(ana)
        syncs: list[Any] = []
        ana_view.on_sync(lambda: syncs.append(sorted(ana_view.state)))
        await ana.join()
        await eventually(lambda: syncs and syncs[-1] == ["ana"], "ana sees herself")

        bob = b.channel(t, {"presence": "bob"})
        bob_view = Presence(bob)
        left: list[str] = []
        bob_view.on_leave(lambda key, current, gone: left.append(key))
        await bob.join()
        await eventually(lambda: sorted(bob_view.state) == ["ana", "bob"], "bob sees both")
        await eventually(lambda: syncs[-1] == ["ana", "bob"], "ana sees bob")

        await ana.leave()
        await eventually(lambda: sorted(bob_view.state) == ["bob"], "bob sees ana leave")
        assert left == ["ana"]
        assert bob_view.list(lambda key, p: [m["name"] for m in p["metas"]]) == [["bob"]]


# -- misbehaving servers and impatient callers -----------------------------------------------------


async def test_a_frame_over_max_frame_size_closes_and_the_client_reconnects(server: Server) -> None:
    async with make(server, max_frame_size=1000) as socket:
        recorder = Recorder(socket)
        channel = socket.channel(topic("big"))
        await channel.join()
        with pytest.raises(PushTimeout):
            await channel.push("echo", {"blob": "x" * 2000}, timeout=0.5)
        assert 1009 in [code for code, _ in recorder.of("close")]
        await eventually(
            lambda: channel.joined and socket.established_connections == 2,
            "the client reconnected and rejoined",
        )
        assert (await channel.push("echo", {"small": 1})).response == {"small": 1}


async def test_a_server_sending_garbage_is_dropped_with_an_error() -> None:
    import websockets

    connections = 0

    async def garbage(ws: Any) -> None:
        nonlocal connections
        connections += 1
        await ws.send("this is not a Phoenix frame")
        await ws.wait_closed()

    async with websockets.serve(garbage, "127.0.0.1", 0) as bad:
        port = bad.sockets[0].getsockname()[1]
        socket = Socket(f"ws://127.0.0.1:{port}/socket", reconnect_after=lambda tries: 0.05)
        recorder = Recorder(socket)
        await socket.connect()
        await eventually(lambda: recorder.count("error") >= 2, "two undecodable connections")
        assert "not valid JSON" in str(recorder.of("error")[0])
        assert connections >= 2, "the client reconnected after dropping the bad connection"
        await socket.close()


async def test_a_cancelled_join_leaves_the_topic(server: Server) -> None:
    t = topic("cancelled")
    async with make(server) as socket:
        channel = socket.channel(t, {"slow": 0.3})
        task = asyncio.ensure_future(channel.join())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: channel.state == "closed", "the channel closed")
        await eventually(
            lambda: endpoint.pubsub.subscribers(t) == 0, "the server side of the late join is gone"
        )


async def test_a_cancelled_connect_stops_the_socket() -> None:
    socket = Socket(f"ws://127.0.0.1:{free_port()}/socket")
    task = asyncio.ensure_future(socket.connect())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert socket.connection_state == "closed", "stopped, not waiting to reconnect"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"transport": "carrier-pigeon"}, "transport must be"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"jitter": 1.5}, "jitter must be in"),
        ({"vsn": "3.0.0"}, "unsupported vsn"),
        ({"params": 42}, "params must be a dict or a function"),
        ({"max_queued_events": -1}, "max_queued_events must be an int >= 0"),
    ],
)
async def test_bad_options_are_refused_with_a_message(
    options: dict[str, Any], problem: str
) -> None:
    from phoenix_channels import ConfigurationError

    with pytest.raises(ConfigurationError, match=problem):
        Socket("ws://127.0.0.1:1/socket", **options)
    with pytest.raises(ConfigurationError, match="url must look like"):
        Socket("127.0.0.1:4000/socket")
