"""examples/fastapi_app, served three ways, driven by the official JS client.

Under ``phoenix-channels serve``, plain ``uvicorn`` with the fast-path
setting, and plain ``uvicorn`` (ASGI): the app's JWT login, a socket refused
for a bad token, a join with a good one, the HTTP route's broadcast reaching
the joined client, and a typed push refused with field errors.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.apps.http import request
from tests.apps.support import js_client, server

APP = "examples.fastapi_app.main:app"
WAYS = {
    "serve": [sys.executable, "-m", "phoenix_channels", "serve", APP, "--port", "{port}"],
    "uvicorn-fast-path": [sys.executable, "-m", "uvicorn", APP, "--port", "{port}",
                          "--http", "phoenix_channels.uvicorn:HttpProtocol"],
    "uvicorn-asgi": [sys.executable, "-m", "uvicorn", APP, "--port", "{port}"],
}  # fmt: skip


@pytest.mark.parametrize("way", list(WAYS))
async def test_the_fastapi_example(way: str, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("jwt")
    async with server(WAYS[way], tmp_path) as srv:
        http = srv.url("", "http")
        status, _, body = await asyncio.to_thread(
            request, f"{http}/login", {"username": "ana", "password": "letmein"}
        )
        assert status == 200, body
        token = json.loads(body)["token"]
        bearer = {"authorization": f"Bearer {token}"}
        status, _, body = await asyncio.to_thread(request, f"{http}/me", headers=bearer)
        assert (status, json.loads(body)) == (200, {"user": "ana"})

        async with js_client(srv.url(), "room:lobby", {"token": token + "x"}) as bad:
            assert (await bad.next("socket_error", "joined"))["kind"] == "socket_error"
        status, _, _ = await asyncio.to_thread(
            request, f"{http}/rooms/lobby/messages", {"body": "hi"},
            headers={"authorization": "Bearer nope"},
        )  # fmt: skip
        assert status == 401

        async with js_client(srv.url(), "room:lobby", {"token": token}) as client:
            assert (await client.next("joined"))["response"] == {"user": "ana"}
            status, _, body = await asyncio.to_thread(
                request, f"{http}/rooms/lobby/messages", {"body": "from the API"}, headers=bearer
            )
            assert status == 200, body
            news = await client.event("new_msg")
            assert news["payload"] == {"user": "ana", "body": "from the API"}

            answer = await client.push("new_msg", {"body": ""})
            assert answer["status"] == "error"
            assert answer["response"]["reason"] == "invalid_payload"
            assert answer["response"]["errors"][0]["loc"] == ["body"]
            assert (await client.push("new_msg", {"body": "typed"}))["status"] == "ok"
            assert (await client.event("new_msg"))["payload"] == {"user": "ana", "body": "typed"}
    assert "Traceback" not in srv.output, srv.output
