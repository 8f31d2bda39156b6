"""The Tracker: a replicated registry of who is where, over any PubSub.

Track any key with a meta under any topic, on behalf of an *owner* (a
channel, an asyncio task, or any object); list a topic from this node's
replica; subscribe to the diffs. Every node runs a tracker with the same
name on the same PubSub; they replicate to each other (deltas on a
heartbeat, transfers to catch up) and drop the entries of a node that stops
answering. No central store: it works over the local, Redis and NATS
adapters alike. See :mod:`phoenix_channels.presence.shard` for the
protocol, :mod:`phoenix_channels.presence.state` for the CRDT, and
``docs/presence.md`` for a tour (service discovery included)::

    tracker = Tracker(pubsub, "services")
    await tracker.start()
    await tracker.track(task, "services", "billing", {"url": "http://10.0.0.5:8000"})
    tracker.list("services")   # [("billing", {"url": ..., "phx_ref": ...}), ...] from all nodes

An entry goes away when its owner untracks it, when the owner ends (a
channel stops for any reason, a task finishes), or when its node is down.

Costs: ``list(topic)`` reads the local replica and walks that topic's
entries only; ``track``/``untrack``/``update`` touch one entry and report
the diff at once, locally, and to the other nodes with the next heartbeat.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import math
import struct
import time
import weakref
import zlib
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Unpack

from ..errors import ConfigurationError, UsageError
from . import wire
from .shard import Outgoing, Shard, TrackerArgs, TrackerOptions, new_vsn
from .state import Entry

if TYPE_CHECKING:
    from ..pubsub import PubSub

__all__ = ["Diff", "Tracker"]

log = logging.getLogger("phoenix_channels.presence")

Key = str | int
Meta = dict[str, Any]
Presences = list[tuple[Key, Meta]]

_Entries = list[Entry]
_Metas = list[Meta]
_Tracked = list[tuple[str, Key, Meta]]
_Topics = list[str]
_Outgoings = list[Outgoing]

_MAX_META_DEPTH = 32
_OUTBOX_LIMIT = 1000
_STOP_TIMEOUT = 5.0  # seconds stop() waits for queued messages to go out


@dataclass(frozen=True, slots=True)
class Diff:
    """What changed in one topic: ``(key, meta)`` pairs that joined and that left.

    An update of a meta appears as a join of the new meta (``phx_ref_prev``
    names the old one) and a leave of the old one.
    """

    topic: str
    joins: Presences
    leaves: Presences


DiffCallback = Callable[[Diff], None]

# Trackers started on each PubSub: (tracker name, node name) must be unique.
_running: weakref.WeakKeyDictionary[PubSub, set[tuple[str, str]]] = weakref.WeakKeyDictionary()


def _check_meta(value: Any, path: str, depth: int = 0) -> None:
    """Metas go to clients as JSON and to other nodes through a codec: plain values only."""
    if depth > _MAX_META_DEPTH:
        raise UsageError(f"meta is nested deeper than {_MAX_META_DEPTH} levels at {path}")
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return
    if kind is float:
        if not math.isfinite(value):
            raise UsageError(f"meta value at {path} is {value!r}, which JSON cannot carry")
        return
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise UsageError(f"meta keys must be str, got {k!r} at {path}")
            _check_meta(v, f"{path}.{k}", depth + 1)
        return
    if kind is list:
        for i, v in enumerate(value):
            _check_meta(v, f"{path}[{i}]", depth + 1)
        return
    raise UsageError(
        f"meta value at {path} is a {kind.__name__}; metas hold JSON values only "
        "(dict with str keys, list, str, int, float, bool, None)"
    )


def _check_key(key: Any) -> Key:
    if type(key) is str or type(key) is int:
        return key
    raise UsageError(f"a presence key must be a str or an int, got {type(key).__name__}")


def _check_topic(topic: Any) -> str:
    if type(topic) is not str:
        raise UsageError(f"a topic must be a str, got {type(topic).__name__}")
    return topic


class Tracker:
    """A replica of the cluster's tracked presences, replicated over ``pubsub``.

    ``name`` names the tracker: nodes replicate with the trackers of the same
    name (the gossip topic is ``"phx_presence:<name>_shard0"``). ``node_name``
    is this replica's name, unique in the cluster; it defaults to the PubSub's
    node name (give each tracker its own to run several replicas over one
    PubSub in one process, as the tests do). The other keywords are the
    options declared (with their defaults and meanings) in
    :class:`~phoenix_channels.presence.TrackerOptions`: the timings, in
    seconds, and ``max_message_bytes``.
    """

    def __init__(
        self,
        pubsub: PubSub,
        name: str = "tracker",
        *,
        node_name: str | None = None,
        **options: Unpack[TrackerArgs],
    ) -> None:
        if type(name) is not str or not name:
            raise ConfigurationError(f"a tracker name must be a non-empty str, got {name!r}")
        self.options = TrackerOptions(**options)
        self.max_message_bytes = self.options.max_message_bytes
        node_name = pubsub.node_name if node_name is None else node_name
        if type(node_name) is not str or not node_name:
            raise ConfigurationError(f"node_name must be a non-empty str, got {node_name!r}")
        self.pubsub = pubsub
        self.name = name
        self.node_name = node_name
        self.topic = f"phx_presence:{name}_shard0"
        self._shard = Shard(node_name, new_vsn(), pubsub.node_name, self._report, self.options)
        self._subscribers: list[DiffCallback] = []
        self._topic_subscribers: dict[str, list[DiffCallback]] = {}
        # Owners are objects here; entries carry a small int per owner instead.
        self._owner_ids: dict[Hashable, int] = {}
        self._ended_at_once = False
        self._next_owner = itertools.count(1)
        self._outbox: deque[Outgoing] = deque()
        self._wakeup: asyncio.Event | None = None
        self._sender: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._ref_seed = zlib.crc32(f"{node_name}/{name}".encode()) & 0xFFFF
        self._refs = itertools.count()
        self._packs = itertools.count(1)
        self._reassembler = wire.Reassembler()
        self.dropped_messages = 0
        self.bad_messages = 0

    # -- lifecycle ---------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started

    async def start(self) -> None:
        """Join the cluster: subscribe to the gossip topic and start heartbeating.

        Starts the PubSub too if nothing has yet (an endpoint starts its own
        first); stopping the tracker leaves the PubSub running.
        """
        if self._started:
            return
        await self.pubsub.start()
        names = _running.setdefault(self.pubsub, set())
        if (self.name, self.node_name) in names:
            raise ConfigurationError(
                f"a tracker named {self.name!r} already runs on this PubSub as node "
                f"{self.node_name!r}; give each one its own name (or node_name)"
            )
        names.add((self.name, self.node_name))
        self._started = True
        loop = self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self.pubsub.subscribe(self.topic, self._on_message)
        await self.pubsub.prepare(self.topic)
        self._sender = loop.create_task(self._send_loop(), name=f"tracker {self.name} sender")
        self._timer = loop.call_later(self._shard.first_delay(), self._tick)

    async def stop(self, *, permdown: bool | None = None) -> None:
        """Leave the cluster: send the changes not gossiped yet, then stop heartbeating.

        With ``permdown`` (default: the ``permdown_on_shutdown`` option) peers
        are also told to drop this node's entries at once; otherwise they
        keep them until ``down_period`` passes without a heartbeat (so a node
        restarting quickly, or cut off for a moment, causes no churn).
        """
        if not self._started:
            return
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pubsub.unsubscribe(self.topic, self._on_message)
        _running.get(self.pubsub, set()).discard((self.name, self.node_name))
        last = self._shard.flush()
        if self.options.permdown_on_shutdown if permdown is None else permdown:
            last.append(self._shard.goodbye())
        sender, self._sender = self._sender, None
        if sender is not None:
            # Let it finish what is queued (a message cut short would be lost), bounded.
            assert self._wakeup is not None
            self._wakeup.set()
            try:
                await asyncio.wait_for(sender, _STOP_TIMEOUT)
            except (TimeoutError, asyncio.CancelledError):
                log.warning(
                    "tracker %s: stopped with %d messages unsent", self.name, len(self._outbox)
                )
        self._outbox.clear()
        for target, message in last:
            await self._send(target, message)

    async def graceful_permdown(self) -> None:
        """Stop, and make every peer drop this node's entries at once."""
        await self.stop(permdown=True)

    # -- local changes -------------------------------------------------------------

    def _owner_id(self, owner: Hashable, create: bool) -> int | None:
        try:
            oid = self._owner_ids.get(owner)
        except TypeError:
            raise UsageError(f"an owner must be hashable, got {type(owner).__name__}") from None
        if oid is None and create:
            self._watch(owner)
            oid = self._owner_ids[owner] = next(self._next_owner)
        return oid

    @staticmethod
    def _watchable(owner: Hashable) -> bool:
        return callable(getattr(owner, "on_stop", None)) or isinstance(owner, asyncio.Future)

    def _watch(self, owner: Hashable) -> None:
        """Untrack everything of ``owner`` when it ends, if it can say so.

        A channel (anything with ``on_stop(callback)`` calling ``callback(owner)``
        when it ends) or an asyncio task/future. One bound method, no closure,
        per watched owner: it stays known until it ends.
        """
        on_stop = getattr(owner, "on_stop", None)
        if callable(on_stop):
            self._ended_at_once = False
            on_stop(self._owner_ended)
            if self._ended_at_once:  # on_stop calls back at once for what has ended
                raise UsageError(f"{owner!r} has already stopped; it cannot be tracked")
        elif isinstance(owner, asyncio.Future):
            if owner.done():
                raise UsageError(f"{owner!r} is done; it cannot be tracked")
            owner.add_done_callback(self._owner_ended)

    def _owner_ended(self, owner: Any) -> None:
        oid = self._owner_ids.pop(owner, None)
        if oid is None:
            self._ended_at_once = True
            return
        self._shard.untrack_all(oid)

    def _release(self, owner: Hashable, oid: int) -> None:
        """Forget an owner nobody watches once it has no entries (no leak on churn)."""
        if not self._shard.state.owned_by(oid) and not self._watchable(owner):
            self._owner_ids.pop(owner, None)

    def _new_ref(self) -> str:
        """A unique ``phx_ref``: 12 bytes (time, node hash, counter) in URL-safe base64."""
        raw = struct.pack(">QHH", time.time_ns(), self._ref_seed, next(self._refs) & 0xFFFF)
        return base64.urlsafe_b64encode(raw).decode()

    async def track(self, owner: Hashable, topic: str, key: Key, meta: Meta | None = None) -> str:
        """Track ``key`` with ``meta`` under ``topic`` for ``owner``; returns the ``phx_ref``.

        The meta is copied and gets a fresh ``phx_ref``. Raises
        :class:`AlreadyTrackedError` if this owner already tracks ``key``
        under ``topic`` (use :meth:`update`).
        """
        return self.track_nowait(owner, topic, key, meta)

    def track_nowait(self, owner: Hashable, topic: str, key: Key, meta: Meta | None = None) -> str:
        """:meth:`track`, callable from synchronous code."""
        topic = _check_topic(topic)
        key = _check_key(key)
        new_meta = self._new_meta(meta)
        oid = self._owner_id(owner, create=True)
        assert oid is not None
        try:
            entry = self._shard.track(oid, topic, key, new_meta)
        finally:
            self._release(owner, oid)
        return entry.meta["phx_ref"]  # type: ignore[no-any-return]

    def _new_meta(self, meta: Meta | None, prev: str | None = None) -> Meta:
        if meta is None:
            meta = {}
        if type(meta) is not dict:
            raise UsageError(f"a meta must be a dict, got {type(meta).__name__}")
        _check_meta(meta, "meta")
        new = dict(meta)
        new["phx_ref"] = self._new_ref()
        if prev is not None:
            new["phx_ref_prev"] = prev
        else:
            new.pop("phx_ref_prev", None)
        return new

    async def untrack(
        self, owner: Hashable, topic: str | None = None, key: Key | None = None
    ) -> None:
        """Stop tracking ``key`` under ``topic`` for ``owner`` (every entry of the owner
        when ``topic`` is None). Untracking what is not tracked does nothing."""
        self.untrack_nowait(owner, topic, key)

    def untrack_nowait(
        self, owner: Hashable, topic: str | None = None, key: Key | None = None
    ) -> None:
        """:meth:`untrack`, callable from synchronous code."""
        oid = self._owner_id(owner, create=False)
        if oid is None:
            return
        if topic is None:
            self._shard.untrack_all(oid)
        else:
            if key is None:
                raise UsageError("untrack(owner, topic, key): give the key too, or no topic")
            self._shard.untrack(oid, _check_topic(topic), _check_key(key))
        self._release(owner, oid)

    async def update(
        self, owner: Hashable, topic: str, key: Key, meta: Meta | Callable[[Meta], Meta]
    ) -> str:
        """Replace the meta of a tracked ``key`` (not merged); returns the new ``phx_ref``.

        ``meta`` may be a function of the current meta (which includes its
        ``phx_ref``). The new meta gets ``phx_ref_prev`` = the old ``phx_ref``.
        Raises :class:`NotTrackedError` if nothing is tracked there.
        """
        return self.update_nowait(owner, topic, key, meta)

    def update_nowait(
        self, owner: Hashable, topic: str, key: Key, meta: Meta | Callable[[Meta], Meta]
    ) -> str:
        """:meth:`update`, callable from synchronous code."""
        topic = _check_topic(topic)
        key = _check_key(key)
        oid = self._owner_id(owner, create=False)
        if oid is None:
            oid = -1  # never used: current() below raises NotTrackedError
        old = self._shard.current(oid, topic, key)
        if callable(meta):
            meta = meta(dict(old.meta))
        new_meta = self._new_meta(meta, old.meta["phx_ref"])
        entry = self._shard.update(oid, topic, key, new_meta)
        return entry.meta["phx_ref"]  # type: ignore[no-any-return]

    # -- queries ------------------------------------------------------------------------

    def list(self, topic: str) -> Presences:
        """``(key, meta)`` of every entry under ``topic`` on every up node; local, O(entries)."""
        return [(e.key, e.meta) for e in self._shard.state.get_by_topic(topic)]

    def get_by_key(self, topic: str, key: Key) -> _Metas:
        """The metas of ``key`` under ``topic`` (one per owner, on any node)."""
        return [e.meta for e in self._shard.state.get_by_topic(topic) if e.key == key]

    def count(self, topic: str) -> int:
        """How many entries ``topic`` has (visible ones)."""
        return self._shard.state.count(topic)

    def tracked(self, owner: Hashable) -> _Tracked:
        """``(topic, key, meta)`` of what ``owner`` tracks on this node."""
        oid = self._owner_id(owner, create=False)
        if oid is None:
            return []
        return [(e.topic, e.key, e.meta) for e in self._shard.state.owned_by(oid)]

    def topics(self) -> _Topics:
        """The topics with entries in this replica."""
        return [*self._shard.state.topics]

    def peers(self) -> dict[str, str]:
        """Other nodes heard from: name -> ``"up"`` or ``"down"``."""
        return self._shard.peer_status()

    def stats(self) -> dict[str, Any]:
        """Counts for monitoring: entries, topics, peers, owners, queued messages, drops."""
        stats = self._shard.stats()
        stats.update(
            owners=len(self._owner_ids),
            outbox=len(self._outbox),
            dropped_messages=self.dropped_messages,
            bad_messages=self.bad_messages,
            incomplete_messages_dropped=self._reassembler.dropped,
            subscribers=len(self._subscribers)
            + sum(len(v) for v in self._topic_subscribers.values()),
        )
        return stats

    # -- diffs ----------------------------------------------------------------------------

    def subscribe(self, callback: DiffCallback, topic: str | None = None) -> Callable[[], None]:
        """Call ``callback(diff)`` for every change (of ``topic`` only, if given).

        Local changes are reported at once, inside the call that made them;
        changes from other nodes when their heartbeat is merged. Returns a
        function that unsubscribes. An exception in a callback is logged.
        """
        if topic is None:
            self._subscribers.append(callback)
            box = self._subscribers
        else:
            box = self._topic_subscribers.setdefault(_check_topic(topic), [])
            box.append(callback)

        def unsubscribe() -> None:
            if callback in box:
                box.remove(callback)
            if topic is not None and not box:
                self._topic_subscribers.pop(topic, None)

        return unsubscribe

    def _report(self, joins: _Entries, leaves: _Entries) -> None:
        if not self._subscribers and not self._topic_subscribers:
            return
        by_topic: dict[str, tuple[Presences, Presences]] = {}
        for e in joins:
            by_topic.setdefault(e.topic, ([], []))[0].append((e.key, e.meta))
        for e in leaves:
            by_topic.setdefault(e.topic, ([], []))[1].append((e.key, e.meta))
        for topic, (j, left) in by_topic.items():
            diff = Diff(topic, j, left)
            for callback in self._callbacks(topic):
                try:
                    callback(diff)
                except Exception:
                    log.exception("tracker %s: diff callback %r raised", self.name, callback)

    def _callbacks(self, topic: str) -> Iterable[DiffCallback]:
        yield from tuple(self._subscribers)
        yield from tuple(self._topic_subscribers.get(topic, ()))

    # -- replication I/O -----------------------------------------------------------------

    def _tick(self) -> None:
        loop = self._loop
        if not self._started or loop is None:
            return
        try:
            self._queue(self._shard.tick(loop.time()))
        except Exception:
            log.exception("tracker %s: heartbeat failed", self.name)
        self._timer = loop.call_later(self.options.broadcast_period, self._tick)

    def _on_message(self, message: Any) -> None:
        """A gossip message from PubSub (runs inside the publisher's dispatch: never raise)."""
        if not self._started or not wire.is_tracker_message(message):
            return
        try:
            decoded = wire.decode(message)
            if type(decoded) is wire.Chunk:
                if decoded.to is not None and decoded.to != self.node_name:
                    return
                whole = self._reassembler.add(decoded)
                if whole is None:
                    return
                decoded = wire.decode(whole)
        except wire.ReplicationError as exc:
            self.bad_messages += 1
            log.warning("tracker %s: dropped a message: %s", self.name, exc)
            return
        try:
            assert self._loop is not None
            self._queue(self._shard.handle(decoded, self._loop.time()))
        except Exception:
            self.bad_messages += 1
            log.exception("tracker %s: could not apply %s", self.name, type(decoded).__name__)

    def _queue(self, outgoing: _Outgoings) -> None:
        if not outgoing:
            return
        outbox = self._outbox
        for item in outgoing:
            if len(outbox) >= _OUTBOX_LIMIT:
                # The network cannot keep up: drop the oldest. Lost deltas show up as
                # gaps in the peers' clocks, which transfers repair.
                outbox.popleft()
                self.dropped_messages += 1
            outbox.append(item)
        if self._wakeup is not None:
            self._wakeup.set()

    async def _send_loop(self) -> None:
        """Send what is queued, in order; ends once stopped and the queue is empty."""
        assert self._wakeup is not None
        outbox = self._outbox
        while True:
            while outbox:
                target, message = outbox.popleft()
                await self._send(target, message)
            if not self._started:
                return
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _send(self, target: str | None, message: dict[str, Any]) -> None:
        parts = [message]
        if wire.carries_state(message):
            parts = wire.pack(
                message, self._shard.replica_id, next(self._packs), self.max_message_bytes
            )
        try:
            for part in parts:
                if target is None:
                    await self.pubsub.broadcast(self.topic, part, from_=self._on_message)
                else:
                    await self.pubsub.direct_broadcast(target, self.topic, part)
        except Exception as exc:
            self.dropped_messages += 1
            log.warning("tracker %s: could not send a %s: %s", self.name, message.get("type"), exc)

    def __repr__(self) -> str:
        state = "started" if self._started else "stopped"
        return f"<Tracker {self.name!r} node={self.node_name!r} {state}>"
