"""Telemetry events over real sockets: each one fires with the documented measurements
and metadata (docs/telemetry.md)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from phoenix_channels import Channel, Endpoint, JoinError, PubSub, Socket, reply, stop, telemetry
from phoenix_channels.presence import Presence

from .pubsub.engines import OwnServer, unique_prefix, wait_until
from .support import Server
from .trust.wire import RawClient

Record = tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]


class Recorder:
    """Attaches to every built-in event and keeps what it saw."""

    def __init__(self) -> None:
        self.seen: list[Record] = []

    def __call__(
        self, name: tuple[str, ...], measurements: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        self.seen.append((name, dict(measurements), dict(metadata)))

    def of(self, *suffix: str) -> list[Record]:
        name = ("phoenix_channels", *suffix)
        return [record for record in self.seen if record[0] == name]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    telemetry.attach("test-recorder", telemetry.EVENTS, rec)
    yield rec
    telemetry.detach("test-recorder")


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        if payload.get("refuse"):
            raise JoinError({"reason": "refused"})
        return None

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "echo":
            return reply("ok", payload)
        if event == "push_me":
            await self.push("pushed", {"n": 1})
            return None
        if event == "shout":
            await self.broadcast("shout", payload)
            return None
        if event == "leave_now":
            return stop("normal", reply("ok", {}))
        raise RuntimeError("boom")


class RoomSocket(Socket):
    channels = {"room:*": RoomChannel}
    max_messages_per_second = 20

    async def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> bool:
        return params.get("token") != "reject"


def frame(ref: str, topic: str, event: str, payload: Any, join_ref: str | None = "1") -> str:
    return json.dumps([join_ref, ref, topic, event, payload])


async def reply_to(ws: Any, ref: str) -> Any:
    async with asyncio.timeout(5):
        while True:
            got = json.loads(await ws.recv())
            if got[1] == ref and got[3] == "phx_reply":
                return got[4]


def test_nothing_attached_means_every_event_is_off() -> None:
    for name in telemetry.EVENTS:
        assert telemetry.handlers(name) == []
    assert not telemetry.CHANNEL_JOIN.on


def test_attach_and_detach() -> None:
    calls: list[Any] = []
    telemetry.attach("a", [telemetry.CHANNEL_PUSH, ("my_app", "thing")], lambda *a: calls.append(a))
    try:
        assert telemetry.CHANNEL_PUSH.on
        with pytest.raises(ValueError, match="attached already"):
            telemetry.attach("a", [telemetry.CHANNEL_PUSH], print)
        with pytest.raises(TypeError, match="not one bare tuple"):
            telemetry.attach("b", ("my_app", "thing"), print)  # type: ignore[arg-type]
        telemetry.execute(("my_app", "thing"), {"n": 1}, {"k": "v"})
        assert calls == [(("my_app", "thing"), {"n": 1}, {"k": "v"})]
    finally:
        assert telemetry.detach("a")
    assert not telemetry.CHANNEL_PUSH.on
    assert not telemetry.detach("a")
    telemetry.execute(("my_app", "thing"), {"n": 2})
    assert len(calls) == 1


def test_a_raising_handler_is_detached(caplog: pytest.LogCaptureFixture) -> None:
    def bad(*_: Any) -> None:
        raise ValueError("bad handler")

    telemetry.attach("bad", [("my_app", "bad")], bad)
    telemetry.execute(("my_app", "bad"), {})
    assert telemetry.handlers(("my_app", "bad")) == []
    assert "telemetry handler 'bad' raised" in caplog.text


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "asgi"])
async def test_socket_and_channel_events(recorder: Recorder, fast: bool) -> None:
    endpoint = Endpoint(sockets={"/socket": RoomSocket}, check_origin=False)
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with Server(endpoint, fast=fast) as server:
        with pytest.raises(InvalidStatus):
            async with websockets.connect(server.url + "?vsn=2.0.0&token=reject"):
                pass
        async with websockets.connect(
            server.url + "?vsn=2.0.0&user=1", additional_headers={"traceparent": trace}
        ) as ws:
            await ws.send(frame("1", "room:1", "phx_join", {}))
            assert (await reply_to(ws, "1"))["status"] == "ok"
            await ws.send(frame("2", "room:2", "phx_join", {"refuse": True}, join_ref="2"))
            assert (await reply_to(ws, "2"))["status"] == "error"
            await ws.send(frame("3", "room:1", "echo", {"a": 1}))
            assert (await reply_to(ws, "3"))["response"] == {"a": 1}
            await ws.send(frame("4", "room:1", "push_me", {}))
            await ws.send(frame("5", "room:1", "shout", {"s": 1}))
            await ws.send(frame("6", "room:1", "crash", {}))
            await ws.send(frame("7", "room:3", "phx_join", {}, join_ref="7"))
            assert (await reply_to(ws, "7"))["status"] == "ok"
            await ws.send(frame("8", "room:3", "leave_now", {}, join_ref="7"))
            assert (await reply_to(ws, "8"))["status"] == "ok"
            await wait_until(lambda: len(recorder.of("channel", "leave")) == 2, "two leaves")
            for n in range(30):  # over max_messages_per_second
                await ws.send(frame(f"h{n}", "phoenix", "heartbeat", {}, join_ref=None))
            refused = 0
            for n in range(30):
                refused += (await reply_to(ws, f"h{n}"))["status"] == "error"
    await wait_until(lambda: recorder.of("socket", "close"), "the socket closed")

    connects = recorder.of("socket", "connect")
    assert [(m["result"], m["status"]) for _, _, m in connects] == [("error", 403), ("ok", None)]
    _, measured, meta = connects[1]
    assert measured["duration"] >= 0
    assert meta["endpoint"] is endpoint and meta["socket_cls"] is RoomSocket
    assert meta["transport"] == "websocket" and meta["path"] == "/socket/websocket"
    assert meta["params"] == {"vsn": "2.0.0", "user": "1"}
    assert meta["trace_context_headers"] == [("traceparent", trace)]
    sock = meta["socket"]
    assert isinstance(sock, RoomSocket)

    [(_, _, opened)] = recorder.of("socket", "open")
    assert opened == {"socket": sock, "transport": "websocket"}
    [(_, closed_m, closed)] = recorder.of("socket", "close")
    assert closed == {"socket": sock, "transport": "websocket"} and closed_m["duration"] > 0

    joins = [
        (m["topic"], m["route"], m["result"], m["params"])
        for *_, m in recorder.of("channel", "join")
    ]
    assert joins == [
        ("room:1", "room:*", "ok", {}),
        ("room:2", "room:*", "error", {"refuse": True}),
        ("room:3", "room:*", "ok", {}),
    ]
    assert all(r[1]["duration"] >= 0 for r in recorder.of("channel", "join"))

    handled = [
        (m["topic"], m["event"], m["outcome"], m["status"])
        for *_, m in recorder.of("channel", "handle_in")
    ]
    assert handled == [
        ("room:1", "echo", "reply", "ok"),
        ("room:1", "push_me", "noreply", None),
        ("room:1", "shout", "noreply", None),
        ("room:1", "crash", "crash", None),
        ("room:3", "leave_now", "stop", "ok"),
    ]
    [(_, _, pushed)] = recorder.of("channel", "push")
    assert (pushed["topic"], pushed["event"], pushed["socket"]) == ("room:1", "pushed", sock)

    [(_, fanout, broadcast)] = recorder.of("pubsub", "broadcast")
    size = fanout["bytes"]
    assert fanout == {"subscribers": 1, "deliveries": 1, "bytes": size} and size > 0
    assert (broadcast["topic"], broadcast["event"]) == ("room:1", "shout")
    assert broadcast["by_transport"] == {"websocket": (1, size)}

    leaves = [m["topic"] for *_, m in recorder.of("channel", "leave")]
    assert sorted(leaves) == ["room:1", "room:3"]  # the crash, then the stop

    limits = recorder.of("socket", "limit")
    assert refused > 0 and len(limits) == refused
    assert limits[0][1] == {"count": 1}
    assert limits[0][2] == {
        "socket": sock,
        "limit": "rate",
        "closed": False,
        "transport": "websocket",
    }

    received = recorder.of("socket", "receive")
    assert len(received) == 8 + 30
    assert received[0][1]["bytes"] == len(frame("1", "room:1", "phx_join", {}))
    sent = recorder.of("socket", "send")
    # replies to 1, 2, 3, 7, 8, the push, phx_error, phx_close, 30 heartbeats (the
    # broadcast's delivery is in pubsub.broadcast)
    assert len(sent) == 38 and all(r[1]["bytes"] > 0 for r in sent)
    assert all(r[2] == {"socket": sock, "transport": "websocket"} for r in sent)

    [(_, drained, drain_meta)] = recorder.of("endpoint", "drain")
    assert drain_meta == {"endpoint": endpoint}
    assert drained["connections"] == 0 and drained["duration"] >= 0


async def slow_reader(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    client = await RawClient.connect(port, receive_buffer=4096)
    return client.reader, client.writer


async def test_a_slow_consumer_closed(recorder: Recorder) -> None:
    endpoint = Endpoint(
        sockets={"/socket": RoomSocket}, check_origin=False, max_outbound_buffer=65536
    )
    async with Server(endpoint) as server:
        _reader, writer = await slow_reader(server.port)
        await wait_until(lambda: recorder.of("socket", "open"), "the socket is open")
        [(_, _, meta)] = recorder.of("socket", "open")
        sock = meta["socket"]
        blob = "x" * 16384
        for _ in range(2000):  # 32 MiB, far beyond what the kernel buffers hold
            if recorder.of("socket", "limit"):
                break
            sock._send(sock._encoder.push(None, None, "room:1", "blob", {"b": blob}))
            await asyncio.sleep(0)
        writer.close()
    [(_, measured, limit)] = recorder.of("socket", "limit")
    assert measured == {"count": 1}
    assert limit == {
        "socket": sock,
        "limit": "slow_consumer",
        "closed": True,
        "transport": "websocket",
    }


class PresenceChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        self.send("track")
        return None

    async def handle_info(self, message: Any) -> None:
        await self.endpoint.presence.track(self, "user-1", {"online": True})  # type: ignore[attr-defined]


class PresenceSocket(Socket):
    channels = {"presence:*": PresenceChannel}


async def test_presence_diffs(recorder: Recorder) -> None:
    endpoint = Endpoint(sockets={"/socket": PresenceSocket}, check_origin=False)
    presence = Presence(endpoint)
    endpoint.presence = presence  # type: ignore[attr-defined]
    async with Server(endpoint) as server:
        async with websockets.connect(server.url + "?vsn=2.0.0") as ws:
            await ws.send(frame("1", "presence:lobby", "phx_join", {}))
            assert (await reply_to(ws, "1"))["status"] == "ok"
            await wait_until(lambda: recorder.of("presence", "diff"), "the join diff")
        await wait_until(lambda: len(recorder.of("presence", "diff")) == 2, "the leave diff")
    diffs = [(m, meta["topic"], meta["presence"]) for _, m, meta in recorder.of("presence", "diff")]
    assert diffs == [
        ({"joins": 1, "leaves": 0}, "presence:lobby", presence),
        ({"joins": 0, "leaves": 1}, "presence:lobby", presence),
    ]


async def test_engine_link_and_publish(recorder: Recorder, tmp_path: Path) -> None:
    server = OwnServer("redis", tmp_path)
    await server.start()
    node = PubSub.redis(server.url, node_name="a", prefix=unique_prefix(), max_backoff=0.2)
    try:
        await node.start()
        await wait_until(lambda: recorder.of("pubsub", "link_up"), "the first link up")
        await node.broadcast("room:1", {"hello": 1})
        server.kill()
        await wait_until(lambda: recorder.of("pubsub", "link_down"), "the link down")
        await server.start()
        await wait_until(lambda: len(recorder.of("pubsub", "link_up")) == 2, "the link back")
    finally:
        await node.stop()
        server.kill()
    first, again = recorder.of("pubsub", "link_up")
    assert first[1] == {"gap": 0.0, "failed": 0} and first[2]["reconnect"] is False
    assert first[2]["engine"] == "redis" and first[2]["adapter"] is node.adapter
    assert again[2]["reconnect"] is True and again[1]["gap"] > 0 and again[1]["failed"] == 0
    [(_, _, down)] = recorder.of("pubsub", "link_down")
    assert down["engine"] == "redis" and down["reason"]
    [(_, published, meta)] = recorder.of("pubsub", "publish")
    assert published["duration"] >= 0 and published["bytes"] > 0
    assert meta["topic"] == "room:1" and meta["engine"] == "redis"


class PollingSocket(RoomSocket):
    longpoll = True


async def test_long_polling_events(recorder: Recorder) -> None:
    from phoenix_channels.client import Socket as ClientSocket

    endpoint = Endpoint(sockets={"/socket": PollingSocket}, check_origin=False)
    async with Server(endpoint) as server:
        client = ClientSocket(
            f"ws://127.0.0.1:{server.port}/socket", transport="longpoll", timeout=5.0
        )
        async with client:
            channel = client.channel("room:lp")
            await channel.join()
            assert (await channel.push("echo", {"a": 1})).response == {"a": 1}
            shout = asyncio.ensure_future(channel.push("shout", {"s": 1}))  # no reply
            await wait_until(lambda: recorder.of("pubsub", "broadcast"), "the broadcast")
            shout.cancel()
    await wait_until(lambda: recorder.of("socket", "close"), "the session closed")
    [(_, _, connect)] = recorder.of("socket", "connect")
    assert (connect["result"], connect["transport"]) == ("ok", "longpoll")
    [(_, _, opened)] = recorder.of("socket", "open")
    assert opened["transport"] == "longpoll"
    [(_, _, closed)] = recorder.of("socket", "close")
    assert closed["transport"] == "longpoll"
    assert {r[2]["transport"] for r in recorder.of("socket", "receive")} == {"longpoll"}
    assert {r[2]["transport"] for r in recorder.of("socket", "send")} == {"longpoll"}
    [(_, fanout, broadcast)] = recorder.of("pubsub", "broadcast")
    assert broadcast["by_transport"] == {"longpoll": (1, fanout["bytes"])}


def test_broadcast_fan_out_counts_frames_by_kind_of_subscriber(recorder: Recorder) -> None:
    """Frames written per transport: the sender skipped, intercepted events and plain
    callbacks not counted as frames, two serializers' frames counted apart."""
    from phoenix_channels import Broadcast
    from phoenix_channels.protocol import V1, V2
    from phoenix_channels.transports.websocket import frame_encoder

    class Owner:  # a subscriber as the fast lane sees one (a channel)
        def __init__(self) -> None:
            self.got: list[Any] = []

        def _intercepted(self, message: Any) -> None:
            self.got.append(("intercepted", message.event))

    pubsub = PubSub()
    v1, v2 = frame_encoder(V1), frame_encoder(V2)
    owners = [Owner() for _ in range(6)]
    for owner, encoder in zip(owners[:4], (v2, v2, v2, v1), strict=True):
        pubsub.subscribe_fastlane("room:1", owner, owner.got.append, encoder, None)
    pubsub.subscribe_fastlane("room:1", owners[4], owners[4].got.append, v2, frozenset({"shout"}))
    pubsub.subscribe_fastlane("room:1", owners[5], owners[5].got.append, v2, frozenset({"other"}))
    called: list[Any] = []
    pubsub.subscribe("room:1", called.append)

    pubsub.local_broadcast("room:1", Broadcast("room:1", "shout", {"n": 1}), from_=owners[0])
    [(_, fanout, meta)] = recorder.of("pubsub", "broadcast")
    v2_frame, v1_frame = owners[1].got[0], owners[3].got[0]
    # 7 subscribers less the sender; frames: owners 1, 2, 5 (V2) and 3 (V1); owner 4
    # intercepts "shout" and the callback gets the message itself.
    assert fanout == {
        "subscribers": 6,
        "deliveries": 4,
        "bytes": 3 * len(v2_frame) + len(v1_frame),
    }
    assert meta["by_transport"] == {"websocket": (4, 3 * len(v2_frame) + len(v1_frame))}
    assert owners[0].got == [] and owners[4].got == [("intercepted", "shout")]
    assert len(called) == 1 and all(len(o.got) == 1 for o in owners[1:])
