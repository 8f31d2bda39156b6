"""Logging: one hierarchy, nothing per message on the normal path, one line for a
client that repeats a mistake."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from phoenix_channels import Channel, Endpoint, Socket, reply

from .support import connect

SRC = Path(__file__).resolve().parents[1] / "src" / "phoenix_channels"


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return None

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "shout":
            await self.broadcast("shout", payload)
            return None
        await self.push("pushed", payload)
        return reply("ok", payload)


class RoomSocket(Socket):
    channels = {"room:*": RoomChannel}
    max_channels = 2


def test_every_logger_is_under_phoenix_channels_and_documented() -> None:
    doc = (SRC.parents[1] / "docs" / "telemetry.md").read_text()
    names = set()
    for path in SRC.rglob("*.py"):
        names.update(re.findall(r'getLogger\("([^"]+)"\)', path.read_text()))
    assert names and all(
        n == "phoenix_channels" or n.startswith("phoenix_channels.") for n in names
    )
    for name in names:
        short = name.removeprefix("phoenix_channels")
        assert f"`{name}`" in doc or f"`{short}`" in doc, f"{name} is not in docs/telemetry.md"


async def test_no_log_line_per_message_on_the_normal_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="phoenix_channels")
    endpoint = Endpoint(sockets={"/socket": RoomSocket})
    a = await connect(endpoint, RoomSocket)
    b = await connect(endpoint, RoomSocket)
    for client in (a, b):
        client.send("1", "1", "room:1", "phx_join", {})
    await a.frames(1)
    for n in range(50):
        a.send("1", str(n), "room:1", "echo", {"n": n})
        a.send("1", f"s{n}", "room:1", "shout", {"n": n})
        a.send(None, f"h{n}", "phoenix", "heartbeat", {})
    await a.frames(1 + 50 * 4)
    await b.frames(1 + 50)
    assert caplog.records == []
    await endpoint.stop()


async def test_a_repeated_mistake_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    endpoint = Endpoint(sockets={"/socket": RoomSocket})
    client = await connect(endpoint, RoomSocket)
    for n in range(20):
        client.send(str(n), str(n), f"nowhere:{n}", "phx_join", {})
    for n in range(20):
        client.send(f"j{n}", f"j{n}", f"room:{n}", "phx_join", {})
    frames = await client.frames(40)
    assert sum(f[4]["response"] == {"reason": "unmatched topic"} for f in frames) == 20
    assert sum(f[4]["response"] == {"reason": "too many channels joined"} for f in frames) == 18
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unmatched topic" in m for m in messages) == 1
    assert sum("channels already joined" in m for m in messages) == 1
    await endpoint.stop()
