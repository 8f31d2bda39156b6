"""Hostile input over real sockets, on both WebSocket paths.

Every case sends one kind of bad input from its own connection and checks
the documented answer (docs/limits.md: a close code, an error reply, an HTTP
status). Around it, a bystander client joined on the same server must keep
working: after each case a broadcast still reaches it and its push is still
answered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import websockets

from phoenix_channels import Channel, Endpoint, Socket, TokenError, reply, token

from ..support import Server
from .wire import RawClient, Refused, frame

SECRET = "the bad-input suite's secret key base, long enough"
SALT = "user socket"


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return {"nick": payload.get("nick")}  # a non-object payload crashes the join

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "echo":
            return reply("ok", payload)
        if event == "field":  # a list payload makes this raise: the channel crashes
            return reply("ok", {"x": payload["x"]})
        return None


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}
    auth_token = True

    async def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> bool:
        try:
            self.assigns["user"] = token.verify(
                self.endpoint,
                SALT,
                connect_info["auth_token"] or params.get("token"),
                max_age=3600,
            )
        except TokenError:
            return False
        return True


class NamedSocket(UserSocket):
    def id(self) -> str | None:
        return "bad_input:named"


class LimitedSocket(UserSocket):
    max_messages_per_second = 20
    max_payload_depth = 8


def good_token() -> str:
    return token.sign(SECRET, SALT, {"id": 1})


@pytest.fixture(params=[True, False], ids=["fast", "asgi"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    endpoint = Endpoint(
        sockets={"/socket": UserSocket, "/limited": LimitedSocket, "/named": NamedSocket},
        check_origin=["//allowed.example"],
        secret_key_base=SECRET,
        max_frame_size=65536,
    )
    async with Server(endpoint, fast=request.param) as srv:
        yield srv


def url(srv: Server, path: str = "/socket", **query: str) -> str:
    query.setdefault("vsn", "2.0.0")
    query.setdefault("token", good_token())
    return f"ws://127.0.0.1:{srv.port}{path}/websocket?" + "&".join(
        f"{k}={v}" for k, v in query.items()
    )


def target(path: str = "/socket", **query: str) -> str:
    query.setdefault("vsn", "2.0.0")
    query.setdefault("token", good_token())
    return f"{path}/websocket?" + "&".join(f"{k}={v}" for k, v in query.items())


class Bystander:
    """A well-behaved client on the same server, checked after every attack."""

    def __init__(self, srv: Server, ws: Any) -> None:
        self.srv, self.ws, self.n = srv, ws, 0

    async def check(self) -> None:
        self.n += 1
        await self.srv.endpoint.broadcast("room:bystander", "tick", {"n": self.n})
        async with asyncio.timeout(5):
            assert json.loads(await self.ws.recv()) == [
                None,
                None,
                "room:bystander",
                "tick",
                {"n": self.n},
            ]
            await self.ws.send(
                json.dumps(["1", str(self.n), "room:bystander", "echo", {"n": self.n}])
            )
            assert json.loads(await self.ws.recv())[4] == {
                "response": {"n": self.n},
                "status": "ok",
            }


@pytest.fixture
async def bystander(server: Server) -> AsyncIterator[Bystander]:
    async with websockets.connect(url(server)) as ws:
        await ws.send(json.dumps(["1", "0", "room:bystander", "phx_join", {}]))
        assert json.loads(await ws.recv())[4]["status"] == "ok"
        keeper = Bystander(server, ws)
        yield keeper
        await keeper.check()


async def joined(srv: Server, path: str = "/socket", topic: str = "room:1") -> RawClient:
    client = await RawClient.connect(srv.port, target(path))
    client.send_json(["1", "1", topic, "phx_join", {}])
    assert (await client.recv_json())[4]["status"] == "ok"
    return client


# -- frames that close the connection, each with its documented code ----------------------

TEXT, BINARY = 0x1, 0x2
CLOSING_CASES: list[tuple[str, bytes, int]] = [
    ("malformed JSON", frame(TEXT, b"{not json"), 1011),
    ("a JSON object under V2", frame(TEXT, b'{"topic":"room:1"}'), 1011),
    ("four elements", frame(TEXT, b'["1","2","room:1","echo"]'), 1011),
    ("an empty array", frame(TEXT, b"[]"), 1011),
    ("join_ref of the wrong type", frame(TEXT, b'[[1],"2","room:1","echo",{}]'), 1011),
    ("ref of the wrong type", frame(TEXT, b'["1",{"r":1},"room:1","echo",{}]'), 1011),
    ("ref that is a float", frame(TEXT, b'["1",2.5,"room:1","echo",{}]'), 1011),
    ("topic of the wrong type", frame(TEXT, b'["1","2",7,"echo",{}]'), 1011),
    ("event of the wrong type", frame(TEXT, b'["1","2","room:1",null,{}]'), 1011),
    ("invalid UTF-8 in a text frame", frame(TEXT, b'["1","2","room:1","echo",{"\xff":1}]'), 1007),
    ("a binary frame that is not a push", frame(BINARY, b"\x01\x00\x00\x00\x00"), 1011),
    ("a truncated binary frame", frame(BINARY, b"\x00\x05\x05\x06\x04ab"), 1011),
    ("binary garbage", frame(BINARY, bytes(range(256))[::-1]), 1011),
    ("a frame over max_frame_size", frame(TEXT, b'"' + b"x" * 70000 + b'"'), 1009),
    (
        "nesting past the JSON decoder's own limit",
        frame(TEXT, b'["1","2","room:1","echo",' + b"[" * 2000 + b"]" * 2000 + b"]"),
        1011,
    ),
    ("an unmasked frame", frame(TEXT, b"[]", masked=False), 1002),
    ("reserved bits", frame(TEXT, b"[]", rsv=0b011), 1002),
    ("an unknown opcode", frame(0x5, b"x"), 1002),
    ("a continuation with nothing to continue", frame(0x0, b"x"), 1002),
    ("a fragmented ping", frame(0x9, b"x", fin=False), 1002),
]


@pytest.mark.parametrize(
    ("name", "data", "code"), CLOSING_CASES, ids=[case[0] for case in CLOSING_CASES]
)
async def test_bad_frames_close_only_their_connection(
    server: Server, bystander: Bystander, name: str, data: bytes, code: int
) -> None:
    client = await joined(server)
    client.send(data)
    assert await client.close_code() == code, name
    client.close()


async def test_tcp_garbage_instead_of_frames(server: Server, bystander: Bystander) -> None:
    client = await joined(server)
    client.send(b"\x00" * 3 + bytes(range(1, 200)))  # no mask bit, opcode 0: not a frame
    assert await client.close_code() in (1002, None)  # a close frame, or just the end
    assert await client.closed()


# The ASGI path's framing is the ASGI server's (uvicorn's fails at once); this is ours.
@pytest.mark.parametrize("server", [True], ids=["fast"], indirect=True)
async def test_the_frames_before_a_violation_are_answered_and_tcp_is_closed(
    server: Server, bystander: Bystander
) -> None:
    client = await joined(server)
    client.send(frame(TEXT, b'["1","5","room:1","echo",{"first":1}]') + frame(0x5, b"bad"))
    assert (await client.recv_json())[4] == {"response": {"first": 1}, "status": "ok"}
    assert await client.close_code() == 1002
    assert await client.closed()  # the server ends the stream without waiting for us


@pytest.mark.parametrize("server", [True], ids=["fast"], indirect=True)
async def test_frames_after_the_servers_close_frame_are_ignored(
    server: Server, bystander: Bystander, caplog: pytest.LogCaptureFixture
) -> None:
    client = await joined(server, "/named")
    await server.endpoint.broadcast("bad_input:named", "disconnect", {})
    assert await client.close_code() == 1001
    with caplog.at_level(logging.ERROR):
        client.send(frame(TEXT, b'["1","9","room:1","echo",{}]') + frame(0x8, b"\x03\xe9"))
        assert await client.closed()
    assert not caplog.records, caplog.text


# -- messages answered with an error reply (the connection stays) -------------------------


async def test_wrong_payload_types_reach_the_channel_and_crash_only_it(
    server: Server, bystander: Bystander
) -> None:
    client = await joined(server)
    client.send_json(["2", "2", "room:2", "phx_join", "not an object"])
    assert (await client.recv_json())[4] == {
        "response": {"reason": "join crashed"},
        "status": "error",
    }
    client.send_json(["1", "3", "room:1", "field", ["a", "list"]])
    assert await client.recv_json() == [
        "1",
        "1",
        "room:1",
        "phx_error",
        {"reason": "channel_crash"},
    ]
    client.send_json(["4", "4", "room:1", "phx_join", {}])  # and it rejoins
    assert (await client.recv_json())[4]["status"] == "ok"
    client.close()


async def test_deeply_nested_payloads_get_an_error_reply(
    server: Server, bystander: Bystander
) -> None:
    client = await joined(server, "/limited")
    deep: Any = {}
    for _ in range(20):
        deep = {"d": deep}
    client.send_json(["1", "2", "room:1", "echo", deep])
    assert await client.recv_json() == [
        "1",
        "2",
        "room:1",
        "phx_reply",
        {"response": {"reason": "payload nested too deeply"}, "status": "error"},
    ]
    shallow: Any = {"d": {"d": [1, [2, {"e": "[[[[[[[[[[[[["}]]}}
    client.send_json(["1", "3", "room:1", "echo", shallow])
    assert (await client.recv_json())[4] == {"response": shallow, "status": "ok"}
    client.close()


async def test_a_push_flood_is_answered_with_rate_limit_errors(
    server: Server, bystander: Bystander
) -> None:
    client = await joined(server, "/limited")
    started = time.monotonic()
    count = 60
    client.send(
        b"".join(
            frame(TEXT, json.dumps(["1", str(n), "room:1", "echo", {}]).encode())
            for n in range(count)
        )
    )
    answers = [(await client.recv_json())[4] for _ in range(count)]  # one per push
    statuses = [a["status"] for a in answers]
    if time.monotonic() - started < 1.0:  # the whole burst fell in one second
        assert statuses.count("ok") == 19  # the join took one of the 20
        assert {a["response"]["reason"] for a in answers if a["status"] == "error"} == {
            "rate limit exceeded"
        }
    else:  # a very slow machine: still, every push got an answer, and some were limited
        assert "error" in statuses
    client.close()


async def test_a_join_flood_is_bounded_by_max_channels(
    server: Server, bystander: Bystander
) -> None:
    client = await RawClient.connect(server.port, target())
    count = 150
    client.send(
        b"".join(
            frame(TEXT, json.dumps([str(n), str(n), f"room:{n}", "phx_join", {}]).encode())
            for n in range(count)
        )
    )
    replies = [await client.recv_json() for _ in range(count)]
    ok = [r for r in replies if r[4]["status"] == "ok"]
    refused = [r for r in replies if r[4]["status"] == "error"]
    assert len(ok) == 100 and len(refused) == 50
    assert {r[4]["response"]["reason"] for r in refused} == {"too many channels joined"}
    client.close()


# -- handshakes refused ---------------------------------------------------------------------


def tampered() -> str:
    head, _payload, signature = good_token().split(".")
    other = token.sign(SECRET, SALT, {"id": 2}).split(".")[1]
    return f"{head}.{other}.{signature}"


TOKEN_CASES: list[tuple[str, Callable[[], str | None]]] = [
    (
        "forged with another secret",
        lambda: token.sign("another secret key base of enough bytes", SALT, {"id": 1}),
    ),
    ("signed for another salt", lambda: token.sign(SECRET, "other salt", {"id": 1})),
    ("tampered", tampered),
    ("expired", lambda: token.sign(SECRET, SALT, {"id": 1}, signed_at=time.time() - 7200)),
    ("garbage", lambda: "garbage"),
    ("missing", lambda: None),
]


@pytest.mark.parametrize(("name", "make"), TOKEN_CASES, ids=[c[0] for c in TOKEN_CASES])
async def test_bad_tokens_are_refused_with_403(
    server: Server, bystander: Bystander, name: str, make: Callable[[], str | None]
) -> None:
    bad = make()
    query = {"vsn": "2.0.0", "token": bad} if bad is not None else {"vsn": "2.0.0"}
    path = "/socket/websocket?" + "&".join(f"{k}={v}" for k, v in query.items())
    with pytest.raises(Refused) as info:
        await RawClient.connect(server.port, path)
    assert info.value.status == 403
    if bad is not None:  # the same token in the header the JS client's authToken uses
        encoded = base64.urlsafe_b64encode(bad.encode()).decode().rstrip("=")
        header = {"Sec-WebSocket-Protocol": f"phoenix, base64url.bearer.phx.{encoded}"}
        with pytest.raises(Refused) as info:
            await RawClient.connect(server.port, "/socket/websocket?vsn=2.0.0", header)
        assert info.value.status == 403


async def test_a_good_token_in_the_subprotocol_header(server: Server) -> None:
    encoded = base64.urlsafe_b64encode(good_token().encode()).decode().rstrip("=")
    protocols = ["phoenix", f"base64url.bearer.phx.{encoded}"]
    async with websockets.connect(
        f"ws://127.0.0.1:{server.port}/socket/websocket?vsn=2.0.0", subprotocols=protocols
    ) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "phoenix"


@pytest.mark.parametrize(
    ("name", "path", "headers", "status"),
    [
        ("a cross-origin upgrade", target(), {"Origin": "https://evil.example"}, 403),
        ("an unknown serializer version", target(vsn="9.9.9"), {}, 403),
        ("a vsn that is not a version", target(vsn="two"), {}, 403),
        (
            "a malformed auth token header",
            "/socket/websocket?vsn=2.0.0",
            {"Sec-WebSocket-Protocol": "phoenix, base64url.bearer.phx.%%%"},
            400,
        ),
    ],
    ids=lambda value: value if isinstance(value, str) and " " in value else "",
)
async def test_refused_handshakes(
    server: Server, bystander: Bystander, name: str, path: str, headers: dict[str, str], status: int
) -> None:
    with pytest.raises(Refused) as info:
        await RawClient.connect(server.port, path, headers)
    assert info.value.status == status, name


async def test_connections_per_client_address() -> None:
    endpoint = Endpoint(
        sockets={"/socket": UserSocket}, secret_key_base=SECRET, max_connections_per_client=2
    )
    async with Server(endpoint) as srv:
        first = await RawClient.connect(srv.port, target())
        second = await RawClient.connect(srv.port, target())
        with pytest.raises(Refused) as info:
            await RawClient.connect(srv.port, target())
        assert info.value.status == 429
        first.send(frame(0x8, b"\x03\xe8"))
        assert await first.close_code() == 1000
        for _ in range(100):  # the server counts the closed one out once it is gone
            if endpoint._clients.get("127.0.0.1") == 1:
                break
            await asyncio.sleep(0.02)
        third = await RawClient.connect(srv.port, target())
        second.close()
        third.close()
