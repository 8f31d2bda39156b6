"""The publisher: broadcasts from plain synchronous code and from other processes.

A separate process (a plain script, no event loop of its own) publishes over
Redis and over NATS; official JS clients joined on two nodes each receive
the broadcast exactly once. In-process tests cover threads, ``fork``, the
async form and publishing through a running endpoint.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from phoenix_channels import (
    Broadcast,
    BroadcastError,
    Channel,
    EncodeError,
    Endpoint,
    PubSub,
    Socket,
    UsageError,
)
from phoenix_channels.publisher import Publisher
from tests.apps.support import child_env, js_client, server
from tests.pubsub.engines import ENGINES, shared_url, unique_prefix

SCRIPT = """
import sys
from phoenix_channels.publisher import Publisher

url, prefix, topic = sys.argv[1:4]
publisher = Publisher(url, prefix=prefix)
publisher.publish(topic, "news", {"n": 1, "from": "script"})
publisher.publish(topic, "done", {})
publisher.close()
print("published")
"""

FORK_SCRIPT = """
import os, sys, threading
from phoenix_channels.publisher import Publisher

url, prefix, topic = sys.argv[1:4]
publisher = Publisher(url, prefix=prefix)
publisher.publish(topic, "news", {"who": "parent"})
pid = os.fork()
if pid == 0:
    failures = []

    def publish(i):
        try:
            publisher.publish(topic, "news", {"who": f"child-{i}"})
        except BaseException as exc:
            failures.append(repr(exc))

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("child failures:", failures, flush=True)
    os._exit(1 if failures else 0)
_, status = os.waitpid(pid, 0)
publisher.publish(topic, "news", {"who": "parent-after"})
publisher.close()
print("exit", status)
"""


async def _subscriber(engine: str, prefix: str, topic: str) -> tuple[PubSub, Any]:
    url = shared_url(engine)
    pubsub = (
        PubSub.redis(url, prefix=prefix) if engine == "redis" else PubSub.nats(url, prefix=prefix)
    )
    await pubsub.start()
    sub = pubsub.subscription(topic)
    await pubsub.prepare(topic)
    return pubsub, sub


async def _script(code: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, env=child_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_script_publishes_to_clients_on_two_nodes_exactly_once(
    engine: str, tmp_path: Path
) -> None:
    url = shared_url(engine)
    prefix = unique_prefix()
    env = child_env(PHX_CLUSTER_ENGINE=engine, PHX_CLUSTER_URL=url, PHX_CLUSTER_PREFIX=prefix)
    cmd = [sys.executable, "-m", "phoenix_channels", "serve", "tests.cluster.app:endpoint",
           "--port", "{port}", "--log-level", "warning"]  # fmt: skip
    async with (
        server(cmd, tmp_path, env=env) as node_a,
        server(cmd, tmp_path, env=env) as node_b,
        js_client(node_a.url(), "room:pub") as a,
        js_client(node_b.url(), "room:pub") as b,
    ):
        joined_a, joined_b = await a.next("joined"), await b.next("joined")
        assert joined_a["response"]["node"] != joined_b["response"]["node"]

        assert "published" in await _script(SCRIPT, url, prefix, "room:pub")

        for client in (a, b):
            news = await client.event("news")
            assert news["payload"] == {"n": 1, "from": "script"}
            assert news["ref"] is None  # a broadcast, as endpoint.broadcast sends it
            await client.event("done")
            assert len(client.events("news")) == 1


@pytest.mark.parametrize("engine", ENGINES)
async def test_the_message_is_the_one_endpoint_broadcast_sends(engine: str) -> None:
    prefix = unique_prefix()
    url = shared_url(engine)
    pubsub, sub = await _subscriber(engine, prefix, "room:same")
    endpoint_side = (
        PubSub.redis(url, prefix=prefix) if engine == "redis" else PubSub.nats(url, prefix=prefix)
    )
    endpoint = Endpoint(sockets={"/socket": Socket}, pubsub=endpoint_side, secret_key_base="p" * 48)
    await endpoint.start()
    try:
        await endpoint.broadcast("room:same", "news", {"a": [1, 2]})
        publisher = Publisher(url, prefix=prefix)
        await publisher.apublish("room:same", "news", {"a": [1, 2]})
        async with asyncio.timeout(10):
            first, second = await sub.get(), await sub.get()
        assert first == second == Broadcast("room:same", "news", {"a": [1, 2]})
        publisher.close()
    finally:
        await endpoint.stop()
        sub.close()
        await pubsub.stop()


async def test_many_threads_share_one_publisher() -> None:
    prefix = unique_prefix()
    pubsub, sub = await _subscriber("redis", prefix, "room:threads")
    publisher = Publisher.redis(shared_url("redis"), prefix=prefix)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(5):
                publisher.publish("room:threads", "n", {"i": i, "j": j})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    try:
        await asyncio.to_thread(
            lambda: [t.start() for t in threads] and [t.join() for t in threads]
        )
        assert errors == []
        got = set()
        async with asyncio.timeout(10):
            while len(got) < 40:
                message = await sub.get()
                got.add((message.payload["i"], message.payload["j"]))
        assert got == {(i, j) for i in range(8) for j in range(5)}
    finally:
        await asyncio.to_thread(publisher.close)
        sub.close()
        await pubsub.stop()


async def test_a_forked_child_publishes_on_its_own_link() -> None:
    prefix = unique_prefix()
    url = shared_url("redis")
    pubsub, sub = await _subscriber("redis", prefix, "room:fork")
    try:
        out = await _script(FORK_SCRIPT, url, prefix, "room:fork")
        assert "exit 0" in out, out
        who = []
        async with asyncio.timeout(10):
            while len(who) < 6:
                who.append((await sub.get()).payload["who"])
        assert who[0] == "parent" and who[-1] == "parent-after"
        assert sorted(who[1:5]) == [f"child-{i}" for i in range(4)]
    finally:
        sub.close()
        await pubsub.stop()


FORK_STARTED_SCRIPT = """
import os, sys
from phoenix_channels import PubSub
from phoenix_channels.errors import UsageError
from phoenix_channels.publisher import Publisher

