"""The Redis Cluster adapter against a real three-master cluster this test starts.

Nodes are separate :class:`PubSub` instances in one process, each with its
own connections to every master. The cluster is private (free ports, killed
by PID), so killing a master never disturbs anyone else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from phoenix_channels import BroadcastError, ConfigurationError, PubSub
from phoenix_channels.pubsub import Subscription
from phoenix_channels.pubsub.redis import RespConnection
from phoenix_channels.pubsub.redis_cluster import RedisClusterAdapter, key_slot, parse_cluster_urls

from .engines import assert_one_outage_logged, unique_prefix, wait_until
from .redis_cluster import LocalRedisCluster, _cli

WAIT = 10.0


def adapter(node: PubSub) -> RedisClusterAdapter:
    assert isinstance(node.adapter, RedisClusterAdapter)
    return node.adapter


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalRedisCluster]:
    local = LocalRedisCluster(tmp_path, masters=3, replicas=1)
    try:
        await local.start()
        yield local
    finally:
        local.stop()


async def next_message(sub: Subscription, what: str) -> Any:
    try:
        async with asyncio.timeout(WAIT):
            return await sub.get()
    except TimeoutError:
        raise AssertionError(f"no message within {WAIT} s: expected {what}") from None


def topics_on_every_master(node: PubSub, masters: int) -> dict[str, str]:
    """One topic per master of the node's slot map: master address -> topic."""
    found: dict[str, str] = {}
    i = 0
    while len(found) < masters:
        topic = f"room:{i}"
        owner = adapter(node).master_for(adapter(node).channel_for(topic))
        assert owner is not None
        found.setdefault(owner, topic)
        i += 1
    return found


def test_key_slot_is_redis_cluster_hashing(tmp_path: Path) -> None:
    # Known values from the Redis Cluster specification and CLUSTER KEYSLOT.
    assert key_slot("123456789") == 0x31C3 % 16384
    assert key_slot("foo") == 12182
    assert key_slot("{user1000}.following") == key_slot("user1000")
    assert key_slot("foo{}{bar}") == key_slot(b"foo{}{bar}")  # empty tag: whole name
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")


async def test_key_slot_agrees_with_the_server(cluster: LocalRedisCluster) -> None:
    names = ["phx:t:room:lobby", "phx:n:web-1", "{tag}x", "é:ü", "a{b}c{d}", "x{}y", "phx:s:7"]
    for name in names:
        assert int(_cli(cluster.ports[0], "CLUSTER", "KEYSLOT", name)) == key_slot(name), name


