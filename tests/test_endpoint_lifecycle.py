"""The endpoint's lifecycle over real sockets: every stop drains, however often it restarts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from phoenix_channels import Channel, Endpoint, Socket

from .support import Server


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return {}

    async def terminate(self, reason: Any) -> None:
        ENDED.append(reason)


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}


ENDED: list[Any] = []
JOIN = json.dumps(["1", "1", "room:1", "phx_join", {}])


async def _serve_once_and_stop(endpoint: Endpoint, fast: bool) -> int | None:
    """Serve, connect and join one client, stop the server: the close code it got."""
    async with Server(endpoint, fast=fast) as srv, websockets.connect(srv.url + "?vsn=2.0.0") as ws:
        await ws.send(JOIN)
        await ws.recv()
        stopping = asyncio.ensure_future(srv.stop())
        # The bound only turns a missed drain into a failure instead of a hang.
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(20):
                await ws.recv()
        await stopping
    return info.value.rcvd.code if info.value.rcvd is not None else None


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "asgi"])
async def test_a_restarted_endpoint_drains_on_every_stop(fast: bool) -> None:
    ENDED.clear()
    endpoint = Endpoint(sockets={"/socket": UserSocket}, drain_interval=0.0)
    assert await _serve_once_and_stop(endpoint, fast) == 1012
    assert await _serve_once_and_stop(endpoint, fast) == 1012
    assert ENDED == ["shutdown:draining", "shutdown:draining"]
    assert not endpoint.registry.connections
