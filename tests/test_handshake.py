"""The handshake layer (phoenix_channels.handshake) over real sockets, on both transports."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from typing import Any

import httpx
import pytest

from phoenix_channels import Channel, Endpoint, Socket
from phoenix_channels.handshake import parse_params, split_host
from phoenix_channels.origin import OriginPolicy

from .support import Server

SECRET = "s3cr3t-t0ken-value"


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return {}


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}
    longpoll = True

    async def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> bool:
        if params.get("boom"):
            raise RuntimeError("connect failed")
        return params.get("token") != SECRET


async def ws_status(port: int, target: str, headers: dict[str, str]) -> int:
    """The HTTP status of a WebSocket upgrade request sent with exactly these headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [
        f"GET {target} HTTP/1.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode(),
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1])


async def lp_status(port: int, query: str, headers: dict[str, str]) -> int:
    """The status a long-poll client reads from the JSON body of its first GET."""
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"http://127.0.0.1:{port}/socket/longpoll?{query}", headers=headers
        )
    status: int = response.json()["status"]
    return status


@pytest.fixture(params=[True, False], ids=["fast", "asgi"])
async def conn_server(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    endpoint = Endpoint(sockets={"/socket": UserSocket}, check_origin="conn")
    async with Server(endpoint, fast=request.param) as srv:
        yield srv


# -- IPv6 host literals: one parse for both transports ---------------------------------------


def test_split_host_keeps_ipv6_brackets_and_reads_the_port() -> None:
    assert split_host("[::1]:4000") == ("[::1]", 4000)
    assert split_host("[::1]") == ("[::1]", None)
    assert split_host("example.com:80") == ("example.com", 80)
    assert split_host("example.com") == ("example.com", None)
    assert split_host("::1") == ("::1", None)
    assert split_host("") == ("", None)


async def test_an_ipv6_origin_matches_an_ipv6_host_on_websocket(conn_server: Server) -> None:
    port = conn_server.port
    headers = {"Host": f"[::1]:{port}", "Origin": f"http://[::1]:{port}"}
    assert await ws_status(port, "/socket/websocket?vsn=2.0.0", headers) == 101
    other = {"Host": f"[::1]:{port}", "Origin": f"http://[::2]:{port}"}
    assert await ws_status(port, "/socket/websocket?vsn=2.0.0", other) == 403


async def test_an_ipv6_origin_matches_an_ipv6_host_on_long_polling(conn_server: Server) -> None:
    port = conn_server.port
    headers = {"Host": f"[::1]:{port}", "Origin": f"http://[::1]:{port}"}
    assert await lp_status(port, "vsn=2.0.0", headers) == 410  # a new session
    other = {"Host": f"[::1]:{port}", "Origin": f"http://[::1]:{port + 1}"}
    assert await lp_status(port, "vsn=2.0.0", other) == 403


# -- a refused connect leaves a trace -------------------------------------------------------


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "phoenix_channels.handshake" and r.levelno == logging.INFO
    ]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "asgi"])
async def test_every_refusal_logs_one_info_line_with_path_and_reason(
    fast: bool, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = Endpoint(
        sockets={"/socket": UserSocket},
        check_origin=["//allowed.example"],
        max_connections_per_client=1,
    )
    caplog.set_level(logging.INFO, "phoenix_channels.handshake")
    async with Server(endpoint, fast=fast) as srv:
        port = srv.port
        host = {"Host": f"127.0.0.1:{port}"}
        target = "/socket/websocket?vsn=2.0.0"

        caplog.clear()
        assert await ws_status(port, f"{target}&token={SECRET}", host) == 403
        assert _refusals(caplog) == [
            "refused a connection to /socket/websocket: UserSocket.connect returned False"
        ]
        assert SECRET not in caplog.text  # params may hold tokens: never logged

        caplog.clear()
        assert await ws_status(port, f"{target}&boom=1", host) == 500
        assert _refusals(caplog) == [
            "refused a connection to /socket/websocket: UserSocket.connect raised"
        ]

        caplog.clear()
        evil = {**host, "Origin": "https://evil.example"}
        assert await ws_status(port, target, evil) == 403
        assert _refusals(caplog) == [
            "refused a connection to /socket/websocket: origin not allowed by check_origin"
        ]

        caplog.clear()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:  # one open connection from 127.0.0.1 uses up the limit
            writer.write(
                (
                    f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                ).encode()
            )
            async with asyncio.timeout(5):
                assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
            assert await ws_status(port, target, host) == 429
        finally:
            writer.close()
        assert _refusals(caplog) == [
            "refused a connection to /socket/websocket: "
            "max_connections_per_client reached for the peer address"
        ]


async def test_a_refused_long_poll_connect_logs_its_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "phoenix_channels.handshake")
    async with Server(Endpoint(sockets={"/socket": UserSocket})) as srv:
        assert await lp_status(srv.port, f"vsn=2.0.0&token={SECRET}", {}) == 403
    assert _refusals(caplog) == [
        "refused a connection to /socket/longpoll: UserSocket.connect returned False"
    ]
    assert SECRET not in caplog.text


# -- the origin error says the fix that fits -------------------------------------------------


def _origin_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "phoenix_channels.handshake" and r.levelno == logging.ERROR
    ]


async def test_a_loopback_origin_is_told_to_set_the_endpoint_host_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The default host is "localhost"; the page was opened at http://127.0.0.1:PORT.
    async with Server(Endpoint(sockets={"/socket": UserSocket})) as srv:
        origin = f"http://127.0.0.1:{srv.port}"
        headers = {"Host": f"127.0.0.1:{srv.port}", "Origin": origin}
        assert await ws_status(srv.port, "/socket/websocket?vsn=2.0.0", headers) == 403
    [message] = _origin_errors(caplog)
    assert "Endpoint(host='127.0.0.1')" in message
    assert f"check_origin=['//127.0.0.1:{srv.port}'" in message
    assert message.index("Endpoint(host=") < message.index("check_origin=[")


async def test_a_foreign_origin_is_told_about_check_origin_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Server(Endpoint(sockets={"/socket": UserSocket})) as srv:
        headers = {"Host": f"127.0.0.1:{srv.port}", "Origin": "https://app.example.com"}
        assert await ws_status(srv.port, "/socket/websocket?vsn=2.0.0", headers) == 403
    [message] = _origin_errors(caplog)
    assert "Endpoint(check_origin=['//app.example.com', ...])" in message
    assert "Endpoint(host=" not in message


@pytest.mark.parametrize(
    "origin",
    ["http://localhost:4000", "http://[::1]:4000", "http://127.0.0.2", "http://a.localhost"],
)
def test_every_loopback_form_gets_the_host_advice(origin: str) -> None:
    advice = OriginPolicy(True, host="example.com").advice(origin)
    assert advice.split(", or ")[0].endswith(")") and "Endpoint(host=" in advice


def test_a_bracketed_ipv6_endpoint_host_matches_its_origin() -> None:
    assert OriginPolicy(True, host="[::1]").allows("http://[::1]:4000", "ws", "", None)


def test_parse_params_nests_and_keeps_the_last_value() -> None:
    assert parse_params("a=1&a=2&user[name]=x&user[id]=7") == {
        "a": "2",
        "user": {"name": "x", "id": "7"},
    }