def test_seed_urls_and_one_line_switch() -> None:
    assert parse_cluster_urls("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001") == [
        "redis://:pw@10.0.0.1:7000",
        "redis://:pw@10.0.0.2:7001",
    ]
    assert parse_cluster_urls(["redis://a:1", "redis://b:2"]) == ["redis://a:1", "redis://b:2"]
    node = PubSub.redis("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
    assert isinstance(node.adapter, RedisClusterAdapter)
    assert node.adapter.seeds == ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
    with pytest.raises(ConfigurationError, match="at least one Redis Cluster node"):
        PubSub.redis_cluster([])
    with pytest.raises(ConfigurationError, match="not a unix socket"):
        PubSub.redis_cluster(["unix:///tmp/redis.sock"])
    with pytest.raises(ConfigurationError, match="unsupported Redis URL"):
        PubSub.redis_cluster(["http://x:1"])


async def test_broadcasts_cross_nodes_on_every_shard(cluster: LocalRedisCluster) -> None:
    prefix = unique_prefix()
    nodes = [
        PubSub.redis_cluster(cluster.urls[i : i + 1], node_name=name, prefix=prefix)
        for i, name in enumerate("abc")
    ]
    for node in nodes:
        await node.start()
    try:
        a, b, c = nodes
        assert adapter(a).masters() == {f"127.0.0.1:{p}" for p in cluster.master_ports()}
        by_master = topics_on_every_master(a, 3)
        topics = sorted(by_master.values())
        subs = {
            (n, t): node.subscription(t)
            for n, node in zip("bc", (b, c), strict=True)
            for t in topics
        }
        for node in (b, c):
            for topic in topics:
                await node.prepare(topic)
        for topic in topics:
            await a.broadcast(topic, {"on": topic})
        await a.direct_broadcast("c", topics[0], "direct to c")
        for (name, topic), sub in subs.items():
            assert await next_message(sub, f"{topic} on node {name}") == {"on": topic}
        assert await next_message(subs[("c", topics[0])], "the direct one") == "direct to c"
        # Each topic's channel lives on its own shard: the owner has the subscribers.
        for owner, topic in by_master.items():
            port = int(owner.rsplit(":", 1)[1])
            channel = adapter(a).channel_for(topic)
            reply = _cli(port, "PUBSUB", "SHARDNUMSUB", channel).split()
            assert reply[-1] == "2", (owner, topic, reply)
        assert adapter(b).stats.delivered == 3 and adapter(c).stats.delivered == 4
        # Nothing went over the cluster bus as classic pub/sub.
        assert (
            _cli(cluster.ports[0], "PUBSUB", "NUMSUB", adapter(a).channel_for(topics[0])).split()[
                -1
            ]
            == "0"
        )
    finally:
        for node in nodes:
            await node.stop()


async def test_two_nodes_cannot_share_a_name(cluster: LocalRedisCluster) -> None:
    prefix = unique_prefix()
    first = PubSub.redis_cluster(cluster.urls, node_name="twin", prefix=prefix)
    await first.start()
    try:
        second = PubSub.redis_cluster(cluster.urls, node_name="twin", prefix=prefix)
        with pytest.raises(ConfigurationError, match="'twin' is already used"):
            await second.start()
        await second.stop()
    finally:
        await first.stop()


async def _node_id(port: int) -> str:
    conn = await RespConnection.open(f"redis://127.0.0.1:{port}")
    try:
        return (await conn.command("CLUSTER", "MYID")).decode()
    finally:
        conn.close()


async def test_a_node_follows_a_slot_migration(cluster: LocalRedisCluster) -> None:
    prefix = unique_prefix()
    a = PubSub.redis_cluster(cluster.urls, node_name="a", prefix=prefix)
    b = PubSub.redis_cluster(cluster.urls, node_name="b", prefix=prefix)
    await a.start()
    await b.start()
    try:
        sub = b.subscription("room:moving")
        await b.prepare("room:moving")
        channel = adapter(b).channel_for("room:moving")
        slot = key_slot(channel)
        source = adapter(b).master_for(channel)
        assert source is not None
        source_port = int(source.rsplit(":", 1)[1])
        target_port = next(p for p in cluster.master_ports() if p != source_port)
        source_id, target_id = await _node_id(source_port), await _node_id(target_port)
        # An empty slot (pub/sub channels are not keys): importing, migrating, then owned.
        _cli(target_port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        _cli(source_port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        for port in (target_port, source_port, *cluster.master_ports()):
            _cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
        await wait_until(
            lambda: (
                adapter(b).master_for(channel) == f"127.0.0.1:{target_port}"
                and channel in adapter(b).subscribed_channels()
            ),
            "node b re-reads the slot map and subscribes on the new owner",
            timeout=WAIT,
        )
        assert adapter(b).slot_moves >= 1
        assert adapter(b).stats.outages == 0  # followed without dropping the link

        # a still has the old map: its SPUBLISH gets -MOVED and follows it.
        await a.broadcast("room:moving", "after the move")
        assert await next_message(sub, "the broadcast after the move") == "after the move"
        assert adapter(a).master_for(channel) == f"127.0.0.1:{target_port}"
    finally:
        await a.stop()
        await b.stop()


async def test_broadcasts_resume_after_a_master_fails_over(
    cluster: LocalRedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="phoenix_channels.pubsub")
    prefix = unique_prefix()
    a = PubSub.redis_cluster(cluster.urls, node_name="a", prefix=prefix, max_backoff=0.5)
    b = PubSub.redis_cluster(cluster.urls, node_name="b", prefix=prefix, max_backoff=0.5)
    await a.start()
    await b.start()
    try:
        by_master = topics_on_every_master(b, 3)
        subs = {topic: b.subscription(topic) for topic in by_master.values()}
        for topic in subs:
            await b.prepare(topic)
        for topic, sub in subs.items():
            await a.broadcast(topic, "before")
            assert await next_message(sub, f"{topic} before the failover") == "before"

        victim, victim_topic = sorted(by_master.items())[0]
        victim_port = int(victim.rsplit(":", 1)[1])
        cluster.kill(victim_port)
        await wait_until(
            lambda: not adapter(a).connected and not adapter(b).connected,
            "both nodes notice the master is gone",
            timeout=WAIT,
        )
        with pytest.raises(BroadcastError, match="unreachable"):
            await a.broadcast(victim_topic, "during")
        await cluster.wait_failover(victim_port)
        await wait_until(
            lambda: (
                adapter(a).connected
                and all(adapter(b).channel_for(t) in adapter(b).subscribed_channels() for t in subs)
            ),
            "both nodes reconnect to the new master and resubscribe",
            timeout=30.0,
        )
        assert victim not in adapter(b).masters()
        for topic, sub in subs.items():
            await a.broadcast(topic, "after")
            assert await next_message(sub, f"{topic} after the failover") == "after"
    finally:
        await a.stop()
        await b.stop()

    assert_one_outage_logged({"a": adapter(a), "b": adapter(b)}, caplog.records, 1)


async def test_a_node_follows_a_manual_failover_without_an_outage(
    cluster: LocalRedisCluster,
) -> None:
    prefix = unique_prefix()
    a = PubSub.redis_cluster(cluster.urls, node_name="a", prefix=prefix)
    b = PubSub.redis_cluster(cluster.urls, node_name="b", prefix=prefix)
    await a.start()
    await b.start()
    try:
        sub = b.subscription("room:promoted")
        await b.prepare("room:promoted")
        channel = adapter(b).channel_for("room:promoted")
        old = adapter(b).master_for(channel)
        assert old is not None
        old_id = await _node_id(int(old.rsplit(":", 1)[1]))
        replica = next(
            int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for fields in (
                line.split() for line in _cli(cluster.ports[0], "CLUSTER", "NODES").splitlines()
            )
            if len(fields) > 3 and "slave" in fields[2] and fields[3] == old_id
        )
        # The replica takes over in agreement with its master (no one is killed).
        assert "OK" in _cli(replica, "CLUSTER", "FAILOVER")
        await cluster.wait_ok()
        await wait_until(
            lambda: (
                adapter(b).master_for(channel) == f"127.0.0.1:{replica}"
                and channel in adapter(b).subscribed_channels()
            ),
            "node b follows its subscription to the promoted replica",
            timeout=WAIT,
        )
        await a.broadcast("room:promoted", "after the failover")
        assert await next_message(sub, "the broadcast after the failover") == "after the failover"
        assert adapter(b).stats.outages == 0 and adapter(a).stats.outages == 0
    finally:
        await a.stop()
        await b.stop()
