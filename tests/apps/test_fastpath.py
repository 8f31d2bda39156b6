"""The fast path under the user's own server command: plain uvicorn, and gunicorn workers.

Each test starts the real server command with the one documented setting,
joins (the official JS client under uvicorn; raw frames on many connections
under gunicorn, to reach both workers) and checks, in the join reply, that the
socket is carried by our own WebSocket protocol (not uvicorn's ASGI
WebSocket), then that a broadcast reaches it. The same app without the
setting is served through ASGI, which shows the signal is honest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.apps.support import BIN, child_env, js_client, server
from tests.pubsub.engines import shared_url, unique_prefix, wait_until

APP = "tests.apps.fastpath_app:endpoint"


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


async def test_plain_uvicorn_with_the_http_setting_takes_the_fast_path(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "uvicorn", APP, "--port", "{port}",
           "--http", "phoenix_channels.uvicorn:HttpProtocol"]  # fmt: skip
    async with server(cmd, tmp_path) as srv, js_client(srv.url(), "room:fast") as client:
        joined = await client.next("joined")
        assert joined["response"]["fast_path"] is True, joined
        page = await asyncio.to_thread(_get, srv.url("/", "http"))
        assert page == b"an ordinary page"  # the rest of the app is served by uvicorn
        await asyncio.to_thread(_get, srv.url("/broadcast?topic=room:fast", "http"))
        assert (await client.event("ping"))["payload"]["pid"] == joined["response"]["pid"]


async def test_the_ws_setting_alone_takes_over_after_uvicorns_http(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "uvicorn", APP, "--port", "{port}",
           "--ws", "phoenix_channels.uvicorn:WebSocketProtocol"]  # fmt: skip
    async with server(cmd, tmp_path) as srv, js_client(srv.url(), "room:ws") as client:
        assert (await client.next("joined"))["response"]["fast_path"] is True


async def test_without_the_setting_uvicorn_serves_the_socket_over_asgi(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "uvicorn", APP, "--port", "{port}"]
    async with server(cmd, tmp_path) as srv, js_client(srv.url(), "room:asgi") as client:
        joined = await client.next("joined")
        assert joined["response"]["fast_path"] is False, joined


async def test_gunicorn_workers_take_the_fast_path_and_share_broadcasts(tmp_path: Path) -> None:
    gunicorn = BIN / "gunicorn"
    if not gunicorn.exists():
        pytest.skip("gunicorn is not installed (it is in the dev extra)")
    env = child_env(
        PHX_APPS_ENGINE="redis", PHX_APPS_URL=shared_url("redis"), PHX_APPS_PREFIX=unique_prefix()
    )
    cmd = [str(gunicorn), APP, "-k", "phoenix_channels.gunicorn.Worker", "-w", "2",
           "-b", "127.0.0.1:{port}", "--graceful-timeout", "5"]  # fmt: skip
    async with server(cmd, tmp_path, env=env) as srv, contextlib.AsyncExitStack() as stack:
        # Which worker accepts a connection is up to the kernel: join (raw frames, cheap)
        # until two workers have answered, keeping one connection in each.
        await wait_until(
            lambda: srv.output.count("Application startup complete") >= 2,
            "both gunicorn workers have started",
            timeout=30,
        )
        by_pid: dict[int, Any] = {}
        for attempt in range(300):  # the kernel may favour one worker for a while
            if attempt:
                await asyncio.sleep(0.02)
            ws = await stack.enter_async_context(
                websockets.connect(srv.url("/socket/websocket?vsn=2.0.0"), open_timeout=10)
            )
            await ws.send(json.dumps(["1", "1", "room:workers", "phx_join", {}]))
            async with asyncio.timeout(10):
                joined = json.loads(await ws.recv())[4]["response"]
            assert joined["fast_path"] is True, joined
            by_pid.setdefault(joined["pid"], ws)
            if len(by_pid) == 2:
                break
        assert len(by_pid) == 2, f"every connection reached one worker: {srv.output}"
        body = await asyncio.to_thread(_get, srv.url("/broadcast?topic=room:workers", "http"))
        sender = json.loads(body)["pid"]
        for ws in by_pid.values():  # one in the worker that broadcast, one in the other
            async with asyncio.timeout(10):
                frame = json.loads(await ws.recv())
            assert frame == [None, None, "room:workers", "ping", {"pid": sender}]


def test_the_endpoint_is_found_in_the_app_that_holds_it() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.routing import Mount

    from phoenix_channels.uvicorn import find_endpoint
    from tests.apps.fastpath_app import endpoint, web

    assert find_endpoint(endpoint) is endpoint
    mounted = Starlette(routes=[Mount("/", endpoint)], middleware=[Middleware(GZipMiddleware)])
    assert find_endpoint(mounted) is endpoint
    assert find_endpoint(GZipMiddleware(mounted)) is endpoint
    assert find_endpoint(web) is None


async def test_an_app_without_an_endpoint_is_served_by_uvicorn_with_an_error(
    tmp_path: Path,
) -> None:
    cmd = [sys.executable, "-m", "uvicorn", "tests.apps.fastpath_app:web", "--port", "{port}",
           "--http", "phoenix_channels.uvicorn:HttpProtocol"]  # fmt: skip
    async with server(cmd, tmp_path) as srv:
        assert await asyncio.to_thread(_get, srv.url("/", "http")) == b"an ordinary page"
        assert await asyncio.to_thread(_get, srv.url("/", "http")) == b"an ordinary page"
    assert srv.output.count("no phoenix_channels.Endpoint found in the app") == 1, srv.output
