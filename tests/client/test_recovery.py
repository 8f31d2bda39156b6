"""The Python client recovers by itself: positions tracked, sent at rejoin, outcome exposed.

A real server on loopback (the fast path), both transports.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from phoenix_channels import Channel, Endpoint, History, LongPoll, Socket, reply
from phoenix_channels.client import Socket as ClientSocket

from ..support import Server
from .helpers import eventually


class HistChannel(Channel):
    history = History(size=5, ttl=None)

    async def join(self, topic: str, payload: Any) -> Any:
        return {"asked": None if self.recovery is None else str(self.recovery)}

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "kick":  # close this socket, then publish what it will miss
            await self.endpoint.broadcast(f"user:{payload['user']}", "disconnect", {})
        for n in range(payload.get("from", 1), payload.get("to", 0) + 1):
            await self.endpoint.broadcast(self.topic, "msg", {"n": n})
        return reply("ok")


class UserSocket(Socket):
    channels = {"hist:*": HistChannel}
    longpoll = LongPoll(window=2.0)

    async def connect(self, params: dict[str, Any], connect_info: Any) -> bool:
        self.assigns["user"] = params.get("user")
        return True

    def id(self) -> str | None:
        return f"user:{self.assigns['user']}" if self.assigns.get("user") else None


endpoint = Endpoint({"/socket": UserSocket}, check_origin=False)
_topics = itertools.count()
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[Server]:
    async with Server(endpoint) as srv:
        yield srv


@pytest.fixture(params=["websocket", "longpoll"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(server: Server, transport: str, user: str) -> ClientSocket:
    return ClientSocket(
        f"ws://127.0.0.1:{server.port}/socket",
        transport=transport,  # type: ignore[arg-type]
        params={"user": user},
        timeout=5.0,
        reconnect_after=lambda tries: 0.05,
        rejoin_after=lambda tries: 0.05,
    )


async def test_a_rejoin_gets_what_was_missed_once_in_order(server: Server, transport: str) -> None:
    topic = f"hist:{next(_topics)}"
    user = f"u{next(_topics)}"
    async with make(server, transport, user) as socket, make(server, transport, "pub") as pub:
        publisher = pub.channel(topic)
        await publisher.join()
        channel = socket.channel(topic, {"nick": "ann"})
        got: list[int] = []
        outcomes: list[Any] = []
        channel.on("msg", lambda payload: got.append(payload["n"]))
        channel.on_recovery(outcomes.append)
        await channel.join()
        assert channel.recovery is None  # nothing asked on the first join (no position yet)
        await publisher.push("publish", {"from": 1, "to": 2})
        await eventually(lambda: got == [1, 2], "the first two messages")
        assert channel.position is not None and channel.position.endswith(":2")
        await publisher.push("kick", {"user": user, "from": 3, "to": 5})
        await eventually(lambda: outcomes, "the recovery outcome after the rejoin")
        assert outcomes[0]["recovered"] is True and outcomes[0]["replayed"] == 3
        await publisher.push("publish", {"from": 6, "to": 6})
        await eventually(lambda: got[-1:] == [6], "message 6")
        assert got == [1, 2, 3, 4, 5, 6]
        assert channel.recovery == outcomes[0]
        assert channel.join_response["asked"].endswith(":2")


async def test_recover_true_asks_on_the_first_join_and_reports_losses(
    server: Server, transport: str
) -> None:
    topic = f"hist:{next(_topics)}"
    user = f"u{next(_topics)}"
    async with make(server, transport, user) as socket, make(server, transport, "pub") as pub:
        publisher = pub.channel(topic)
        await publisher.join()
        channel = socket.channel(topic, recover=True)
        got: list[int] = []
        channel.on("msg", lambda payload: got.append(payload["n"]))
        await channel.join()
        await eventually(lambda: channel.recovery, "the first outcome")
        assert channel.recovery is not None and channel.recovery["reason"] == "no_position"
        first = channel.recovery
        await publisher.push("kick", {"user": user, "from": 1, "to": 7})  # 7 > size 5
        await eventually(lambda: channel.recovery is not first, "the rejoin's outcome")
        assert channel.recovery["recovered"] is False
        assert channel.recovery["reason"] == "too_old"
        await publisher.push("publish", {"from": 8, "to": 8})
        await eventually(lambda: got == [8], "only the live message")
        assert channel.position is not None and channel.position.endswith(":8")
