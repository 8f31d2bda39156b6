"""The Redis Cluster adapter: broadcasts between nodes over sharded pub/sub.

``PubSub.redis_cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])``
(or ``PubSub.redis("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")``)
builds it. The URLs are seeds: any reachable one gives the slot map
(``CLUSTER SLOTS``), and the adapter talks to every master of the map.

Redis 7's sharded pub/sub keeps a channel on the shard that owns its hash
slot (CRC16 of the name, or of its ``{hash tag}``, modulo 16384), so a
broadcast costs one shard instead of crossing the whole cluster bus as a
classic ``PUBLISH`` does. The channel names are those of the single-Redis
adapter (``<prefix>:t:<topic>``, ``<prefix>:s:<shard>``,
``<prefix>:n:<node>``), so topics spread over the slots.

Per master this node holds:

* a **subscriber** connection, on which it ``SSUBSCRIBE``\\s the channels
  whose slots that master owns (one command per slot: Redis refuses a
  ``SSUBSCRIBE`` whose channels span slots), and receives ``smessage``
  pushes;
* a **publisher** connection for ``SPUBLISH`` commands, pipelined.

Following the cluster:

* **Slot moves.** ``SPUBLISH``/``SSUBSCRIBE`` answered with ``-MOVED`` are
  retried at once on the owner the answer names (the slot map is updated
  from it: a re-read could reach a node not yet told of the move). When a slot
  migrates away, its old master sends an ``sunsubscribe`` push for each of
  its channels; the adapter marks them unconfirmed, re-reads the map and
  subscribes them again on the new owner, without dropping the link (a
  manual ``CLUSTER FAILOVER`` looks the same: the demoted master drops the
  channels of its slots).
* **A master's death.** The link to the cluster is one unit: when a connection to
  any master breaks, the node logs the outage once, and the supervisor of
  :mod:`._cluster` reconnects with backoff: it re-reads the slot map from
  any reachable node (seeds and every node seen so far), connects to every
  master of the new map (the promoted replica included) and resubscribes.
  What the gap cost is logged once when the link is back, exactly as with
  one Redis. Broadcasts on every shard fail with ``BroadcastError`` during
  the gap (at most ``cluster-node-timeout`` plus the failover election).

Connection code and the RESP parser are :mod:`.redis`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Unpack
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigurationError
from ._cluster import EngineAdapter, EngineRefused, within
from .options import EngineArgs, EngineOptions
from .redis import RedisConnectionError, RedisError, RespConnection, _command, parse_redis_url

__all__ = ["RedisClusterAdapter", "key_slot", "parse_cluster_urls"]

log = logging.getLogger("phoenix_channels.pubsub.redis_cluster")

SLOTS = 16384
_MOVED_RETRIES = 3


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def _crc16(data: bytes) -> int:
    """CRC16-CCITT (XModem), the checksum Redis Cluster hashes keys with."""
    crc = 0
    table = _CRC16
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ byte) & 0xFF]
    return crc


def key_slot(name: str | bytes) -> int:
    """The hash slot of a key or channel name, as Redis Cluster computes it.

    The first ``{...}`` with something inside is the hash tag: only it is hashed.
    """
    data = name.encode("utf-8", "surrogatepass") if isinstance(name, str) else name
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return _crc16(data) % SLOTS


def parse_cluster_urls(urls: str | Sequence[str]) -> list[str]:
    """Seed URLs from a list, or from ``redis+cluster://h1:p1,h2:p2`` / ``a,b`` strings."""
    if isinstance(urls, str):
        text = urls
        scheme = "redis"
        for prefix, plain in (("redis+cluster://", "redis"), ("rediss+cluster://", "rediss")):
            if text.startswith(prefix):
                scheme, text = plain, text[len(prefix) :]
                break
        parts = [part.strip() for part in text.split(",") if part.strip()]
        seeds = []
        auth = ""
        for part in parts:
            if "://" in part:
                seeds.append(part)
                continue
            if "@" in part:
                auth, part = part.rsplit("@", 1)
                auth += "@"
            seeds.append(f"{scheme}://{auth}{part}")
    elif isinstance(urls, Sequence) and all(isinstance(u, str) for u in urls):
        seeds = list(urls)
    else:
        raise ConfigurationError(
            f"Redis Cluster seeds must be a list of redis:// URLs, got {urls!r}"
        )
    if not seeds:
        raise ConfigurationError(
            "give at least one Redis Cluster node: PubSub.redis_cluster(['redis://host:7000'])"
        )
    for seed in seeds:
        target = parse_redis_url(seed)
        if target["path"] is not None:
            raise ConfigurationError(
                f"Redis Cluster nodes are reached over TCP, not a unix socket: {seed!r}"
            )
    return seeds


