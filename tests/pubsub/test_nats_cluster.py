"""The NATS adapter against a three-server NATS cluster this test starts: server loss."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from phoenix_channels import BroadcastError, PubSub
from phoenix_channels.pubsub import Subscription
from phoenix_channels.pubsub.nats import NatsAdapter

from .engines import unique_prefix, wait_until
from .nats_cluster import LocalNatsCluster

pytest.importorskip("nats")

WAIT = 10.0


def adapter(node: PubSub) -> NatsAdapter:
    assert isinstance(node.adapter, NatsAdapter)
    return node.adapter


def server_port(node: PubSub) -> int | None:
    nc = adapter(node)._nc
    if nc is None or not nc.is_connected or nc.connected_url is None:
        return None
    return nc.connected_url.port


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[LocalNatsCluster]:
    cluster = LocalNatsCluster(tmp_path, servers=3)
    try:
        await cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def delivered(node: PubSub, topic: str, sub: Subscription, value: str) -> None:
    """Broadcast until one arrives (interest crosses the routes asynchronously), then ``value``.

    Every probe that arrives is consumed; then ``value`` must be the next message.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    i = 0
    while True:
        try:
            await node.broadcast(topic, f"probe-{i}")
        except BroadcastError:
            pass  # the publisher itself may still be reconnecting
        try:
            async with asyncio.timeout(0.2):
                got = await sub.get()
        except TimeoutError:
            got = None
        if got is not None:
            break
        if loop.time() > deadline:
            raise AssertionError(f"no broadcast on {topic!r} got through within {WAIT} s")
        i += 1
    await node.broadcast(topic, "marker")
    while (got := await asyncio.wait_for(sub.get(), WAIT)) != "marker":
        assert str(got).startswith("probe-"), got
    await node.broadcast(topic, value)
    assert await asyncio.wait_for(sub.get(), WAIT) == value


async def test_broadcasts_resume_after_a_server_is_lost(
    nats_cluster: LocalNatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="phoenix_channels.pubsub")
    prefix = unique_prefix()
    # Each node lists every server, in its own order; no shuffling, so we know where each is.
    a = PubSub.nats(
        nats_cluster.url(0, 1, 2),
        node_name="a",
        prefix=prefix,
        max_backoff=0.5,
        connect_options={"dont_randomize": True},
    )
    b = PubSub.nats(
        nats_cluster.url(2, 1, 0),
        node_name="b",
        prefix=prefix,
        max_backoff=0.5,
        connect_options={"dont_randomize": True},
    )
    await a.start()
    await b.start()
    try:
        assert server_port(a) == nats_cluster.ports[0]
        assert server_port(b) == nats_cluster.ports[2]
        sub_b, sub_a = b.subscription("room:1"), a.subscription("room:2")
        await b.prepare("room:1")
        await a.prepare("room:2")
        await delivered(a, "room:1", sub_b, "before")

        nats_cluster.kill(nats_cluster.ports[0])  # a's server
        await wait_until(
            lambda: adapter(a).stats.reconnects == 1 and adapter(a).connected,
            "node a reconnects to another server of its list",
            timeout=WAIT,
        )
        assert server_port(a) == nats_cluster.ports[1]
        await delivered(a, "room:1", sub_b, "after, a to b")
        await delivered(b, "room:2", sub_a, "after, b to a")
    finally:
        await a.stop()
        await b.stop()

    assert (adapter(a).stats.outages, adapter(a).stats.reconnects) == (1, 1)
    assert (adapter(b).stats.outages, adapter(b).stats.reconnects) == (0, 0)  # unaffected
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([m for m in lines if m.startswith("node a lost the connection")]) == 1, lines
    assert len([m for m in lines if m.startswith("node a reconnected")]) == 1, lines
    assert not [m for m in lines if m.startswith("node b ")], lines