url, prefix, topic = sys.argv[1:4]
publisher = Publisher(PubSub.redis(url, prefix=prefix))  # a PubSub object: no way to rebuild it
publisher.publish(topic, "news", {"who": "parent"})
pid = os.fork()
if pid == 0:
    try:
        publisher.publish(topic, "news", {"who": "child"})
    except UsageError as exc:
        print("child:", exc, flush=True)
        os._exit(0)
    os._exit(1)
_, status = os.waitpid(pid, 0)
publisher.close()
print("exit", status)
"""


async def test_a_forked_child_cannot_reuse_a_started_pubsub_object() -> None:
    prefix = unique_prefix()
    out = await _script(FORK_STARTED_SCRIPT, shared_url("redis"), prefix, "room:fork2")
    assert "exit 0" in out, out
    assert "started before the process forked" in out and "Publisher.redis(url)" in out


async def test_publishing_through_a_running_endpoint_from_a_thread() -> None:
    endpoint = Endpoint(sockets={"/socket": Socket})  # the local adapter: no engine at all
    await endpoint.start()
    publisher = Publisher(endpoint)
    try:
        async with endpoint.pubsub.subscription("room:local") as sub:
            await asyncio.to_thread(publisher.publish, "room:local", "from_thread", {"x": 1})
            await publisher.apublish("room:local", "from_loop", {"x": 2})
            async with asyncio.timeout(10):
                assert (await sub.get()).event == "from_thread"
                assert (await sub.get()).event == "from_loop"
        with pytest.raises(UsageError, match="apublish"):
            publisher.publish("room:local", "blocked", {})
    finally:
        await endpoint.stop()


def test_misuse_and_engine_failures_are_clear_errors() -> None:
    with pytest.raises(UsageError, match="redis://"):
        Publisher("http://example.com")
    not_running = Publisher(Endpoint(sockets={"/socket": Socket}))
    with pytest.raises(UsageError, match=r"local one and does not run in this process"):
        not_running.publish("room:x", "e", {})
    with pytest.raises(UsageError, match="URL, a PubSub or an Endpoint"):
        Publisher(42)  # type: ignore[arg-type]
    publisher = Publisher("redis://127.0.0.1:1", prefix=unique_prefix(), timeout=1.0)
    with pytest.raises(BroadcastError):
        publisher.publish("room:x", "e", {})
    publisher.close()
    with pytest.raises(UsageError, match="closed"):
        publisher.publish("room:x", "e", {})
    with pytest.raises(EncodeError, match="dict or bytes"):
        Publisher.redis().publish("room:x", "e", object())


def test_a_url_publisher_given_the_endpoint_follows_its_history_routes() -> None:
    from phoenix_channels.history import History

    class Kept(Channel):
        history = History(size=10, ttl=None)

        async def join(self, topic: str, payload: Any) -> Any:
            return None

    class HistorySocket(Socket):
        channels = {"kept:*": Kept}

    endpoint = Endpoint(sockets={"/socket": HistorySocket})
    url = shared_url("redis")
    with Publisher(url, prefix=unique_prefix(), endpoint=endpoint) as publisher:
        assert publisher.pubsub.history_policy("kept:1") == Kept.history
        assert publisher.pubsub.history_policy("room:1") is None
    plain = Publisher(url, prefix=unique_prefix())
    assert plain.pubsub.history_policy("kept:1") is None
