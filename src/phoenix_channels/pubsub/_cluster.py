"""What the Redis and NATS adapters share: engine subscriptions per topic, and surviving faults.

An :class:`EngineAdapter` keeps one link to a message engine and runs it
from one supervisor task:

* **Subscriptions follow the registry.** The node is subscribed on the
  engine to one channel per topic it has local subscribers for (or, with
  ``shards=N``, to the shard channels those topics hash to), plus its own
  node channel for direct broadcasts. ``topic_added``/``topic_removed``
  only count references and mark the channel dirty; the supervisor sends
  the (batched) SUBSCRIBE/UNSUBSCRIBE commands. :meth:`EngineAdapter.prepare`
  waits until a topic's channel is confirmed by the engine, which is how a
  channel join promises its client every broadcast published after the
  join reply, from any node.
* **Faults.** When the link breaks the node keeps serving its local
  clients; broadcasts fail at once with :class:`~phoenix_channels.BroadcastError`
  (never hang: publishing is bounded by ``timeout``); the outage is logged
  once; the supervisor reconnects with exponential backoff (with jitter, up
  to ``max_backoff``) and resubscribes every channel still wanted; then it
  logs what the gap cost. Delivery is at most once, as in Phoenix: what
  other nodes published while the link was down is not replayed.
* **Receiving.** Each message from the engine is decoded once
  (:mod:`.codec`) and handed to ``PubSub.local_broadcast`` once, so the
  fast lane encodes it once per serializer for all local subscribers. A
  malformed message is logged (rate-limited) and dropped.

Engine-specific subclasses implement ``_open``, ``_close``, ``_subscribe``,
``_unsubscribe``, ``_publish``, ``_ping`` and the channel naming, and call
:meth:`EngineAdapter._deliver` for each message and
:meth:`EngineAdapter._connection_lost` when their connection breaks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from ..errors import BroadcastError, ConfigurationError, EncodeError
from ..telemetry import PUBSUB_LINK_DOWN, PUBSUB_LINK_UP, PUBSUB_PUBLISH, now
from . import codec
from .options import EngineOptions


class LocalDelivery(Protocol):
    """What an adapter needs of its :class:`~phoenix_channels.pubsub.PubSub`: local delivery."""

    def local_broadcast(self, topic: str, message: Any) -> None: ...


__all__ = [
    "AdapterStats",
    "EngineAdapter",
    "EngineRefused",
    "LocalDelivery",
    "default_node_name",
    "within",
]

_T = TypeVar("_T")

_BACKOFF_MIN = 0.1
_BATCH = 500  # channels per SUBSCRIBE/UNSUBSCRIBE command
_LINGER = 2.0  # seconds a prepare() keeps its channel wanted after returning


def default_node_name() -> str:
    """``<host>-<pid>-<random>``: unique per process, readable in logs and engine monitors."""
    host = socket.gethostname()[:200] or "node"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class EngineRefused(Exception):
    """The engine answered a subscription with an error (the link itself is fine)."""


@dataclass(slots=True)
class AdapterStats:
    """Counters of one adapter since it was created (for monitoring and tests)."""

    published: int = 0
    """Messages this node published on the engine."""
    received: int = 0
    """Messages that arrived from the engine (own echoes and malformed ones included)."""
    delivered: int = 0
    """Messages from other nodes handed to this node's subscribers (once each)."""
    malformed: int = 0
    """Messages from the engine dropped because they could not be decoded."""
    failed: int = 0
    """Broadcasts that raised BroadcastError (engine down, timeout, refused)."""
    outages: int = 0
    """Times the link to the engine was lost (or could not be made)."""
    reconnects: int = 0
    """Times the link was made again after an outage."""


