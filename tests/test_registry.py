"""The connection registry (phoenix_channels.registry), as transports and sockets report to it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets

from phoenix_channels import Channel, Endpoint, Socket, telemetry
from phoenix_channels.registry import ConnectionRegistry

from .support import Server


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return {}


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}
    longpoll = True

    def id(self) -> str | None:
        return f"user:{self.params.get('user', 'anon')}"


async def until(condition: Any) -> None:
    """Wait for state that the server updates after the client's call returned."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


async def test_an_open_websocket_is_counted_subscribed_and_forgotten_at_close() -> None:
    endpoint = Endpoint(sockets={"/socket": UserSocket}, max_connections_per_client=5)
    registry = endpoint.registry
    async with Server(endpoint) as srv:
        async with websockets.connect(srv.url + "?vsn=2.0.0&user=7") as ws:
            await ws.send(json.dumps(["1", "1", "room:1", "phx_join", {}]))
            await ws.recv()
            assert registry.addresses == {"127.0.0.1": 1}
            assert len(registry.connections) == 1
            assert endpoint.pubsub.subscribers("user:7") == 1
            await endpoint.broadcast("user:7", "disconnect", {})
            await until(lambda: not registry.connections)
        assert registry.addresses == {}
        assert endpoint.pubsub.subscribers("user:7") == 0


async def test_a_long_poll_session_is_registered_until_it_closes() -> None:
    endpoint = Endpoint(sockets={"/socket": UserSocket})
    registry = endpoint.registry
    async with Server(endpoint) as srv, httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{srv.port}/socket/longpoll?vsn=2.0.0&user=8"
        opened = (await http.get(url)).json()
        assert opened["status"] == 410
        [session] = registry.sessions.values()
        assert registry.session(session.id) is session and session in registry.connections
        assert endpoint.longpoll_sessions is registry.sessions  # the old name still works
        await endpoint.broadcast("user:8", "disconnect", {})
        await until(lambda: not registry.sessions)
        assert session not in registry.connections


def test_counts_are_kept_only_under_a_limit() -> None:
    class Subs:
        def subscribe(self, topic: str, callback: Any) -> None: ...

        def unsubscribe(self, topic: str, subscriber: Any) -> None: ...

    unlimited = ConnectionRegistry(Subs())
    assert unlimited.counted("10.0.0.1") is None and not unlimited.full("10.0.0.1")
    limited = ConnectionRegistry(Subs(), max_per_address=2)
    address = limited.counted("10.0.0.1")
    opened = []
    for _ in range(2):
        assert not limited.full(address)
        opened.append(limited.socket_opened(None, address, None, "registry-test"))
    assert limited.full(address) and not limited.full("10.0.0.2")
    # Each socket also counts among its transport's open sockets, until it closes.
    assert opened[0] is opened[1] is telemetry.TRANSPORTS["registry-test"]
    assert opened[0].sockets == 2
    for counts in opened:
        limited.socket_closed(None, address, None, counts)
    assert limited.addresses == {} and opened[0].sockets == 0
