"""Catalogue group F (channel runtime and ChannelTest helpers), with phoenix_channels.testing.

Each test names the catalogue lines it reproduces (see docs/catalogue.md).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

import pytest

from phoenix_channels import (
    Broadcast,
    Channel,
    ConfigurationError,
    Endpoint,
    JoinError,
    Message,
    NotJoinedError,
    Socket,
    UsageError,
    reply,
    stop,
)
from phoenix_channels.testing import (
    ANY,
    ChannelCrashed,
    ChannelTest,
    ConnectionRefused,
    TestChannel,
)

TERMINATED: list[tuple[str, Any]] = []
SEEN: list[Any] = []


class RoomChannel(Channel):
    intercept = ["censored", "stop_out"]

    async def join(self, topic: str, payload: Any) -> Any:
        SEEN.append(("join", payload))
        if payload.get("refuse"):
            raise JoinError({"reason": "refused"})
        if payload.get("crash"):
            raise RuntimeError("join blew up")
        return {"joined": topic, "assigns": dict(self.assigns)}

    async def handle_in(self, event: str, payload: Any) -> Any:
        SEEN.append((event, payload))
        match event:
            case "ping":
                return reply("ok", {"pong": payload})
            case "bare_ok":
                return reply("ok")
            case "noreply":
                await self.push("noreply", {"req": payload})
                return None
            case "push_me":
                await self.push("pushed", payload)
                return None
            case "broadcast":
                await self.broadcast("said", payload)
            case "broadcast_from":
                await self.broadcast_from("said", payload)
            case "later":
                ref = self.socket_ref()

                async def answer_later() -> None:
                    await asyncio.sleep(0.01)
                    await ref.reply("ok", {"late": payload})
                    await ref.reply("ok")

                TASKS.add(asyncio.ensure_future(answer_later()))
            case "crash":
                raise ValueError("handle_in blew up")
            case "stop":
                return stop(payload.get("reason", "normal"))
            case "stop_reply":
                return stop("shutdown", reply("ok", payload) if payload else reply("ok"))
            case "subscribe":
                self.subscribe(payload["topic"])
            case "send":
                self.send(payload)
            case "hang":
                self.assigns["hang_terminate"] = True
                return reply("ok")
            case "socket_ref_in_info":
                self.send("socket_ref")
        return None

    async def handle_out(self, event: str, payload: Any) -> Any:
        if event == "stop_out":
            return stop("shutdown")
        await self.push(event, {**payload, "censored": True})
        return None

    async def handle_info(self, message: Any) -> Any:
        if isinstance(message, Broadcast):
            await self.push("relayed", {"from": message.topic, "event": message.event})
        elif message == "socket_ref":
            try:
                self.socket_ref()
            except UsageError as exc:
                await self.push("socket_ref_refused", {"error": str(exc)})
        elif message == {"stop": True}:
            return stop("shutdown")
        elif isinstance(message, dict) and "push" in message:
            await self.push("info_push", message)
            await self.broadcast("info_broadcast", message)
        return None

    async def terminate(self, reason: Any) -> None:
        TERMINATED.append((self.topic, reason))
        if self.assigns.get("hang_terminate"):
            await asyncio.sleep(3600)


class PlainChannel(Channel):
    """No handle_info, no handle_in: for F27 and explicit channel joins."""

    async def join(self, topic: str, payload: Any) -> Any:
        return {"plain": True}


class UserSocket(Socket):
    channels = {"room:*": RoomChannel, "admin:*": (RoomChannel, {"role": "admin"})}

    async def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> bool:
        SEEN.append(("connect", params, connect_info))
        if params.get("reject"):
            return False
        self.assigns["user"] = params.get("user")
        return True

    def id(self) -> str | None:
        user = self.assigns.get("user")
        return f"user_socket:{user}" if user else None


TASKS: set[asyncio.Future[Any]] = set()


@pytest.fixture
def phoenix_endpoint() -> Endpoint:
    TERMINATED.clear()
    SEEN.clear()
    return Endpoint(sockets={"/socket": UserSocket}, check_origin=False)


@pytest.fixture
async def ct(phoenix_endpoint: Endpoint):  # type: ignore[no-untyped-def]
    async with ChannelTest(phoenix_endpoint) as case:
        yield case


async def joined(ct: ChannelTest, topic: str = "room:1", **payload: Any) -> TestChannel:
    return await ct.subscribe_and_join(UserSocket, topic, payload)


# -- F1, F15, F18, F31: broadcasts ---------------------------------------------------------


async def test_f1_broadcast_from_the_channel_skips_only_its_own_client(ct: ChannelTest) -> None:
    room = await joined(ct)
    other = await joined(ct)
    room.push("broadcast_from", {"n": 1})
    await ct.assert_broadcast("said", {"n": 1})
    assert (await ct.assert_push("said", {"n": 1})).join_ref is None  # the other client
    await ct.refute_push("said")  # not the sender's own client
    other.push("broadcast", {"n": 2})
    await ct.assert_broadcast("said", {"n": 2})
    for _ in range(2):  # both clients, the sender included
        await ct.assert_push("said", {"n": 2})


async def test_f1_f31_broadcasts_from_elsewhere_reach_the_channel(
    ct: ChannelTest, phoenix_endpoint: Endpoint
) -> None:
    room = await joined(ct)
    await phoenix_endpoint.broadcast("room:1", "from_app", {"n": 1})
    await phoenix_endpoint.broadcast_from(object(), "room:1", "from_app", {"n": 2})
    phoenix_endpoint.local_broadcast("room:1", "from_app", {"n": 3})
    await room.broadcast_from("from_test", {"n": 4})  # the test's subscription skipped
    for n in (1, 2, 3):
        broadcast = await ct.assert_broadcast("from_app", {"n": n})
        assert broadcast == Broadcast("room:1", "from_app", {"n": n})
        await room.assert_push("from_app", {"n": n})
    await room.assert_push("from_test", {"n": 4})
    await ct.refute_broadcast("from_test")


async def test_f15_assert_and_refute_broadcast_with_guards(ct: ChannelTest) -> None:
    room = await joined(ct)
    room.push("broadcast", {"id": 7, "body": "hi"})
    found = await ct.assert_broadcast("said", lambda p: p["id"] > 5)
    assert found.payload == {"id": 7, "body": "hi"}
    await ct.refute_broadcast("said")  # consumed: no second one
    with pytest.raises(AssertionError, match="refute_broadcast"):
        room.push("broadcast", {"id": 8})
        await ct.refute_broadcast("said", {"id": ANY})


async def test_f18_unintercepted_broadcasts_reach_the_client_unchanged(ct: ChannelTest) -> None:
    await joined(ct)
    ct.unsubscribe("room:1")
    await ct.broadcast_from("room:1", "plain", {"a": [1, {"b": None}]})
    message = await ct.assert_push("plain")
    assert message == Message(None, None, "room:1", "plain", {"a": [1, {"b": None}]})


async def test_intercepted_broadcasts_go_through_handle_out(ct: ChannelTest) -> None:
    room = await joined(ct)
    await room.broadcast_from("censored", {"word": "darn"})
    await room.assert_push("censored", {"word": "darn", "censored": True})


# -- F2, F3, F8, F9, F10, F11: pushes and replies -------------------------------------------


async def test_f2_push_sends_a_message_to_the_client(ct: ChannelTest) -> None:
    room = await joined(ct)
    room.push("push_me", {"x": 1})
    assert await ct.assert_push("pushed") == Message(
        room.join_ref, None, "room:1", "pushed", {"x": 1}
    )


async def test_f8_f9_replies_and_a_noreply_handler(ct: ChannelTest) -> None:
    room = await joined(ct)
    assert await ct.assert_reply(room.push("ping", {"a": 1}), "ok", {"pong": {"a": 1}}) == {
        "pong": {"a": 1}
    }
    bare = room.push("bare_ok")
    assert await ct.assert_reply(bare) == {}
    await ct.refute_push("pushed")
    quiet = room.push("noreply", {"q": 1})
    await ct.assert_push("noreply", lambda payload: payload["req"]["q"] == 1)
    await ct.refute_reply(quiet)


async def test_f10_f30_payloads_travel_as_json(ct: ChannelTest) -> None:
    room = await joined(ct, nested=(1, {"t": (2, 3)}))
    assert SEEN[-1] == ("join", {"nested": [1, {"t": [2, 3]}]})
    when = datetime.date(2024, 2, 29)
    ref = room.push("ping", {"when": when, "list": (1, 2)})
    assert SEEN[-1] == ("ping", {"when": "2024-02-29", "list": [1, 2]})
    await ct.assert_reply(ref, "ok", {"pong": {"when": "2024-02-29", "list": [1, 2]}})
    with pytest.raises(UsageError, match="JSON-serializable"):
        room.push("ping", {"not json": {1, 2}})
    room.push("push_me", b"\x00\xff")  # bytes stay binary, both ways
    assert SEEN[-1] == ("push_me", b"\x00\xff")
    assert (await ct.assert_push("pushed")).payload == b"\x00\xff"
    room.push("ping", b"\x01")  # a reply the real serializer cannot encode crashes here too
    assert 'reply response["pong"]: bytes inside a JSON payload' in str(await room.assert_crashed())


async def test_f3_f11_async_replies_through_a_socket_ref(ct: ChannelTest) -> None:
    room = await joined(ct)
    ref = room.push("later", {"n": 1})
    assert await ct.assert_reply(ref, "ok", {"late": {"n": 1}}) == {"late": {"n": 1}}
    assert await ct.assert_reply(ref, "ok", {}) == {}  # reply(ref, ok): empty payload


async def test_f4_socket_ref_needs_a_push_being_handled(ct: ChannelTest) -> None:
    room = await joined(ct)
    room.push("socket_ref_in_info")
    message = await ct.assert_push("socket_ref_refused")
    assert "only inside handle_in" in message.payload["error"]
    channel = RoomChannel.__new__(RoomChannel)
    channel._state = 0  # joining
    channel.topic = "room:x"
    with pytest.raises(NotJoinedError):
        channel.socket_ref()


# -- F5, F6, F7, F16, F17, F29, F30: sockets and joins ---------------------------------------


async def test_f5_f6_sockets_with_id_and_assigns_and_the_joined_channel(
    ct: ChannelTest, phoenix_endpoint: Endpoint
) -> None:
    sock = ct.socket(UserSocket, "user:1", {"user": "ana"})
    assert (sock.id, sock.assigns) == ("user:1", {"user": "ana"})
    room = await sock.join("room:lobby", {"hello": 1})
    assert room.reply == {"joined": "room:lobby", "assigns": {"user": "ana"}}
    assert isinstance(room.channel, RoomChannel)
    assert room.channel.socket is sock.socket and room.channel.endpoint is phoenix_endpoint
    assert room.channel.topic == room.topic == "room:lobby" and room.channel.joined
    assert sock.socket.transport is sock.transport
    assert room.assigns == {"user": "ana"}


async def test_f5_f6_f16_from_another_task(ct: ChannelTest) -> None:
    async def elsewhere() -> TestChannel:
        sock = await ct.connect(UserSocket, {"user": "bo"})
        return await sock.subscribe_and_join("room:from-task")

    room = await asyncio.ensure_future(elsewhere())
    assert room.socket.id == "user_socket:bo"
    await ct.assert_reply(room.push("ping", 1), "ok", {"pong": 1})


async def test_f7_refused_and_crashed_joins_raise_join_error(ct: ChannelTest) -> None:
    with pytest.raises(JoinError) as refused:
        await joined(ct, "room:2", refuse=True)
    assert refused.value.response == {"reason": "refused"}
    assert ("room:2", "shutdown") in TERMINATED
    with pytest.raises(JoinError) as crashed:
        await joined(ct, "room:3", crash=True)
    assert crashed.value.response == {"reason": "join crashed"}
    assert isinstance(crashed.value.__cause__, RuntimeError)
    assert not [t for t in TERMINATED if t[0] == "room:3"]  # a crashed join has no terminate


async def test_f7_joins_of_unrouted_topics_and_explicit_channels(ct: ChannelTest) -> None:
    sock = ct.socket(UserSocket)
    with pytest.raises(UsageError, match="routes no channel for 'nowhere:1'"):
        await sock.join("nowhere:1")
    plain = await sock.join("nowhere:1", channel=PlainChannel)
    assert plain.reply == {"plain": True} and isinstance(plain.channel, PlainChannel)
    routed = await sock.join("room:5")  # the override was for that join only
    assert isinstance(routed.channel, RoomChannel)


async def test_f16_f17_connect(ct: ChannelTest) -> None:
    with pytest.raises(ConnectionRefused, match="returned False"):
        await ct.connect(UserSocket, {"reject": True})
    sock = await ct.connect(UserSocket, {"user": 42, "tags": ("a", "b")}, {"user_agent": "pytest"})
    params, info = SEEN[-1][1], SEEN[-1][2]
    assert params == {"user": 42, "tags": ["a", "b"]}
    assert info["user_agent"] == "pytest" and info["auth_token"] is None
    assert sock.id == "user_socket:42"
    room = await sock.subscribe_and_join("room:f16")  # found through the socket's routes
    assert isinstance(room.channel, RoomChannel)


async def test_f29_route_assigns_are_merged(ct: ChannelTest) -> None:
    sock = ct.socket(UserSocket, assigns={"user": "cy"})
    room = await sock.join("admin:1")
    assert room.assigns == {"user": "cy", "role": "admin"}
    assert sock.assigns == {"user": "cy"}  # the connection's assigns are untouched


async def test_too_many_channels_and_duplicate_joins_follow_the_socket_rules(
    ct: ChannelTest,
) -> None:
    class Small(UserSocket):
        max_channels = 1

    sock = ct.socket(Small)
    first = await sock.join("room:a")
    with pytest.raises(JoinError) as too_many:
        await sock.join("room:b")
    assert too_many.value.response == {"reason": "too many channels joined"}
    again = await sock.join("room:a")
    await first.assert_stopped(None)  # replaced: killed without terminate
    await ct.assert_push("phx_close", {})
    assert again.channel is not first.channel


# -- F12, F13, F14, F19, F20, F22, F23, F24: how channels end --------------------------------


async def test_f12_a_crash_runs_terminate_and_fails_the_test_unless_expected(
    ct: ChannelTest,
) -> None:
    room = await joined(ct)
    room.push("crash")
    error = await room.assert_crashed()
    assert isinstance(error, ValueError) and room.terminate_reason is error
    await ct.refute_push("phx_close")
    message = await ct.assert_push("phx_error")
    assert message.payload == {"reason": "channel_crash"}

    other = await joined(ct, "room:2")
    other.push("crash")
    with pytest.raises(ChannelCrashed, match="crashed: ValueError") as info:
        await ct.assert_reply(other.push("ping"), "ok")
    assert isinstance(info.value.__cause__, ValueError)


async def test_an_unexpected_crash_fails_at_the_end(phoenix_endpoint: Endpoint) -> None:
    with pytest.raises(ChannelCrashed):
        async with ChannelTest(phoenix_endpoint) as ct:
            room = await joined(ct)
            room.push("crash")


async def test_asserting_the_phx_error_push_expects_the_crash(ct: ChannelTest) -> None:
    room = await joined(ct)
    room.push("crash")
    await room.assert_push("phx_error", {"reason": "channel_crash"})


async def test_f13_stop_normal_then_pushing_to_the_dead_channel(ct: ChannelTest) -> None:
    room = await joined(ct)
    room.push("stop")
    assert await room.assert_stopped("normal") == "normal"
    await ct.assert_push("phx_close", {})
    ref = room.push("ping")  # the topic is no longer joined: the socket answers
    await ct.assert_reply(ref, "error", {"reason": "unmatched topic"})


async def test_f14_stop_with_a_reply(ct: ChannelTest) -> None:
    room = await joined(ct)
    ref = room.push("stop_reply", {"bye": 1})
    await ct.assert_reply(ref, "ok", {"bye": 1})
    await room.assert_stopped("shutdown")
    await ct.assert_push("phx_close")
    second = await joined(ct, "room:2")
    await ct.assert_reply(second.push("stop_reply"), "ok", {})
    assert await second.assert_stopped() == "shutdown"


async def test_f19_handle_out_can_stop_the_channel(ct: ChannelTest) -> None:
    room = await joined(ct)
    await room.broadcast_from("stop_out", {})
    assert await room.assert_stopped() == "shutdown"
    await ct.assert_push("phx_close")


async def test_f20_handle_info_pushes_broadcasts_and_stops(ct: ChannelTest) -> None:
    room = await joined(ct)
    room.channel.send({"push": 1})
    await room.assert_push("info_push", {"push": 1})
    await ct.assert_broadcast("info_broadcast", {"push": 1})
    room.channel.send({"stop": True})
    assert await room.assert_stopped() == "shutdown"


async def test_f22_leave_and_leave_again(ct: ChannelTest) -> None:
    room = await joined(ct)
    await ct.assert_reply(room.leave(), "ok", {})
    assert await room.assert_stopped() == "shutdown:left"
    await ct.assert_push("phx_close", {})
    await ct.assert_reply(room.leave(), "ok", {})  # not joined any more: still ok


async def test_f23_close_and_close_again(ct: ChannelTest) -> None:
    room = await joined(ct)
    await room.close()
    assert room.stopped and room.terminate_reason == "shutdown:closed"
    await room.close()
    assert TERMINATED == [("room:1", "shutdown:closed")]


async def test_f24_close_kills_a_channel_whose_terminate_hangs(ct: ChannelTest) -> None:
    room = await joined(ct)
    await ct.assert_reply(room.push("hang"))
    await room.close(timeout=0.05)
    assert room.stopped
    assert TERMINATED == [("room:1", "shutdown:closed")]  # it began, and never finished


async def test_closing_the_socket_ends_every_channel(ct: ChannelTest) -> None:
    sock = ct.socket(UserSocket)
    a, b = await sock.join("room:a"), await sock.join("room:b")
    await sock.close()
    assert (a.terminate_reason, b.terminate_reason) == ("shutdown:closed", "shutdown:closed")


# -- F26, F27, F28: other messages -----------------------------------------------------------


async def test_f26_extra_subscriptions_arrive_in_handle_info(
    ct: ChannelTest, phoenix_endpoint: Endpoint
) -> None:
    room = await joined(ct)
    room.push("subscribe", {"topic": "news"})
    await ct.refute_reply("never")  # let the push run
    await phoenix_endpoint.broadcast("news", "headline", {"x": 1})
    await room.assert_push("relayed", {"from": "news", "event": "headline"})


async def test_f27_unexpected_messages_are_logged_and_the_channel_lives_on(
    ct: ChannelTest, caplog: pytest.LogCaptureFixture
) -> None:
    plain = await ct.join(UserSocket, "plain:1", channel=PlainChannel)
    with caplog.at_level(logging.WARNING, "phoenix_channels.channel"):
        plain.channel.send({"unexpected": True})
        await ct.refute_push("anything")
    assert "unexpected message" in caplog.text and not plain.stopped


async def test_f28_disconnect_through_the_socket_id(
    ct: ChannelTest, phoenix_endpoint: Endpoint
) -> None:
    sock = await ct.connect(UserSocket, {"user": "7"})
    room = await sock.join("room:dc")
    ct.subscribe("user_socket:7")
    await phoenix_endpoint.broadcast("user_socket:7", "disconnect", {})
    await ct.assert_broadcast("disconnect", topic="user_socket:7")
    assert await room.assert_stopped() == "shutdown:disconnected"
    assert sock.closed == (1001, "disconnected")


# -- F32 and the helpers' own errors ---------------------------------------------------------


def test_f32_bad_options_are_refused_when_defined() -> None:
    with pytest.raises(TypeError):
        Endpoint(sockets={"/socket": UserSocket}, drainer=False)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError):
        Endpoint(sockets={"/socket": UserSocket}, drain_batch_size=0)
    with pytest.raises(ConfigurationError, match="max_channels"):
        type("Bad", (Socket,), {"max_channels": 0})


async def test_failure_messages_say_what_arrived(ct: ChannelTest) -> None:
    room = await joined(ct)
    room.push("push_me", {"x": 1})
    with pytest.raises(AssertionError) as info:
        await ct.assert_push("pushed", {"x": 2}, timeout=0.05)
    text = str(info.value)
    assert "assert_push('pushed', {'x': 2}): nothing matching arrived within 0.05 s" in text
    assert "push    'room:1' 'pushed' {'x': 1}" in text
    with pytest.raises(AssertionError, match=r"is 'ok' \{'pong': 1\}; expected 'error'"):
        await ct.assert_reply(room.push("ping", 1), "error")


async def test_the_helpers_refuse_misuse(phoenix_endpoint: Endpoint) -> None:
    ct = ChannelTest(phoenix_endpoint)
    with pytest.raises(UsageError, match="start the ChannelTest first"):
        ct.socket(UserSocket)
    await ct.start()
    with pytest.raises(UsageError, match="Socket subclass"):
        ct.socket(PlainChannel)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="Channel subclass"):
        await ct.join(UserSocket, "room:1", channel=UserSocket)  # type: ignore[arg-type]
    await ct.stop()
    assert phoenix_endpoint.pubsub.topics() == 0


async def test_the_fixture_from_the_plugin(channel_test: ChannelTest) -> None:
    room = await channel_test.subscribe_and_join(UserSocket, "room:fixture")
    await channel_test.assert_reply(room.push("ping", "x"), "ok", {"pong": "x"})
