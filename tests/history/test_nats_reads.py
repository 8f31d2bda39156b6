"""The NATS history store shares reads of a topic, without ever serving a read older
than its reader: a mass rejoin costs one JetStream read per topic and round."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from phoenix_channels import Broadcast, History, PubSub
from phoenix_channels.history.nats import NatsHistory

from ..pubsub.engines import shared_url, unique_prefix

pytest.importorskip("nats")

KEPT = History(size=100, ttl=None)


@pytest.fixture
async def node() -> AsyncIterator[tuple[PubSub, NatsHistory]]:
    """A node on NATS whose room:* topics keep history, and its store."""
    pubsub = PubSub.nats(shared_url("nats"), prefix=unique_prefix())
    pubsub.add_history_routes([("room:*", KEPT)])
    await pubsub.start()
    try:
        store = pubsub.history_store
        assert isinstance(store, NatsHistory)
        yield pubsub, store
    finally:
        await pubsub.stop()


async def test_readers_share_reads_and_never_get_one_older_than_themselves(
    node: tuple[PubSub, NatsHistory],
) -> None:
    pubsub, store = node
    for n in range(3):
        await pubsub.broadcast("room:1", Broadcast("room:1", "msg", {"n": n}))

    # Hold the first read after it has looked at JetStream, to add a message and
    # more readers while it is in flight.
    snapshot = store._snapshot
    reads: list[int] = []
    release = asyncio.Event()

    async def held_snapshot(topic: str, history: History) -> Any:
        found = await snapshot(topic, history)
        reads.append(found[1])  # the top offset this read saw
        if len(reads) == 1:
            await release.wait()
        return found

    store._snapshot = held_snapshot  # type: ignore[method-assign]
    first = asyncio.create_task(store.read("room:1", KEPT, 0))
    while not reads:
        await asyncio.sleep(0.01)
    await pubsub.broadcast("room:1", Broadcast("room:1", "msg", {"n": 3}))
    late = [asyncio.create_task(store.read("room:1", KEPT, 1)) for _ in range(20)]
    await asyncio.sleep(0.05)
    release.set()
    async with asyncio.timeout(10):
        early = await first
        later = await asyncio.gather(*late)

    assert reads == [3, 4]  # one read for the first reader, one for the twenty others
    assert [m.payload["n"] for m in early.messages] == [0, 1, 2]
    for found in later:  # each saw the message published before it asked
        assert found.top == 4
        assert [m.payload["n"] for m in found.messages] == [1, 2, 3]
    assert not store._next_read and not store._reading  # nothing left behind


async def test_a_failed_read_fails_its_waiters_and_the_next_read_is_fresh(
    node: tuple[PubSub, NatsHistory],
) -> None:
    pubsub, store = node
    await pubsub.broadcast("room:2", Broadcast("room:2", "msg", {"n": 0}))
    snapshot = store._snapshot
    calls = 0
    gate = asyncio.Event()

    async def failing_once(topic: str, history: History) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()  # the first read runs while the others queue
            return await snapshot(topic, history)
        if calls == 2:
            raise RuntimeError("engine hiccup")
        return await snapshot(topic, history)

    store._snapshot = failing_once  # type: ignore[method-assign]
    first = asyncio.create_task(store.read("room:2", KEPT, None))
    await asyncio.sleep(0.05)
    queued = [asyncio.create_task(store.read("room:2", KEPT, 0)) for _ in range(5)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(first, *queued, return_exceptions=True)
    assert results[0].top == 1  # type: ignore[union-attr]
    assert all(isinstance(r, RuntimeError) for r in results[1:]), results
    again = await store.read("room:2", KEPT, 0)
    assert [m.payload["n"] for m in again.messages] == [0] and calls == 3
