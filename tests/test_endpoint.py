"""Endpoint rules (endpoint.py): its broadcast API and connection refusals; in process."""

from __future__ import annotations

from typing import Any

import pytest

from phoenix_channels import Endpoint, Socket
from phoenix_channels.endpoint import Refused

from .rooms import RoomChannel, UserSocket, joined, make_endpoint


@pytest.fixture
def endpoint() -> Endpoint:
    return make_endpoint()


async def test_broadcasts_are_encoded_once_and_shared(endpoint: Endpoint) -> None:
    clients = [await joined(endpoint, "room:b1") for _ in range(3)]
    clients[0].send("1", "2", "room:b1", "shout", {"msg": "hello everyone"})
    for client in clients:
        frames = await client.frames(2)
        assert frames[1] == [None, None, "room:b1", "shout", {"msg": "hello everyone"}]
    items = [client.transport.sent[1] for client in clients]
    assert items[0] is items[1] is items[2]  # one encoding, the same object for everyone


async def test_endpoint_broadcast_and_extra_subscriptions(endpoint: Endpoint) -> None:
    client = await joined(endpoint, "room:x")
    client.send("1", "2", "room:x", "subscribe", {"topic": "news"})
    await client.settle()
    await endpoint.broadcast("room:x", "from_app", {"n": 1})
    await endpoint.broadcast("news", "headline", {"n": 2})
    frames = await client.frames(3)
    assert frames[1] == [None, None, "room:x", "from_app", {"n": 1}]
    assert frames[2] == ["1", None, "room:x", "relayed", {"topic": "news", "event": "headline"}]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("vsn=3.0.0", 403),
        ("vsn=2.0", 403),
        ("token=reject&vsn=2.0.0", 403),
    ],
)
async def test_refused_connections(endpoint: Endpoint, query: str, status: int) -> None:
    outcome = await endpoint.handshake(
        UserSocket,
        method="GET",
        path="/socket/websocket",
        query=query,
        headers=[],
        scheme="ws",
        peer=None,
        websocket=False,
    )
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
        outcome = await endpoint.handshake(
            cls,
            method="GET",
            path="/",
            query="vsn=2.0.0",
            headers=[],
            scheme="ws",
            peer=None,
            websocket=False,
        )
        assert outcome == Refused(403)