class EngineAdapter:
    """Base of the adapters that carry broadcasts over an external engine."""

    engine: ClassVar[str] = "engine"
    log: ClassVar[logging.Logger] = logging.getLogger("phoenix_channels.pubsub")

    def __init__(self, url: str, options: EngineOptions) -> None:
        self.url = url
        self.options = options
        """The adapter's options, checked (:class:`~.options.EngineOptions`)."""
        self.node_name = default_node_name() if options.node_name is None else options.node_name
        self.prefix = options.prefix
        self.shards = options.shards
        self.timeout = options.timeout
        self.max_backoff = options.max_backoff
        self.health_interval = options.health_interval
        self.stats = AdapterStats()
        self._node = self.node_name.encode()
        self._pubsub: LocalDelivery | None = None
        self._wanted: dict[str, int] = {}  # engine channel -> topics (and prepares) needing it
        self._active: set[str] = set()  # channels the engine confirmed on the current link
        self._dirty: set[str] = set()  # channels whose wanted state changed since the last sync
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._connected = False
        self._stopping = False
        self._lost: BaseException | None = None
        self._kick: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._first_attempt: asyncio.Future[None] | None = None
        self._down_since: float | None = None
        self._down_reason = ""
        self._failed_in_outage = 0
        self._malformed_logged_at = 0.0
        self._malformed_unlogged = 0

    # -- what subclasses implement ---------------------------------------------------------

    def _topic_channel(self, topic: str) -> str:
        raise NotImplementedError

    def _shard_channel(self, shard: int) -> str:
        raise NotImplementedError

    def _node_channel(self, node_name: str) -> str:
        raise NotImplementedError

    async def _open(self) -> None:
        """Connect, and subscribe to this node's channel; raise if that fails."""
        raise NotImplementedError

    async def _close(self) -> None:
        """Drop the connection(s), if any; never raises."""
        raise NotImplementedError

    async def _subscribe(self, channels: list[str]) -> None:
        """Subscribe; return once the engine has confirmed every channel."""
        raise NotImplementedError

    async def _unsubscribe(self, channels: list[str]) -> None:
        raise NotImplementedError

    async def _publish(self, channel: str, data: bytes) -> None:
        """Hand one message to the engine; raise TimeoutError after ``timeout``.

        It may run outside any task (see :func:`within`): no ``asyncio.timeout`` here.
        """
        raise NotImplementedError

    async def _ping(self) -> None:
        """A round trip to the engine on the subscribing connection."""
        raise NotImplementedError

    # -- the Adapter protocol ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the link to the engine is up right now."""
        return self._connected

    def channel_for(self, topic: str) -> str:
        """The engine channel that carries ``topic`` (its own, or its shard's)."""
        if self.shards is None:
            return self._topic_channel(topic)
        return self._shard_channel(zlib.crc32(topic.encode("utf-8", "surrogatepass")) % self.shards)

    async def start(self, pubsub: LocalDelivery) -> None:
        """Connect (waiting at most ``timeout`` for the first attempt) and keep the link up.

        If the engine cannot be reached, the node starts anyway and serves
        its local clients; the link is retried in the background.
        """
        if self._task is not None:
            return
        self._pubsub = pubsub
        loop = asyncio.get_running_loop()
        self._kick = asyncio.Event()
        self._first_attempt = loop.create_future()
        self._task = loop.create_task(self._supervise(), name=f"phoenix-channels {self.engine}")
        try:
            await within(self._first_attempt, self.timeout + 1)
        except TimeoutError:
            pass
        except ConfigurationError:
            self._task = None
            raise

    async def stop(self) -> None:
        """Close the link; broadcasts fail from now on."""
        task, self._task = self._task, None
        self._connected = False
        self._stopping = True
        self._down_reason = "this node's PubSub was stopped"
        if self._kick is not None:
            self._kick.set()
        while task is not None and not task.done():
            # Cancel until it takes: a client library may swallow one cancellation
            # (asyncio.wait_for in 3.11 returns a result that raced with a cancel).
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        if task is not None and not task.cancelled() and task.exception() is not None:
            self.log.error("the %s link failed", self.engine, exc_info=task.exception())
        self._stopping = False
        await self._close()
        self._active.clear()
        self._release_waiters()

    async def broadcast(self, topic: str, message: Any) -> None:
        await self._send(self.channel_for(topic), codec.BROADCAST, self._node, topic, message)

    async def direct_broadcast(self, node_name: str, topic: str, message: Any) -> None:
        try:
            target = node_name.encode()
        except (AttributeError, UnicodeEncodeError):
            raise BroadcastError(f"node name must be a str, got {node_name!r}") from None
        await self._send(self._node_channel(node_name), codec.DIRECT, target, topic, message)

    def topic_added(self, topic: str) -> None:
        self._want(self.channel_for(topic))

    def topic_removed(self, topic: str) -> None:
        self._unwant(self.channel_for(topic))

    async def prepare(self, topic: str) -> None:
        """Return once broadcasts on ``topic`` from other nodes reach this node.

        Subscribes the topic's engine channel if needed and waits for the
        engine's confirmation (at most ``timeout``). The channel stays
        wanted for a moment after this returns, so the caller can subscribe
        locally before it would be dropped. Returns at once when the link
        is down: nothing can be promised then (the channel is subscribed
        when the link is back).
        """
        channel = self.channel_for(topic)
        if channel in self._active or not self._connected:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        self._want(channel)
        try:
            await within(waiter, self.timeout)
        except TimeoutError:
            self.log.warning(
                "%s did not confirm the subscription to %r within %.1f s",
                self.engine,
                channel,
                self.timeout,
            )
        finally:
            waiters = self._waiters.get(channel)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[channel]
            loop.call_later(_LINGER, self._unwant, channel)

    # -- subscriptions --------------------------------------------------------------------

    def _want(self, channel: str) -> None:
        count = self._wanted.get(channel, 0)
        self._wanted[channel] = count + 1
        if count == 0:
            self._dirty.add(channel)
            if self._kick is not None:
                self._kick.set()

    def _unwant(self, channel: str) -> None:
        count = self._wanted.get(channel, 0)
        if count > 1:
            self._wanted[channel] = count - 1
        elif count == 1:
            del self._wanted[channel]
            self._dirty.add(channel)
            if self._kick is not None:
                self._kick.set()

    def subscribed_channels(self) -> set[str]:
        """The engine channels confirmed on the current link (the node channel excluded)."""
        return set(self._active)

    async def _sync(self) -> None:
        """Bring the engine's subscriptions in line with the registry, until the link breaks."""
        kick = self._kick
        assert kick is not None
        while not self._stopping:
            if self._lost is not None:
                raise self._lost
            if not self._dirty:
                kick.clear()
                try:
                    async with asyncio.timeout(self.health_interval):
                        await kick.wait()
                except TimeoutError:
                    async with asyncio.timeout(self.timeout):
                        await self._ping()
                continue
            dirty, self._dirty = self._dirty, set()
            wanted, active = self._wanted, self._active
            adds = [ch for ch in dirty if ch in wanted and ch not in active]
            removes = [ch for ch in dirty if ch not in wanted and ch in active]
            for i in range(0, len(adds), _BATCH):
                batch = adds[i : i + _BATCH]
                try:
                    async with asyncio.timeout(self.timeout):
                        await self._subscribe(batch)
                except EngineRefused as exc:
                    # The engine answered no (an ACL, say): the link is fine, these
                    # channels cannot be had; prepare() callers stop waiting.
                    self.log.error(
                        "%s refused to subscribe to %d channel(s), e.g. %r: %s",
                        self.engine,
                        len(batch),
                        batch[0],
                        exc,
                    )
                    for channel in batch:
                        for waiter in self._waiters.pop(channel, ()):
                            if not waiter.done():
                                waiter.set_result(None)
                    continue
                active.update(batch)
                for channel in batch:
                    for waiter in self._waiters.pop(channel, ()):
                        if not waiter.done():
                            waiter.set_result(None)
                    if channel not in wanted:  # dropped while we waited: undo next round
                        self._dirty.add(channel)
            for i in range(0, len(removes), _BATCH):
                batch = [ch for ch in removes[i : i + _BATCH] if ch not in wanted]
                if batch:
                    async with asyncio.timeout(self.timeout):
                        await self._unsubscribe(batch)
                    active.difference_update(batch)

    def _release_waiters(self) -> None:
        waiters, self._waiters = self._waiters, {}
        for futures in waiters.values():
            for waiter in futures:
                if not waiter.done():
                    waiter.set_result(None)

    # -- the link -----------------------------------------------------------------------------

    def _connection_lost(self, exc: BaseException | None) -> None:
        """Called by the subclass when its connection breaks (from any callback)."""
        if self._lost is None:
            self._lost = exc if exc is not None else ConnectionError("connection closed")
        self._connected = False
        if self._kick is not None:
            self._kick.set()

    async def _supervise(self) -> None:
        delay = _BACKOFF_MIN
        while not self._stopping:
            self._lost = None
            try:
                async with asyncio.timeout(self.timeout):
                    await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._close()
                first = self._first_attempt
                if isinstance(exc, ConfigurationError) and first is not None and not first.done():
                    first.set_exception(exc)  # start() raises it: a setting to fix, not an outage
                    return
                self._went_down(exc, connecting=True)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.max_backoff)
                continue
            delay = _BACKOFF_MIN
            self._active.clear()
            self._dirty = set(self._wanted)
            self._connected = self._lost is None
            self._came_up()
            try:
                await self._sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._went_down(exc, connecting=False)
            self._connected = False
            self._active.clear()
            self._release_waiters()
            await self._close()

    def _went_down(self, exc: BaseException, *, connecting: bool) -> None:
        self._connected = False
        first = self._first_attempt
        if first is not None and not first.done():
            first.set_result(None)
        reason = _describe(exc)
        if self._down_since is not None:
            self.log.debug("%s at %s still unreachable: %s", self.engine, self.url, reason)
            return
        self._down_since = time.monotonic()
        self._down_reason = reason
        if PUBSUB_LINK_DOWN.on:
            PUBSUB_LINK_DOWN.emit({}, {"adapter": self, "engine": self.engine, "reason": reason})
        self._failed_in_outage = 0
        self.stats.outages += 1
        what = "cannot reach" if connecting else "lost the connection to"
        self.log.warning(
            "node %s %s %s at %s (%s); serving local clients only, broadcasts fail until "
            "it is back; retrying with backoff up to %.0f s",
            self.node_name,
            what,
            self.engine,
            self.url,
            reason,
            self.max_backoff,
        )

    def _came_up(self) -> None:
        first = self._first_attempt
        if first is not None and not first.done():
            first.set_result(None)
        if self._down_since is None:
            self.log.info("node %s connected to %s at %s", self.node_name, self.engine, self.url)
            if PUBSUB_LINK_UP.on:
                PUBSUB_LINK_UP.emit(
                    {"gap": 0.0, "failed": 0},
                    {"adapter": self, "engine": self.engine, "reconnect": False},
                )
            return
        gap = time.monotonic() - self._down_since
        self._down_since = None
        self.stats.reconnects += 1
        if PUBSUB_LINK_UP.on:
            PUBSUB_LINK_UP.emit(
                {"gap": gap, "failed": self._failed_in_outage},
                {"adapter": self, "engine": self.engine, "reconnect": True},
            )
        self.log.warning(
            "node %s reconnected to %s at %s after %.1f s; resubscribing %d channel(s). "
            "Lost in the gap (delivery is at most once): %d broadcast(s) from this node failed "
            "with BroadcastError, and whatever other nodes published meanwhile was not "
            "delivered here",
            self.node_name,
            self.engine,
            self.url,
            gap,
            len(self._wanted),
            self._failed_in_outage,
        )

    # -- publishing and receiving ----------------------------------------------------------

    async def _send(self, channel: str, kind: int, node: bytes, topic: str, message: Any) -> None:
        if not self._connected:
            self._fail()
            since = (
                f" for {time.monotonic() - self._down_since:.1f} s"
                if self._down_since is not None
                else ""
            )
            raise BroadcastError(
                f"{self.engine} at {self.url} is unreachable{since} "
                f"({self._down_reason or 'not connected yet'}); the message on {topic!r} "
                "was not sent to other nodes"
            )
        try:
            data = codec.encode(kind, node, topic, message)
        except EncodeError as exc:
            self.stats.failed += 1
            raise BroadcastError(f"the message on {topic!r} cannot be sent: {exc}") from None
        started = now() if PUBSUB_PUBLISH.on else 0.0
        try:
            await self._publish(channel, data)  # bounded by ``timeout`` in the subclass
        except TimeoutError:
            self._fail()
            raise BroadcastError(
                f"{self.engine} at {self.url} did not take the message on {topic!r} "
                f"within {self.timeout:.1f} s"
            ) from None
        except BroadcastError:
            self._fail()
            raise
        except Exception as exc:
            self._fail()
            raise BroadcastError(
                f"{self.engine} at {self.url} refused the message on {topic!r}: {_describe(exc)}"
            ) from exc
        self.stats.published += 1
        if started:
            PUBSUB_PUBLISH.emit(
                {"duration": now() - started, "bytes": len(data)},
                {"adapter": self, "engine": self.engine, "topic": topic},
            )

    def _fail(self) -> None:
        self.stats.failed += 1
        if self._down_since is not None:
            self._failed_in_outage += 1

    def _deliver(self, data: bytes) -> None:
        """One message from the engine: decode once, deliver once to local subscribers."""
        self.stats.received += 1
        try:
            decoded = codec.decode(data, self._node)
        except codec.MalformedMessage as exc:
            self._malformed(exc, data)
            return
        if decoded is None:
            return
        pubsub = self._pubsub
        if pubsub is None:
            return
        self.stats.delivered += 1
        try:
            pubsub.local_broadcast(decoded[0], decoded[1])
        except Exception:
            self.log.exception("delivering a message on %r from %s failed", decoded[0], self.engine)

    def _malformed(self, exc: Exception, data: bytes) -> None:
        self.stats.malformed += 1
        self._malformed_or_dropped(
            f"dropped a malformed message from {self.engine} "
            f"({len(data)} bytes, starting {bytes(data[:16])!r})",
            exc,
        )

    def _malformed_or_dropped(self, what: str, exc: Exception) -> None:
        """Log a dropped message: at most one line every 5 s, with a count of the others."""
        now = time.monotonic()
        if now - self._malformed_logged_at < 5.0:
            self._malformed_unlogged += 1
            return
        more = (
            f" ({self._malformed_unlogged} more dropped since the last report)"
            if self._malformed_unlogged
            else ""
        )
        self._malformed_logged_at = now
        self._malformed_unlogged = 0
        self.log.warning("%s: %s%s", what, exc, more)


async def within(future: asyncio.Future[_T], timeout: float) -> _T:
    """The result of ``future``; TimeoutError if it is not done within ``timeout`` seconds.

    Unlike ``asyncio.timeout`` (and ``wait_for`` from 3.12), this needs no
    current task: channel callbacks run eagerly, outside any task, until
    they first wait (:mod:`phoenix_channels._eager`), and they broadcast
    from there. ``future`` itself is left alone on a timeout.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object) -> None:
        if not waiter.done():
            waiter.set_result(None)

    future.add_done_callback(wake)
    handle = loop.call_later(timeout, wake, None)
    try:
        await waiter
    finally:
        handle.cancel()
        future.remove_done_callback(wake)
    if not future.done():
        raise TimeoutError
    return future.result()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