class _ShardLink(RespConnection):
    """A subscriber connection to one master: ``smessage`` pushes and unsolicited ``sunsubscribe``.

    Replies to our own ``SUNSUBSCRIBE`` are pushes too; they are not tracked
    (nothing waits for them), so every ``sunsubscribe`` is taken here: for a
    channel we are leaving it is the acknowledgement, for any other it says
    the slot left this master (``on_moved``).
    """

    on_moved: Callable[[bytes], None] | None = None

    def __init__(
        self,
        on_message: Callable[[bytes, bytes], None] | None = None,
        on_lost: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        super().__init__(on_message, on_lost)
        self.leaving: dict[bytes, int] = {}

    def _dispatch(self, value: Any) -> None:
        if type(value) is list and len(value) == 3:
            kind = value[0]
            if kind == b"smessage":
                if self._on_message is not None:
                    self._on_message(value[1], value[2])
                return
            if kind == b"sunsubscribe":
                channel = value[1]
                count = self.leaving.get(channel)
                if count is not None:
                    if count > 1:
                        self.leaving[channel] = count - 1
                    else:
                        del self.leaving[channel]
                elif self.on_moved is not None:
                    self.on_moved(channel)
                return
        super()._dispatch(value)

    def sunsubscribe(self, channels: list[str]) -> None:
        """Send SUNSUBSCRIBE for ``channels`` (all of one slot); the acks are pushes."""
        transport = self._transport
        if self.closed or transport is None:
            raise RedisConnectionError(f"connection closed ({self._closed})")
        for channel in channels:
            key = channel.encode("utf-8", "surrogatepass")
            self.leaving[key] = self.leaving.get(key, 0) + 1
        transport.write(_command(("SUNSUBSCRIBE", *channels)))


def _moved_to(exc: RedisError) -> str | None:
    """``host:port`` of a ``MOVED <slot> <host>:<port>`` error, else None."""
    text = str(exc)
    if text.startswith("MOVED "):
        parts = text.split()
        if len(parts) == 3:
            return parts[2]
    return None


class RedisClusterAdapter(EngineAdapter):
    """Carries broadcasts between nodes over Redis Cluster sharded pub/sub (module docstring).

    ``seeds``: the URLs of some nodes of the cluster (any one reachable is
    enough; credentials and TLS of the first apply to every node). Options
    are those of :class:`~phoenix_channels.pubsub.redis.RedisAdapter`.
    """

    engine = "redis-cluster"
    log: ClassVar[logging.Logger] = log

    def __init__(
        self,
        seeds: str | Sequence[str] = ("redis://127.0.0.1:7000",),
        **options: Unpack[EngineArgs],
    ) -> None:
        self.seeds = parse_cluster_urls(seeds)
        super().__init__(_display(self.seeds), EngineOptions(**options))
        first = urlsplit(self.seeds[0])
        self._scheme = first.scheme
        self._auth = first.netloc.rsplit("@", 1)[0] + "@" if "@" in first.netloc else ""
        self._known: list[str] = [_address(seed) for seed in self.seeds]
        self._slots: list[str | None] = [None] * SLOTS  # slot -> "host:port" of its master
        self._subs: dict[str, _ShardLink] = {}
        self._pubs: dict[str, RespConnection] = {}
        self._refresh_needed = False
        self._refreshing: asyncio.Future[None] | None = None
        self._checked_name = False
        self._following: asyncio.Task[None] | None = None
        self._moved_from: dict[str, str] = {}  # channel -> the master that dropped it
        self.slot_moves = 0
        """Channels moved to another master while the link stayed up (for tests and monitoring)."""

    # -- naming ----------------------------------------------------------------------------

    def _topic_channel(self, topic: str) -> str:
        return f"{self.prefix}:t:{topic}"

    def _shard_channel(self, shard: int) -> str:
        return f"{self.prefix}:s:{shard}"

    def _node_channel(self, node_name: str) -> str:
        return f"{self.prefix}:n:{node_name}"

    def master_for(self, channel: str) -> str | None:
        """``host:port`` of the master owning ``channel``'s slot in the current map."""
        return self._slots[key_slot(channel)]

    def masters(self) -> set[str]:
        """The masters of the current slot map."""
        return {addr for addr in self._slots if addr is not None}

    # -- the slot map -----------------------------------------------------------------------

    def _url(self, address: str) -> str:
        return urlunsplit((self._scheme, self._auth + address, "", "", ""))

    async def _read_slots(self) -> None:
        """Re-read the slot map from the first node that answers (masters, then seeds).

        Runs in a task (the supervisor's, or one of its own from ``_publish``).
        """
        candidates = list(dict.fromkeys([*self.masters(), *self._known]))
        errors = []
        for address in candidates:
            conn = self._pubs.get(address)
            temporary = conn is None or conn.closed
            try:
                async with asyncio.timeout(self.timeout):
                    if temporary:
                        conn = await RespConnection.open(self._url(address))
                    assert conn is not None
                    reply = await conn.command("CLUSTER", "SLOTS")
            except (OSError, RedisError, TimeoutError) as exc:
                errors.append(f"{address}: {exc or type(exc).__name__}")
                continue
            finally:
                if temporary and conn is not None:
                    conn.close()
            slots: list[str | None] = [None] * SLOTS
            seen = []
            host_default = address.rsplit(":", 1)[0]
            for entry in reply:
                start, end, master = entry[0], entry[1], entry[2]
                host = master[0].decode() if master[0] else host_default
                owner = f"{host}:{master[1]}"
                slots[start : end + 1] = [owner] * (end - start + 1)
                for node in entry[2:]:
                    host = node[0].decode() if node[0] else host_default
                    seen.append(f"{host}:{node[1]}")
            if None in slots:
                missing = slots.index(None)
                errors.append(f"{address}: slot {missing} has no master (cluster not ready)")
                continue
            self._slots = slots
            self._known = list(dict.fromkeys([*self._known, *seen]))
            self._refresh_needed = False
            return
        raise RedisConnectionError(
            "no Redis Cluster node gave a complete slot map: " + "; ".join(errors)
        )

    async def _refresh(self) -> None:
        """Re-read the map once for everyone waiting on it."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        loop = asyncio.get_running_loop()
        self._refreshing = loop.create_future()
        try:
            await self._read_slots()
            self._refreshing.set_result(None)
        except BaseException as exc:
            self._refreshing.set_exception(exc)
            self._refreshing.exception()  # retrieved: waiters re-raise their own copy
            raise
        finally:
            self._refreshing = None

    async def _sub_link(self, address: str) -> _ShardLink:
        link = self._subs.get(address)
        if link is None or link.closed:
            opened = await _ShardLink.open(
                self._url(address),
                name=f"phx-sub-{self.node_name}",
                on_message=self._on_message,
                on_lost=self._lost_link,
            )
            assert isinstance(opened, _ShardLink)
            opened.on_moved = lambda channel, a=address: self._moved(channel, a)
            link = self._subs[address] = opened
        return link

    async def _pub_link(self, address: str) -> RespConnection:
        conn = self._pubs.get(address)
        if conn is None or conn.closed:
            conn = self._pubs[address] = await RespConnection.open(
                self._url(address), name=f"phx-pub-{self.node_name}", on_lost=self._lost_link
            )
        return conn

    # -- EngineAdapter ------------------------------------------------------------------------

    async def _open(self) -> None:
        await self._read_slots()
        masters = sorted(self.masters())
        # Every master up front: while one is unreachable (a failover in progress)
        # the link is down as a whole, and the gap is logged once.
        await asyncio.gather(*(self._pub_link(a) for a in masters))
        await asyncio.gather(*(self._sub_link(a) for a in masters))
        node_channel = self._node_channel(self.node_name)
        if not self._checked_name:
            owner = self.master_for(node_channel)
            assert owner is not None
            _, count = await self._pubs[owner].command("PUBSUB", "SHARDNUMSUB", node_channel)
            if count:
                raise ConfigurationError(
                    f"node name {self.node_name!r} is already used by another node on this "
                    f"Redis Cluster ({count} subscriber(s) on {node_channel!r}); every node "
                    "needs a unique node_name"
                )
            self._checked_name = True
        await self._ssubscribe([node_channel])

    def _lost_link(self, exc: BaseException | None) -> None:
        self._connection_lost(exc)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        self._deliver(data)

    def _moved(self, channel: bytes, address: str) -> None:
        """A master dropped our subscription: its slot is moving. Subscribe it again elsewhere."""
        name = channel.decode("utf-8", "surrogatepass")
        self.slot_moves += 1
        self._refresh_needed = True
        self._moved_from[name] = address
        if name == self._node_channel(self.node_name):
            # Not in the registry's bookkeeping: subscribed again here, on the new owner.
            if self._following is None or self._following.done():
                self._following = asyncio.get_running_loop().create_task(self._follow_node())
            return
        self._active.discard(name)
        if name in self._wanted:
            self._dirty.add(name)
            if self._kick is not None:
                self._kick.set()

    async def _follow_node(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self._ssubscribe([self._node_channel(self.node_name)])
        except Exception as exc:  # the link restarts: a fresh map, every subscription again
            self._connection_lost(exc)

    async def _close(self) -> None:
        following, self._following = self._following, None
        if following is not None and not following.done():
            following.cancel()
        for conn in (*self._subs.values(), *self._pubs.values()):
            conn._on_lost = None  # an old link's end is not news
            conn.close()
        self._subs = {}
        self._pubs = {}
        self._moved_from.clear()

    async def _ssubscribe(self, channels: list[str]) -> None:
        """SSUBSCRIBE on each channel's master, one command per slot; follows MOVED."""
        todo = channels
        for attempt in range(_MOVED_RETRIES + 1):
            if self._refresh_needed:
                await self._refresh()
            # A master that dropped a channel no longer owns it, whatever a node that
            # has not heard of the move yet says: ask again, shortly (bounded by the
            # caller's timeout).
            while any(self._moved_from.get(ch) == self._slots[key_slot(ch)] for ch in todo):
                await asyncio.sleep(0.05)
                await self._refresh()
            for channel in todo:
                self._moved_from.pop(channel, None)
            by_slot: dict[int, list[str]] = {}
            for channel in todo:
                by_slot.setdefault(key_slot(channel), []).append(channel)
            groups = list(by_slot.values())
            links = [await self._sub_link(self._slots[key_slot(g[0])] or "") for g in groups]
            results = await asyncio.gather(
                *(
                    link.command("SSUBSCRIBE", *group, replies=len(group))
                    for link, group in zip(links, groups, strict=True)
                ),
                return_exceptions=True,
            )
            todo = []
            for group, result in zip(groups, results, strict=True):
                if isinstance(result, RedisConnectionError):
                    raise result
                if isinstance(result, RedisError):
                    target = _moved_to(result)
                    if target is not None and attempt < _MOVED_RETRIES:
                        # The node that answered knows the slot's owner: go there now
                        # (a map re-read could come from a node not yet told of it).
                        self._slots[key_slot(group[0])] = target
                        todo.extend(group)
                        continue
                    raise EngineRefused(str(result))
                if isinstance(result, BaseException):
                    raise result
            if not todo:
                return

    async def _subscribe(self, channels: list[str]) -> None:
        await self._ssubscribe(channels)

    async def _unsubscribe(self, channels: list[str]) -> None:
        by_slot: dict[int, list[str]] = {}
        for channel in channels:
            by_slot.setdefault(key_slot(channel), []).append(channel)
        for slot, group in by_slot.items():
            address = self._slots[slot]
            link = self._subs.get(address or "")
            if link is not None and not link.closed:
                link.sunsubscribe(group)

    async def _publish(self, channel: str, data: bytes) -> None:
        for attempt in range(_MOVED_RETRIES + 1):
            if self._refresh_needed:
                await within(asyncio.ensure_future(self._refresh()), self.timeout)
            address = self._slots[key_slot(channel)]
            pub = self._pubs.get(address or "")
            if pub is None or pub.closed:
                if address is None:
                    raise RedisConnectionError(f"no master owns the slot of {channel!r}")
                pub = await within(asyncio.ensure_future(self._pub_link(address)), self.timeout)
            await pub.drained(self.timeout)
            try:
                await within(pub.command("SPUBLISH", channel, data), self.timeout)
                return
            except RedisConnectionError:
                raise
            except RedisError as exc:
                target = _moved_to(exc)
                if target is None or attempt == _MOVED_RETRIES:
                    raise
                self._slots[key_slot(channel)] = target  # the answer names the owner

    async def _ping(self) -> None:
        conns = [*self._subs.values(), *self._pubs.values()]
        await asyncio.gather(*(conn.command("PING") for conn in conns))
        if self._refresh_needed:
            await self._refresh()


def _display(seeds: list[str]) -> str:
    """The seeds as one ``redis+cluster://`` URL for logs and messages (no password)."""
    first = urlsplit(seeds[0])
    more = f" (+{len(seeds) - 1} more seeds)" if len(seeds) > 1 else ""
    return f"{first.scheme}+cluster://{first.hostname}:{first.port or 6379}{more}"


def _address(url: str) -> str:
    target = parse_redis_url(url)
    return f"{target['host']}:{target['port']}"
