"""Channel and socket rules, in process, on a memory transport (no network)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from phoenix_channels import (
    Broadcast,
    Channel,
    Endpoint,
    JoinError,
    NotJoinedError,
    Socket,
    reply,
    stop,
)
from phoenix_channels.endpoint import Refused

from .support import connect

EVENTS: list[tuple[str, Any]] = []


class RoomChannel(Channel):
    intercept = ["censored"]

    async def join(self, topic: str, payload: Any) -> Any:
        if topic == "room:secret":
            raise JoinError({"reason": "unauthorized"})
        if topic == "room:crash":
            raise RuntimeError("join blew up")
        if topic == "room:push-in-join":
            await self.push("early", {})
        if topic == "room:slow":
            await asyncio.sleep(0.05)
        if payload.get("after_join"):
            self.send("after_join")
        self.socket.assigns["nick"] = payload.get("nick")
        return {"welcome": topic} if payload.get("welcome") else None

    async def handle_in(self, event: str, payload: Any) -> Any:
        match event:
            case "echo":
                return reply("ok", payload)
            case "error_reply":
                return reply("error", payload)
            case "noreply":
                return None
            case "shout":
                await self.broadcast("shout", payload)
            case "shout_from":
                await self.broadcast_from("shout", payload)
            case "censored":
                await self.broadcast("censored", payload)
            case "stop":
                return stop(payload.get("reason", "normal"))
            case "stop_reply":
                return stop("normal", reply("ok", {"bye": True}))
            case "later":
                ref = self.socket_ref()
                asyncio.get_running_loop().call_later(
                    0.01, lambda: asyncio.ensure_future(ref.reply("ok", {"late": True})))
            case "sleep":
                await asyncio.sleep(payload["seconds"])
                return reply("ok", {"slept": True})
            case "garbage":
                return 42
            case "subscribe":
                self.subscribe(payload["topic"])
            case "timer":
                self.send_after(0.01, {"timer": True})
            case "assigns":
                return reply("ok", {"channel": dict(self.assigns),
                                    "socket": dict(self.socket.assigns)})
        return None

    async def handle_out(self, event: str, payload: Any) -> None:
        await self.push(event, {"censored": True, "for": self.join_ref})

    async def handle_info(self, message: Any) -> None:
        if message == "after_join":
            await self.push("after_join", {"nick": self.socket.assigns["nick"]})
        elif isinstance(message, Broadcast):
            await self.push("relayed", {"topic": message.topic, "event": message.event})
        else:
            await self.push("info", message)

    async def terminate(self, reason: Any) -> None:
        EVENTS.append((self.topic, reason if isinstance(reason, str) else type(reason).__name__))


class UserSocket(Socket):
    channels = {"room:*": RoomChannel, "static:*": (RoomChannel, {"role": "admin"})}
    max_channels = 3

    async def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> bool:
        if params.get("user"):
            self.assigns["user"] = params["user"]
        return params.get("token") != "reject"

    def id(self) -> str | None:
        user = self.assigns.get("user")
        return f"user_socket:{user}" if user else None


@pytest.fixture
def endpoint() -> Endpoint:
    EVENTS.clear()
    return Endpoint(sockets={"/socket": UserSocket}, check_origin=False)


async def joined(endpoint: Endpoint, topic: str = "room:1", query: str = "vsn=2.0.0",
                 **payload: Any):  # type: ignore[no-untyped-def]
    client = await connect(endpoint, UserSocket, query)
    client.send("1", "1", topic, "phx_join", payload)
    frames = await client.frames(1)
    assert frames[0][4]["status"] == "ok", frames
    return client


async def test_join_replies_ok_with_the_join_value(endpoint: Endpoint) -> None:
    client = await connect(endpoint, UserSocket)
    client.send("1", "1", "room:lobby", "phx_join", {"welcome": True})
    client.send("2", "2", "room:plain", "phx_join", {})
    assert await client.frames(2) == [
        ["1", "1", "room:lobby", "phx_reply", {"response": {"welcome": "room:lobby"},
                                               "status": "ok"}],
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
        ["1", "1", "room:secret", "phx_reply",
         {"response": {"reason": "unauthorized"}, "status": "error"}],
        ["2", "2", "room:crash", "phx_reply",
         {"response": {"reason": "join crashed"}, "status": "error"}],
        [None, "3", "nochannel:x", "phx_reply",
         {"response": {"reason": "unmatched topic"}, "status": "error"}],
        ["4", "4", "room:push-in-join", "phx_reply",
         {"response": {"reason": "join crashed"}, "status": "error"}],
        [None, "5", "room:secret", "phx_reply",
         {"response": {"reason": "unmatched topic"}, "status": "error"}],
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


async def test_heartbeat_and_other_events_on_phoenix(endpoint: Endpoint) -> None:
    client = await connect(endpoint, UserSocket)
    client.send(None, "1", "phoenix", "heartbeat", {})
    client.send(None, "2", "phoenix", "heartbeat", {"x": 1})
    client.send(None, "3", "phoenix", "other_event", {})
    assert await client.frames(3) == [
        [None, "1", "phoenix", "phx_reply", {"response": {}, "status": "ok"}],
        [None, "2", "phoenix", "phx_reply", {"response": {}, "status": "ok"}],
        [None, "3", "phoenix", "phx_reply",
         {"response": {"reason": "unmatched topic"}, "status": "error"}],
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
        ["1", "7", "room:e1", "phx_reply", {"response": {"null_join_ref": True},
                                            "status": "ok"}],
    ]
    assert len(frames) == 5


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
        [None, "5", "room:c1", "phx_reply",
         {"response": {"reason": "unmatched topic"}, "status": "error"}],
        ["2", "6", "room:c2", "phx_reply", {"response": {"alive": True}, "status": "ok"}],
    ]
    assert ("room:c1", "UsageError") in EVENTS  # terminate ran with the exception
    # the client rejoins the crashed topic
    client.send("7", "7", "room:c1", "phx_join", {})
    frames = await client.frames(6)
    assert frames[5] == ["7", "7", "room:c1", "phx_reply", {"response": {}, "status": "ok"}]


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
        [None, "3", "room:l1", "phx_reply",
         {"response": {"reason": "unmatched topic"}, "status": "error"}],
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


async def test_stops(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:s1")
    for n, topic in enumerate(("room:s2", "room:s3"), start=2):
        client.send(str(n), str(n), topic, "phx_join", {})
    await client.frames(3)
    client.send("1", "10", "room:s1", "stop", {})
    client.send("2", "11", "room:s2", "stop", {"reason": "boom"})
    client.send("3", "12", "room:s3", "stop_reply", {})
    frames = await client.frames(7)
    assert sorted(map(str, frames[3:])) == sorted(map(str, [
        ["1", "1", "room:s1", "phx_close", {}],
        ["2", "2", "room:s2", "phx_error", {"reason": "channel_crash"}],
        ["3", "12", "room:s3", "phx_reply", {"response": {"bye": True}, "status": "ok"}],
        ["3", "3", "room:s3", "phx_close", {}],
    ]))
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


async def test_async_reply_through_a_socket_ref(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:r")
    client.send("1", "9", "room:r", "later", {})
    frames = await client.frames(2)
    assert frames[1] == ["1", "9", "room:r", "phx_reply", {"response": {"late": True},
                                                          "status": "ok"}]


async def test_channel_limit(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:1")
    client.send("2", "2", "room:2", "phx_join", {})
    client.send("3", "3", "room:3", "phx_join", {})
    client.send("4", "4", "room:4", "phx_join", {})
    frames = await client.frames(4)
    assert frames[3] == ["4", "4", "room:4", "phx_reply",
                         {"response": {"reason": "too many channels joined"}, "status": "error"}]


async def test_broadcasts_are_encoded_once_and_shared(endpoint: Endpoint) -> None:
    clients = [await joined(endpoint, "room:b1") for _ in range(3)]
    clients[0].send("1", "2", "room:b1", "shout", {"msg": "hello everyone"})
    for client in clients:
        frames = await client.frames(2)
        assert frames[1] == [None, None, "room:b1", "shout", {"msg": "hello everyone"}]
    items = [client.transport.sent[1] for client in clients]
    assert items[0] is items[1] is items[2]  # one encoding, the same object for everyone


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


async def test_endpoint_broadcast_and_extra_subscriptions(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:x")
    client.send("1", "2", "room:x", "subscribe", {"topic": "news"})
    await client.settle()
    await endpoint.broadcast("room:x", "from_app", {"n": 1})
    await endpoint.broadcast("news", "headline", {"n": 2})
    frames = await client.frames(3)
    assert frames[1] == [None, None, "room:x", "from_app", {"n": 1}]
    assert frames[2] == ["1", None, "room:x", "relayed", {"topic": "news", "event": "headline"}]


async def test_send_after_reaches_handle_info(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:t")
    client.send("1", "2", "room:t", "timer", {})
    assert (await client.frames(2))[1] == ["1", None, "room:t", "info", {"timer": True}]


async def test_assigns_are_copied_into_channels_with_route_assigns(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "static:1", query="vsn=2.0.0&user=42", nick="ana")
    client.send("1", "2", "static:1", "assigns", {})
    frames = await client.frames(2)
    assert frames[1][4]["response"] == {"channel": {"user": "42", "role": "admin"},
                                        "socket": {"user": "42", "nick": "ana"}}


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
    client.socket.receive(
        b'{"topic":"room:v1","event":"phx_join","payload":{},"ref":"1"}', False)
    client.socket.receive(
        b'{"topic":"room:v1","event":"crash_me","payload":{},"ref":"2"}', False)
    client.socket.receive(
        b'{"topic":"room:v1","event":"garbage","payload":{},"ref":"3"}', False)
    frames = await client.frames(2)
    assert frames == [
        {"event": "phx_reply", "payload": {"response": {}, "status": "ok"}, "ref": "1",
         "topic": "room:v1"},
        {"event": "phx_error", "payload": {"reason": "channel_crash"}, "ref": None,
         "topic": "room:v1"},
    ]


@pytest.mark.parametrize(("query", "status"), [
    ("vsn=3.0.0", 403), ("vsn=2.0", 403), ("token=reject&vsn=2.0.0", 403),
])
async def test_refused_connections(endpoint: Endpoint, query: str, status: int) -> None:
    outcome = await endpoint.handshake(UserSocket, method="GET", path="/socket/websocket",
                                       query=query, headers=[], scheme="ws", peer=None,
                                       websocket=False)
    assert outcome == Refused(status)


async def test_connect_must_return_true_and_id_a_string(endpoint: Endpoint) -> None:
    class Forgetful(Socket):
        channels = {"room:*": RoomChannel}

        async def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> bool:
            return None  # type: ignore[return-value]

    class BadId(Socket):
        def id(self) -> str | None:
            return 42  # type: ignore[return-value]

    for cls in (Forgetful, BadId):
        outcome = await endpoint.handshake(cls, method="GET", path="/", query="vsn=2.0.0",
                                           headers=[], scheme="ws", peer=None, websocket=False)
        assert outcome == Refused(403)


async def test_on_stop_runs_once_however_the_channel_ends(endpoint: Endpoint) -> None:
    ended: list[str] = []
    client = await joined(endpoint, "room:w1")
    for n, topic in enumerate(("room:w2", "room:w3"), start=2):
        client.send(str(n), str(n), topic, "phx_join", {})
    await client.frames(3)
    for entry in client.socket._table.entries.values():
        entry.channel.on_stop(lambda ch: ended.append(ch.topic))
    client.send("1", "10", "room:w1", "phx_leave", {})       # left
    client.send("2", "11", "room:w2", "garbage", {})          # crashed
    client.send("9", "12", "room:w3", "phx_join", {})         # replaced by a duplicate join
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
    assert await client.frames(1) == [["1", "1", "room:u", "phx_reply",
                                       {"response": {"reason": "join crashed"},
                                        "status": "error"}]]
    assert client.socket.channel_count == 0
    assert endpoint.pubsub.subscribers("room:u") == 0
