"""PubSub: topics, subscribers and broadcasts, on one node or across a cluster.

One API (:class:`PubSub`) in front of an :class:`Adapter` that carries
broadcasts to other nodes. The default :class:`LocalAdapter` has no other
nodes: everything stays in the process.

Two kinds of subscription share the registry:

* plain ones: a callback receives every message published on the topic;
* fast-lane ones, made by channels: a :class:`Broadcast` is encoded once per
  frame encoder (serializer and transport framing) and the ready frame is
  written straight to each subscriber's connection. Only subscribers that
  intercept the event get the message itself, through their channel.

Subscribing the same subscriber to a topic twice keeps one subscription
(Phoenix delivers duplicates there; we make the mistake impossible).

Topics with history (:mod:`phoenix_channels.history`): :meth:`PubSub.broadcast`
gets each broadcast's position from the history store before publishing it.
The policy saying which topics have history is registered by the endpoint
(:meth:`PubSub.add_history_routes`); without one, broadcasts skip it all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any, Protocol, Unpack

from ..errors import BroadcastError, ConfigurationError
from ..history import History, HistoryStore, Position
from ..history.policy import HistoryPolicy, append, read_stored, store_for
from ..protocol.messages import Broadcast
from ..telemetry import PUBSUB_BROADCAST, broadcast_done
from .options import EngineArgs, NatsArgs

__all__ = ["Adapter", "LocalAdapter", "PubSub", "Subscription"]

log = logging.getLogger("phoenix_channels.pubsub")

_UNENCODED = object()

Callback = Callable[[Any], None]


class Adapter(Protocol):
    """Carries broadcasts between nodes; the registry of subscribers stays local.

    ``broadcast`` sends to every *other* node, ``direct_broadcast`` to one
    node by name. A receiving node calls :meth:`PubSub.local_broadcast`.
    ``topic_added``/``topic_removed`` say when this node gains its first, or
    loses its last, subscriber of a topic, so an adapter can subscribe on its
    engine per topic; such an adapter also defines ``async def prepare(topic)``
    (see :meth:`PubSub.prepare`). Cluster adapters: :meth:`PubSub.redis`,
    :meth:`PubSub.nats`.
    """

    node_name: str

    async def start(self, pubsub: PubSub) -> None: ...

    async def stop(self) -> None: ...

    async def broadcast(self, topic: str, message: Any) -> None: ...

    async def direct_broadcast(self, node_name: str, topic: str, message: Any) -> None: ...

    def topic_added(self, topic: str) -> None: ...

    def topic_removed(self, topic: str) -> None: ...


class LocalAdapter:
    """The embedded default: one node, no network."""

    def __init__(self, node_name: str | None = None) -> None:
        self.node_name = node_name or f"local-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    async def start(self, pubsub: PubSub) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def broadcast(self, topic: str, message: Any) -> None:
        return None

    async def direct_broadcast(self, node_name: str, topic: str, message: Any) -> None:
        return None

    def topic_added(self, topic: str) -> None:
        return None

    def topic_removed(self, topic: str) -> None:
        return None

    def history_store(self) -> HistoryStore:
        """In memory: one process has the only copy (``history/memory.py``)."""
        from ..history.memory import MemoryHistory

        return MemoryHistory()


# An entry: (owner, target, encoder, intercepts). For plain subscriptions the
# owner is the callback itself and encoder is None; for the fast lane, target
# writes a ready frame and owner is the channel (it receives intercepted events).
_Entry = tuple[Any, Callable[[Any], None], Any, frozenset[str] | None]


class PubSub:
    """Subscribe to topics and broadcast to them.

    ``broadcast`` reaches every subscriber on every node (this one included);
    ``broadcast_from`` skips one subscriber; ``local_broadcast`` stays on this
    node; ``direct_broadcast`` reaches one named node.
    """

    def __init__(self, adapter: Adapter | None = None) -> None:
        self.adapter: Adapter = adapter if adapter is not None else LocalAdapter()
        self._topics: dict[str, dict[Hashable, _Entry]] = {}
        # Per topic, its subscribers by kind, (encoder, intercepts) -> how many: what a
        # broadcast's telemetry needs, counted on first need and forgotten at any change
        # of the topic's subscribers (one dict pop), so a run of broadcasts counts once.
        self._kinds: dict[str, dict[tuple[Any, Any], int]] = {}
        self._started = False
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop it was started on
        self._history: HistoryPolicy | None = None
        self.history_store: HistoryStore | None = None
        """Where positions come from and messages are kept, once a topic has history."""

    @classmethod
    def redis(cls, url: str = "redis://127.0.0.1:6379/0", **options: Unpack[EngineArgs]) -> PubSub:
        """A PubSub whose broadcasts reach every node sharing this Redis (see docs/cluster.md).

        ``options``: ``node_name``, ``prefix``, ``shards``, ``timeout``,
        ``max_backoff``, ``health_interval``, declared with their defaults in
        :class:`.options.EngineOptions`.
        A ``redis+cluster://host:port,host:port`` URL means :meth:`redis_cluster`.
        """
        if isinstance(url, str) and url.startswith(("redis+cluster://", "rediss+cluster://")):
            return cls.redis_cluster(url, **options)
        from .redis import RedisAdapter

        return cls(RedisAdapter(url, **options))

    @classmethod
    def redis_cluster(cls, seeds: str | list[str], **options: Unpack[EngineArgs]) -> PubSub:
        """A PubSub over a Redis Cluster's sharded pub/sub (Redis 7; see docs/cluster.md).

        ``seeds``: URLs of some nodes of the cluster. ``options``: those of
        :meth:`redis`, declared in :class:`.options.EngineOptions`.
        """
        from .redis_cluster import RedisClusterAdapter

        return cls(RedisClusterAdapter(seeds, **options))

    @classmethod
    def nats(cls, url: str = "nats://127.0.0.1:4222", **options: Unpack[NatsArgs]) -> PubSub:
        """A PubSub whose broadcasts reach every node on this NATS (needs ``[nats]``).

        ``options``: those of :meth:`redis`, plus ``connect_options`` for
        ``nats.connect``, declared in :class:`.options.NatsOptions`.
        """
        from .nats import NatsAdapter

        return cls(NatsAdapter(url, **options))

    @property
    def node_name(self) -> str:
        return self.adapter.node_name

    async def start(self) -> None:
        if not self._started:
            self._started = True
            self.loop = asyncio.get_running_loop()
            await self.adapter.start(self)

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self.adapter.stop()

    # -- the registry --------------------------------------------------------

    def subscribe(self, topic: str, callback: Callback) -> None:
        """Call ``callback(message)`` for every message published on ``topic``."""
        self._add(topic, callback, (callback, callback, None, None))

    def unsubscribe(self, topic: str, subscriber: Hashable) -> None:
        """Remove ``subscriber`` (a callback, or a channel) from ``topic``; no-op if absent."""
        subs = self._topics.get(topic)
        if subs is None:
            return
        if subs.pop(subscriber, None) is None:
            return
        self._kinds.pop(topic, None)
        if not subs:
            del self._topics[topic]
            self.adapter.topic_removed(topic)

    def subscribe_fastlane(
        self,
        topic: str,
        owner: Hashable,
        write: Callable[[Any], None],
        encoder: Hashable,
        intercepts: frozenset[str] | None,
    ) -> None:
        """Subscribe a channel: broadcasts are encoded by ``encoder`` and given to ``write``.

        Events in ``intercepts`` go to ``owner._intercepted(broadcast)`` instead.
        """
        self._add(topic, owner, (owner, write, encoder, intercepts))

    def hold(
        self, topic: str, owner: Hashable, hold: Callable[[Any], None]
    ) -> tuple[Callable[[Any], None], Callable[[], None]] | None:
        """Give ``owner``'s broadcasts on ``topic``, unencoded, to ``hold`` for a while.

        For a replay (history): returns ``(write, restore)``, the write function
        of ``owner``'s subscription and a function that puts the subscription
        back (a no-op if ``owner`` unsubscribed meanwhile); None if ``owner``
        is not subscribed to ``topic``.
        """
        subs = self._topics.get(topic)
        entry = None if subs is None else subs.get(owner)
        if subs is None or entry is None:
            return None
        subs[owner] = (owner, hold, None, None)
        self._kinds.pop(topic, None)

        def restore() -> None:
            current = self._topics.get(topic)
            if current is not None and owner in current:
                current[owner] = entry
                self._kinds.pop(topic, None)

        return entry[1], restore

    def _add(self, topic: str, key: Hashable, entry: _Entry) -> None:
        if type(topic) is not str:
            raise ConfigurationError(f"topic must be a str, got {topic!r}")
        subs = self._topics.get(topic)
        if subs is None:
            subs = self._topics[topic] = {}
            self.adapter.topic_added(topic)
        subs[key] = entry
        self._kinds.pop(topic, None)

    def _kinds_of(self, topic: str) -> dict[tuple[Any, Any], int]:
        """``topic``'s subscribers by (encoder, intercepts): counted once per change."""
        kinds = self._kinds.get(topic)
        if kinds is None:
            kinds = {}
            for _owner, _target, encoder, intercepts in self._topics.get(topic, {}).values():
                kind = (encoder, intercepts)
                kinds[kind] = kinds.get(kind, 0) + 1
            if kinds:
                self._kinds[topic] = kinds
        return kinds

    def channel_subscribers(self, topic: str) -> int:
        """How many of ``topic``'s subscribers on this node are channels (not callbacks)."""
        return sum(n for (encoder, _), n in self._kinds_of(topic).items() if encoder is not None)

    # -- history --------------------------------------------------------------

    def add_history_routes(self, routes: list[tuple[str, History | None]]) -> None:
        """Give positions to broadcasts on topics matching these patterns (the endpoint calls it).

        ``routes``: ``(pattern, History or None)`` in route order; the first
        matching pattern decides. Makes the adapter's history store if needed.
        """
        if self._history is None:
            policy = HistoryPolicy(routes)
            if not policy:
                return
            self._history = policy
        else:
            self._history.extend(routes)
        if self.history_store is None:
            self.history_store = store_for(self.adapter)

    def history_policy(self, topic: str) -> History | None:
        """The history ``topic`` keeps, or None (no position, nothing stored)."""
        policy = self._history
        return None if policy is None else policy(topic)

    async def history(self, topic: str, after: Position | str | None = None) -> list[Broadcast]:
        """The stored broadcasts of ``topic``, oldest first, each with its position in ``ref``.

        ``after``: only those after this position (of the current epoch; from
        another epoch, every stored message). Raises :class:`UsageError` if the
        topic has no history.
        """
        return await read_stored(self.history_store, self.history_policy(topic), topic, after)

    async def prepare(self, topic: str) -> None:
        """Return once broadcasts on ``topic`` from other nodes will reach this node.

        Adapters that subscribe on their engine per topic (Redis, NATS) need
        a round trip for a topic this node had no subscriber for; call this
        before subscribing when nothing published after that point may be
        missed (a channel does it before its join reply). Bounded by the
        adapter's timeout, and a no-op for adapters without engine
        subscriptions (the local one: it returns without suspending).
        """
        prepare = getattr(self.adapter, "prepare", None)
        if prepare is None:
            return
        try:
            await prepare(topic)
        except Exception:  # a failing adapter costs the guarantee, never the join
            log.exception("preparing topic %r failed", topic)

    def subscribers(self, topic: str) -> int:
        """How many subscribers ``topic`` has on this node."""
        subs = self._topics.get(topic)
        return len(subs) if subs else 0

    def topics(self) -> int:
        """How many topics have subscribers on this node."""
        return len(self._topics)

    def subscription(self, topic: str, maxsize: int = 1000) -> Subscription:
        """An async iterator over the messages of ``topic`` (use with ``async with``)."""
        return Subscription(self, topic, maxsize)

    # -- publishing -----------------------------------------------------------

    async def broadcast(self, topic: str, message: Any, *, from_: Hashable = None) -> None:
        """Deliver to every subscriber on every node; ``from_`` is skipped.

        Raises :class:`BroadcastError` if the adapter cannot publish; local
        subscribers then get nothing either, as in Phoenix.
        """
        if self._history is not None and type(message) is Broadcast:
            history = self._history(topic)
            if history is not None:
                positioned = await append(self.history_store, topic, message, history, from_)
                if positioned is None:
                    return  # the store published it to every node, this one included
                message = positioned
        try:
            await self.adapter.broadcast(topic, message)
        except BroadcastError:
            raise
        except Exception as exc:  # an adapter's own failure, mapped at the boundary
            raise BroadcastError(f"broadcast on {topic!r} failed: {exc}") from exc
        self.local_broadcast(topic, message, from_=from_)

    async def direct_broadcast(self, node_name: str, topic: str, message: Any) -> None:
        """Deliver to the subscribers of ``topic`` on the node named ``node_name`` only."""
        if node_name == self.node_name:
            self.local_broadcast(topic, message)
            return
        try:
            await self.adapter.direct_broadcast(node_name, topic, message)
        except BroadcastError:
            raise
        except Exception as exc:
            raise BroadcastError(f"direct broadcast to {node_name!r} failed: {exc}") from exc

    def local_broadcast(self, topic: str, message: Any, *, from_: Hashable = None) -> None:
        """Deliver to this node's subscribers of ``topic``, skipping ``from_``."""
        subs = self._topics.get(topic)
        if not subs:
            return
        if type(message) is not Broadcast:
            for owner, target, _enc, _icp in tuple(subs.values()):
                if owner is not from_:
                    target(message)
            return
        # The fast lane: one encoding per encoder, shared by every subscriber.
        frames: dict[Any, Any] = {}
        event = message.event
        entries = tuple(subs.values())
        # For telemetry, taken before any callback can change them: the subscribers by
        # kind, and the entry of the one skipped.
        counted = (
            (dict(self._kinds_of(topic)), None if from_ is None else subs.get(from_))
            if PUBSUB_BROADCAST.on
            else None
        )
        for owner, target, encoder, intercepts in entries:
            if owner is from_:
                continue
            if encoder is None:
                target(message)
            elif intercepts is not None and event in intercepts:
                owner._intercepted(message)
            else:
                frame = frames.get(encoder, _UNENCODED)
                if frame is _UNENCODED:
                    frame = frames[encoder] = encoder.broadcast(message)
                if frame is not None:  # None: this encoder cannot carry it (logged once)
                    target(frame)
        if counted is not None:
            broadcast_done(self, message, *counted, len(entries), frames)


class Subscription:
    """Messages of one topic, queued for an ``async for`` loop.

    The queue holds at most ``maxsize`` messages; when it is full the oldest
    message is dropped and :attr:`dropped` counts it, so a slow reader can
    never make the node's memory grow without bound.
    """

    def __init__(self, pubsub: PubSub, topic: str, maxsize: int) -> None:
        self.topic = topic
        self.dropped = 0
        self._pubsub = pubsub
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        pubsub.subscribe(topic, self._put)

    def _put(self, message: Any) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(message)

    async def get(self) -> Any:
        return await self._queue.get()

    def close(self) -> None:
        self._pubsub.unsubscribe(self.topic, self._put)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return await self._queue.get()
