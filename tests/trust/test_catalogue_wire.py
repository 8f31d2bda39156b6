"""Catalogue groups A and B (WebSocket + channels, raw sockets) over real sockets.

The lines already covered elsewhere are mapped in docs/catalogue.md; these
are the rest. Refs follow Phoenix's test client: join refs from "11", refs
from "1".
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from phoenix_channels import Channel, Endpoint, JoinError, RawSocket, Socket, reply, stop

from ..support import Server
from .wire import RawClient, Refused

TERMINATED: list[tuple[str, Any]] = []


class RoomChannel(Channel):
    intercept = ["new_msg"]

    async def join(self, topic: str, payload: Any) -> Any:
        if topic == "room:error":
            raise JoinError({"reason": "custom error"})
        if topic == "room:raise":
            raise RuntimeError("join raised")
        if topic == "room:info":
            return {"info": self.socket.assigns["info"]}
        self.send("after_join")
        return None

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "new_msg":
            await self.broadcast("new_msg", payload)
        elif event == "boom":
            raise RuntimeError("handle_in raised")
        elif event == "close":
            return stop("normal")
        elif event == "echo":
            return reply("ok", payload)
        return None

    async def handle_out(self, event: str, payload: Any) -> None:
        await self.push(event, {**payload, "transport": "websocket"})

    async def handle_info(self, message: Any) -> None:
        if message == "after_join":
            await self.push("joined", {"status": "connected"})
            await self.broadcast("user_entered", {"user": None})

    async def terminate(self, reason: Any) -> None:
        TERMINATED.append((self.topic, reason if isinstance(reason, str) else repr(reason)))
        if reason == "shutdown:left":
            await self.push("you_left", {"message": "bye!"})


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}
    auth_token = True

    async def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> bool:
        self.assigns["info"] = {k: v for k, v in connect_info.items()}
        self.assigns["user"] = params.get("user_id")
        return params.get("reject") is None

    def id(self) -> str | None:
        user = self.assigns.get("user")
        return f"user_sockets:{user}" if user else None


class OneChannelSocket(UserSocket):
    max_channels = 1


class EchoParams(RawSocket):
    """B4-B6: replies with its connect params; "ping" schedules a handle_info push."""

    async def handle_in(self, data: bytes, binary: bool) -> None:
        if data == b"ping":
            self.send_info("pong")
            return
        self.send(json.dumps(self.params, sort_keys=True))

    async def handle_info(self, message: Any) -> None:
        self.send(str(message))


@pytest.fixture(params=[True, False], ids=["fast", "asgi"])
async def server(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    TERMINATED.clear()
    endpoint = Endpoint(
        sockets={
            "/ws/admin": UserSocket,
            "/ws/connect_info": UserSocket,
            "/ws/one": OneChannelSocket,
            "/raw": EchoParams,
        },
        check_origin=["//example.com"],
    )
    async with Server(endpoint, fast=request.param) as srv:
        yield srv


def url(srv: Server, path: str = "/ws/admin", vsn: str = "2.0.0", extra: str = "") -> str:
    return f"ws://127.0.0.1:{srv.port}{path}/websocket?vsn={vsn}{extra}"


async def recv(ws: Any) -> Any:
    async with asyncio.timeout(5):
        return json.loads(await ws.recv())


async def join(
    ws: Any, topic: str, join_ref: str = "11", ref: str = "1", payload: Any = None
) -> Any:
    await ws.send(json.dumps([join_ref, ref, topic, "phx_join", payload or {}]))
    return await recv(ws)


async def wait_for(condition: Any, what: str) -> None:
    for _ in range(250):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# -- A1-A6 ---------------------------------------------------------------------------------


async def test_a1_nested_path_and_refs_v2(server: Server) -> None:
    async with websockets.connect(url(server)) as ws:
        assert await join(ws, "room:lobby") == [
            "11",
            "1",
            "room:lobby",
            "phx_reply",
            {"response": {}, "status": "ok"},
        ]


async def test_a1_nested_path_and_refs_v1(server: Server) -> None:
    async with websockets.connect(url(server, vsn="1.0.0")) as ws:
        await ws.send(
            json.dumps(
                {
                    "topic": "room:lobby",
                    "event": "phx_join",
                    "payload": {},
                    "ref": "1",
                    "join_ref": "11",
                }
            )
        )
        assert await recv(ws) == {
            "event": "phx_reply",
            "payload": {"response": {}, "status": "ok"},
            "ref": "1",
            "topic": "room:lobby",
        }  # no join_ref in V1


async def test_a2_a3_after_join_push_broadcast_and_intercept(server: Server) -> None:
    async with websockets.connect(url(server)) as ws:
        await join(ws, "room:lobby")
        assert await recv(ws) == ["11", None, "room:lobby", "joined", {"status": "connected"}]
        assert await recv(ws) == [None, None, "room:lobby", "user_entered", {"user": None}]
        await ws.send(json.dumps(["11", "2", "room:lobby", "new_msg", {"body": "hi!"}]))
        assert await recv(ws) == [
            "11",
            None,
            "room:lobby",
            "new_msg",
            {"body": "hi!", "transport": "websocket"},
        ]


async def test_a4_a5_leave(server: Server) -> None:
    async with websockets.connect(url(server)) as ws:
        await join(ws, "room:lobby")
        await recv(ws), await recv(ws)  # after-join push and broadcast
        await ws.send(json.dumps(["11", "2", "room:lobby", "phx_leave", {}]))
        frames = [await recv(ws) for _ in range(3)]
        assert ["11", "2", "room:lobby", "phx_reply", {"response": {}, "status": "ok"}] in frames
        assert ["11", "11", "room:lobby", "phx_close", {}] in frames
        assert ["11", None, "room:lobby", "you_left", {"message": "bye!"}] in frames
        assert TERMINATED == [("room:lobby", "shutdown:left")]
        await ws.send(json.dumps(["11", "3", "room:lobby", "new_msg", {"body": "x"}]))
        assert await recv(ws) == [
            None,
            "3",
            "room:lobby",
            "phx_reply",
            {"response": {"reason": "unmatched topic"}, "status": "error"},
        ]


async def test_a6_the_101st_join_is_refused(server: Server) -> None:
    async with websockets.connect(url(server)) as ws:
        for n in range(1, 101):
            await ws.send(json.dumps([str(n + 10), str(n), f"room:{n}", "phx_join", {}]))
        seen: dict[str, set[str]] = {}
        for _ in range(300):  # 100 x (reply, push, broadcast)
            frame = await recv(ws)
            seen.setdefault(frame[2], set()).add(frame[3])
        assert all(events == {"phx_reply", "joined", "user_entered"} for events in seen.values())
        assert len(seen) == 100
        assert await join(ws, "room:101", "111", "101") == [
            "111",
            "101",
            "room:101",
            "phx_reply",
            {"response": {"reason": "too many channels joined"}, "status": "error"},
        ]


async def test_a7_one_channel_per_transport(server: Server) -> None:
    async with websockets.connect(url(server, "/ws/one")) as ws:
        await join(ws, "room:1")
        await recv(ws), await recv(ws)
        assert (await join(ws, "room:2", "12", "2"))[4] == {
            "response": {"reason": "too many channels joined"},
            "status": "error",
        }


# -- A8-A13: connect_info --------------------------------------------------------------------


async def test_a8_to_a13_connect_info(server: Server) -> None:
    headers = {
        "x-application": "trust",
        "traceparent": "00-abc-def-01",
        "tracestate": "k=v",
        "user-agent": "catalogue/1.0",
    }
    async with websockets.connect(
        url(server, "/ws/connect_info", extra="&a=1"),
        additional_headers=headers,
        user_agent_header=None,
        subprotocols=["phoenix"],  # type: ignore[list-item]
        compression="deflate",
    ) as ws:
        info = (await join(ws, "room:info"))[4]["response"]["info"]
    assert ["x-application", "trust"] in info["x_headers"]
    assert ["traceparent", "00-abc-def-01"] in info["trace_context_headers"]
    assert ["tracestate", "k=v"] in info["trace_context_headers"]
    sec = dict(info["sec_websocket_headers"])
    assert sec["sec-websocket-protocol"] == "phoenix"
    assert sec["sec-websocket-extensions"].startswith("permessage-deflate")
    assert info["peer_data"]["address"] == "127.0.0.1" and info["peer_data"]["port"] > 0
    uri = info["uri"]
    assert (uri["host"], uri["port"], uri["path"]) == (
        "127.0.0.1",
        server.port,
        "/ws/connect_info/websocket",
    )
    assert uri["query"] == "vsn=2.0.0&a=1" and uri["scheme"] == "ws"
    assert info["user_agent"] == "catalogue/1.0"


# -- A18-A30 ---------------------------------------------------------------------------------


async def test_a18_a19_crash_and_client_close(server: Server) -> None:
    async with websockets.connect(url(server)) as ws:
        await join(ws, "room:lobby")
        await join(ws, "room:other", "12", "2")
        for _ in range(4):
            await recv(ws)
        await ws.send(json.dumps(["11", "3", "room:lobby", "boom", {}]))
        assert await recv(ws) == [
            "11",
            "11",
            "room:lobby",
            "phx_error",
            {"reason": "channel_crash"},
        ]
    await wait_for(lambda: len(TERMINATED) == 2, "both channels to terminate")
    assert TERMINATED[0][0] == "room:lobby" and "RuntimeError" in TERMINATED[0][1]
    assert TERMINATED[1] == ("room:other", "shutdown:closed")


async def test_a20_a28_unmatched_topics(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    async with websockets.connect(url(server)) as ws:
        await ws.send(json.dumps(["11", "1", "room:never", "new_msg", {}]))
        assert await recv(ws) == [
            None,
            "1",
            "room:never",
            "phx_reply",
            {"response": {"reason": "unmatched topic"}, "status": "error"},
        ]
        with caplog.at_level(logging.WARNING, "phoenix_channels.socket"):
            assert await join(ws, "unrouted:1", "12", "2") == [
                None,
                "2",
                "unrouted:1",
                "phx_reply",
                {"response": {"reason": "unmatched topic"}, "status": "error"},
            ]
    assert "ignoring unmatched topic 'unrouted:1'" in caplog.text


async def test_a21_a22_b2_origin_and_refused_connect(server: Server) -> None:
    for path in ("/ws/admin", "/raw"):
        good = await RawClient.connect(
            server.port, f"{path}/websocket?vsn=2.0.0", {"Origin": "https://example.com"}
        )
        good.close()
        with pytest.raises(Refused) as info:
            await RawClient.connect(
                server.port, f"{path}/websocket?vsn=2.0.0", {"Origin": "http://notallowed.com"}
            )
        assert info.value.status == 403
    with pytest.raises(Refused) as info:
        await RawClient.connect(server.port, "/ws/admin/websocket?vsn=2.0.0&reject=1")
    assert info.value.status == 403


async def test_a24_disconnect_by_socket_id(server: Server) -> None:
    async with websockets.connect(url(server, extra="&user_id=1001")) as ws:
        await join(ws, "room:lobby")
        await join(ws, "room:other", "12", "2")
        for _ in range(4):
            await recv(ws)
        await server.endpoint.broadcast("user_sockets:1001", "disconnect", {})
        with pytest.raises(ConnectionClosed) as info:
            await recv(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    await wait_for(lambda: len(TERMINATED) == 2, "both channels to terminate")
    assert {reason for _, reason in TERMINATED} == {"shutdown:disconnected"}


async def test_a25_duplicate_join(server: Server) -> None:
    async with websockets.connect(url(server)) as ws:
        await join(ws, "room:lobby")
        await recv(ws), await recv(ws)
        assert (await join(ws, "room:lobby", "12", "2"))[4]["status"] == "ok"
        assert await recv(ws) == ["11", "11", "room:lobby", "phx_close", {}]


async def test_a26_unsupported_vsn_is_refused_and_logged(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, "phoenix_channels.endpoint"),
        pytest.raises(Refused) as info,
    ):
        await RawClient.connect(server.port, "/ws/admin/websocket?vsn=123.1.1")
    assert info.value.status == 403
    assert "unsupported vsn '123.1.1'" in caplog.text


async def test_a29_join_outcomes_and_a_custom_close_event(server: Server) -> None:
    async with websockets.connect(url(server)) as ws:
        assert await join(ws, "room:error", "11", "1") == [
            "11",
            "1",
            "room:error",
            "phx_reply",
            {"response": {"reason": "custom error"}, "status": "error"},
        ]
        assert await join(ws, "room:raise", "12", "2") == [
            "12",
            "2",
            "room:raise",
            "phx_reply",
            {"response": {"reason": "join crashed"}, "status": "error"},
        ]
        assert await join(ws, "room:ok", "13", "3") == [
            "13",
            "3",
            "room:ok",
            "phx_reply",
            {"response": {}, "status": "ok"},
        ]
        await recv(ws), await recv(ws)
        await ws.send(json.dumps(["13", "4", "room:ok", "close", {}]))
        assert await recv(ws) == ["13", "13", "room:ok", "phx_close", {}]


# -- B: raw sockets ---------------------------------------------------------------------------


async def test_b1_a_plain_get_is_told_to_upgrade(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /raw/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    async with asyncio.timeout(5):
        response = await reader.read()
    writer.close()
    assert response.startswith(b"HTTP/1.1 400")
    assert b"'connection' header must contain 'upgrade'" in response


async def test_b4_b5_b6_raw_socket_replies_controls_and_info(server: Server) -> None:
    async with websockets.connect(
        f"ws://127.0.0.1:{server.port}/raw/websocket?vsn=2.0.0&a=b", ping_interval=None
    ) as ws:
        await ws.send("params?")
        assert json.loads(await ws.recv()) == {"a": "b", "vsn": "2.0.0"}
        pong = await ws.ping(b"payload")
        async with asyncio.timeout(5):
            await pong
        await ws.send("params?")  # the ping did not disturb the text traffic
        assert json.loads(await ws.recv())["a"] == "b"
        await ws.send("ping")
        assert await ws.recv() == "pong"
