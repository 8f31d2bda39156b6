"""Churn: thousands of channels join, track and leave; nothing is left behind.

Two nodes (their own PubSub each, joined by the in-process hub): clients
join on node a, node b follows by replication. After each round both
replicas are empty in every index (entries, topics, owners, clouds), and
memory measured with tracemalloc after a round equals the baseline taken
after the first one (which filled the bounded caches: delta generations).
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

from phoenix_channels import Channel, Endpoint, Socket
from phoenix_channels.presence import Presence
from tests.support import connect

from .support import Hub, eventually

CLIENTS = 1500
ROUNDS = 3
# A leak of one entry per client (an Entry, its meta, index slots) would be
# several hundred bytes each: hundreds of KiB per round. Allow a fraction.
TOLERANCE = 64 * 1024

# Small delta generations: the warm-up round fills these bounded caches, so what
# the rounds measured afterwards add can only be a leak.
FAST: dict[str, Any] = {
    "broadcast_period": 0.05,
    "down_period": 1.0,
    "permdown_period": 5.0,
    "max_delta_sizes": (10, 100, 500),
}


def build(hub: Hub, name: str) -> tuple[Endpoint, Presence, type[Socket]]:
    box: dict[str, Presence] = {}

    class Room(Channel):
        async def join(self, topic: str, payload: Any) -> Any:
            await box["p"].track(self, payload["user"], {"n": payload["n"]})
            return None

    class UserSocket(Socket):
        channels = {"room:*": Room}

    endpoint = Endpoint(sockets={"/socket": UserSocket}, pubsub=hub.pubsub(name))
    box["p"] = Presence(endpoint, **FAST)
    return endpoint, box["p"], UserSocket


def empty(presence: Presence) -> bool:
    state = presence.tracker._shard.state
    return (
        state.size() == 0
        and not state.topics
        and not state._by_owner
        and not state.clouds
        and presence.tracker.stats()["owners"] == 0
    )


async def churn(endpoint: Endpoint, sock: type[Socket], a: Presence, b: Presence) -> None:
    clients = []
    for i in range(CLIENTS):
        client = await connect(endpoint, sock)
        # Ten topics, users on several devices (keys repeat).
        client.send("1", "1", f"room:{i % 10}", "phx_join", {"user": f"u{i % 300}", "n": i})
        clients.append(client)
    await eventually(
        lambda: sum(a.tracker.count(f"room:{t}") for t in range(10)) == CLIENTS,
        "every client is tracked on node a",
    )
    await eventually(
        lambda: sum(b.tracker.count(f"room:{t}") for t in range(10)) == CLIENTS,
        "node b follows",
        describe=lambda: b.tracker.stats(),
    )
    for n, client in enumerate(clients):
        if n % 2:
            client.send("1", "2", f"room:{n % 10}", "phx_leave", {})
        else:
            client.socket.connection_lost()
    del clients
    await eventually(lambda: empty(a), "node a is empty", describe=lambda: a.tracker.stats())
    await eventually(lambda: empty(b), "node b is empty", describe=lambda: b.tracker.stats())


async def test_churn_leaves_nothing_behind() -> None:
    hub = Hub()
    endpoint_a, presence_a, sock = build(hub, "a")
    endpoint_b, presence_b, _ = build(hub, "b")
    await endpoint_a.start()
    await endpoint_b.start()
    try:
        await eventually(lambda: presence_b.tracker.peers() == {"a": "up"}, "b knows a")
        # Traced from before the warm-up round (which fills the bounded caches and
        # grows the indexes' tables to their high-water mark): what a later round
        # frees is then subtracted, and only what it keeps adds up.
        tracemalloc.start()
        try:
            await churn(endpoint_a, sock, presence_a, presence_b)
            gc.collect()
            baseline = tracemalloc.get_traced_memory()[0]
            for _ in range(ROUNDS):
                await churn(endpoint_a, sock, presence_a, presence_b)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
        assert grown < TOLERANCE, f"memory grew by {grown} bytes over {ROUNDS} rounds"
        # The delta generations are bounded by max_delta_sizes, whatever the churn.
        for presence in (presence_a, presence_b):
            sizes = presence.tracker.stats()["generation_sizes"]
            assert all(size <= limit for size, limit in zip(sizes, (10, 100, 500), strict=True))
    finally:
        await endpoint_a.stop()
        await endpoint_b.stop()
