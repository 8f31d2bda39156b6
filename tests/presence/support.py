"""An in-process cluster for presence tests: several PubSubs joined by a hub.

Each node gets its own :class:`~phoenix_channels.PubSub` (its own registry,
as separate processes would have) whose adapter hands broadcasts to the
other nodes through the :class:`Hub`. Messages are copied through the real
cluster codec, so nothing is shared between nodes by reference and what
would not survive a Redis or NATS hop fails here too. The hub can cut nodes
apart (a partition) and heal them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from phoenix_channels import PubSub
from phoenix_channels.pubsub import codec


class Hub:
    def __init__(self) -> None:
        self.nodes: dict[str, PubSub] = {}
        self.cut: set[frozenset[str]] = set()
        self.delivered = 0
        self.bytes = 0
        self.largest = 0

    def pubsub(self, name: str) -> PubSub:
        pubsub = PubSub(HubAdapter(self, name))
        self.nodes[name] = pubsub
        return pubsub

    def partition(self, a: str, b: str) -> None:
        self.cut.add(frozenset((a, b)))

    def heal(self) -> None:
        self.cut.clear()

    def isolate(self, name: str) -> None:
        for other in self.nodes:
            if other != name:
                self.partition(name, other)

    def _deliver(self, sender: str, target: str, topic: str, message: Any) -> None:
        if frozenset((sender, target)) in self.cut or target not in self.nodes:
            return
        data = codec.encode_value([topic, message])
        self.delivered += 1
        self.bytes += len(data)
        self.largest = max(self.largest, len(data))
        topic, message = codec.decode_value(data)
        # Later, as a network would: never inside the sender's own call.
        asyncio.get_running_loop().call_soon(self.nodes[target].local_broadcast, topic, message)


class HubAdapter:
    def __init__(self, hub: Hub, node_name: str) -> None:
        self.hub = hub
        self.node_name = node_name

    async def start(self, pubsub: PubSub) -> None:
        return None

    async def stop(self) -> None:
        self.hub.nodes.pop(self.node_name, None)

    async def broadcast(self, topic: str, message: Any) -> None:
        for name in list(self.hub.nodes):
            if name != self.node_name:
                self.hub._deliver(self.node_name, name, topic, message)

    async def direct_broadcast(self, node_name: str, topic: str, message: Any) -> None:
        self.hub._deliver(self.node_name, node_name, topic, message)

    def topic_added(self, topic: str) -> None:
        return None

    def topic_removed(self, topic: str) -> None:
        return None


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    what: str,
    timeout: float = 10.0,
    describe: Callable[[], Any] | None = None,
) -> None:
    """Wait until ``check()`` is true, polling; fail with ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            extra = f"; state: {describe()!r}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting until {what}{extra}")
        await asyncio.sleep(0.02)
