"""The example of docs/cluster.md, run as written: two nodes built from it share broadcasts."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from phoenix_channels import Broadcast, Channel, Socket

from .engines import shared_url

DOC = Path(__file__).resolve().parents[2] / "docs" / "cluster.md"


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> None:
        return None


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}


def example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/cluster.md has a python example"
    return str(blocks[0])


async def test_the_example_makes_nodes_of_one_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", shared_url("redis"))  # the example reads REDIS_URL
    monkeypatch.setenv("SECRET_KEY_BASE", "s" * 48)
    endpoints = []
    for _ in range(2):
        namespace: dict[str, Any] = {"UserSocket": UserSocket}
        exec(compile(example(), str(DOC), "exec"), namespace)
        endpoints.append(namespace["endpoint"])
    one, two = endpoints
    assert one.pubsub.node_name != two.pubsub.node_name
    await one.start()
    await two.start()
    try:
        topic = f"room:docs-{uuid.uuid4().hex}"
        sub = two.pubsub.subscription(topic)
        await two.pubsub.prepare(topic)
        await one.broadcast(topic, "hello", {"from": "node one"})
        async with asyncio.timeout(5):
            assert await sub.get() == Broadcast(topic, "hello", {"from": "node one"})
    finally:
        await one.stop()
        await two.stop()
