"""Presence for channels: who is in each topic, in the payloads the Phoenix JS client reads.

A :class:`Presence` binds a :class:`~phoenix_channels.presence.Tracker` to an
endpoint. A channel tracks itself after its join and pushes the current
list; every change (a join, a leave, an update, on this node or any other)
is then broadcast to the topic's subscribers on each node as
``presence_diff``, which the JS client's ``Presence`` helper applies::

    presence = Presence(endpoint)

    class RoomChannel(Channel):
        async def join(self, topic, payload):
            self.send("after_join")

        async def handle_info(self, message):
            if message == "after_join":
                await presence.track(self, self.assigns["user_id"], {"online_at": now()})
                await self.push("presence_state", await presence.list(self.topic))

Payloads, as Phoenix sends them: ``presence_state`` is ``{key: {"metas":
[meta, ...]}}`` with one meta per tracked channel of that key (a user with
two tabs has two metas), each meta carrying its ``phx_ref``; a
``presence_diff`` is ``{"joins": {...}, "leaves": {...}}`` grouped the same
way; an update is the key in both, the new meta carrying ``phx_ref_prev``.
Keys are strings in every payload (an int key ``1`` lists as ``"1"``).

Override :meth:`Presence.fetch` to enrich what is listed and broadcast (load
the users of the listed keys in one query, say). Diffs then go through
``fetch`` one after the other, in order; while a ``fetch`` runs, the diffs
that arrive for a topic are combined into one.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Unpack

from ..channel import Channel
from ..errors import ConfigurationError, UsageError
from ..telemetry import PRESENCE_DIFF, presence_diff
from .batch import CountBroadcaster, DiffBatcher, merge_diffs
from .shard import TrackerArgs
from .tracker import Diff, Key, Meta, Presences, Tracker

if TYPE_CHECKING:
    from ..interfaces import EndpointAPI as Endpoint

__all__ = ["Presence", "group"]

log = logging.getLogger("phoenix_channels.presence")

Grouped = dict[str, dict[str, Any]]


def group(presences: Presences, copy: bool = False) -> Grouped:
    """``(key, meta)`` pairs to the Phoenix shape ``{str(key): {"metas": [meta, ...]}}``.

    The metas are the tracker's own (read-only) unless ``copy``: what is handed
    to a user's ``fetch`` is copied, so enriching a meta in place cannot change
    the replica.
    """
    grouped: Grouped = {}
    for key, meta in presences:
        name = key if type(key) is str else str(key)
        if copy:
            meta = dict(meta)
        entry = grouped.get(name)
        if entry is None:
            grouped[name] = {"metas": [meta]}
        else:
            entry["metas"].append(meta)
    return grouped


def _coalesce(diffs: list[Diff]) -> tuple[Presences, Presences]:
    """Several diffs of one topic as one: each meta's last operation (:func:`.batch.merge_diffs`).

    Not a net count: a meta that joined and left is sent as a leave, since a
    client whose ``presence_state`` was taken in between has it.
    """
    return merge_diffs(diffs)


class Presence:
    """Presence tracking for the channels of ``endpoint``, replicated across its cluster.

    ``name`` names the tracker (all nodes use the same); ``node_name`` and
    the tracker's options (``broadcast_period``, ``down_period``, ...,
    declared in :class:`~phoenix_channels.presence.TrackerOptions`) go to
    the :class:`~phoenix_channels.presence.Tracker`.
    The tracker starts and stops with the endpoint. ``max_pending_diffs``
    bounds the diffs queued while a custom :meth:`fetch` runs: beyond it, the
    queued diffs of each topic are combined into one (at most one per topic).

    Big rooms (``docs/presence.md``): ``diff_interval`` (seconds, default 0:
    each diff at once, as Phoenix) merges a topic's diffs over the interval
    into one ``presence_diff``; override :meth:`diff_interval_for` to choose
    per topic. Topics for which :meth:`counts_only` is true get
    ``presence_count`` (at most once per ``count_interval``) instead of diffs.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        name: str = "presence",
        *,
        node_name: str | None = None,
        max_pending_diffs: int = 10_000,
        diff_interval: float = 0.0,
        count_interval: float = 1.0,
        **options: Unpack[TrackerArgs],
    ) -> None:
        if type(max_pending_diffs) is not int or max_pending_diffs < 1:
            raise ConfigurationError("max_pending_diffs must be a positive int")
        self._init_big_rooms(diff_interval, count_interval)
        self.max_pending_diffs = max_pending_diffs
        self.endpoint = endpoint
        self.tracker = Tracker(endpoint.pubsub, name, node_name=node_name, **options)
        self._custom_fetch = type(self).fetch is not Presence.fetch
        self._pending: deque[Diff] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._stopped = False
        self.tracker.subscribe(self._on_diff)
        add_service = getattr(endpoint, "add_service", None)
        if add_service is not None:
            add_service(self)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the tracker (the endpoint does it when it starts)."""
        self._stopped = False
        await self.tracker.start()

    async def stop(self) -> None:
        """Stop the tracker (the endpoint does it after draining its connections)."""
        self._stopped = True
        self._batcher.flush_all()
        self._counts.close()
        worker = self._worker
        if worker is not None and not worker.done():
            try:
                await asyncio.wait_for(asyncio.shield(worker), 5.0)
            except (TimeoutError, asyncio.CancelledError):
                worker.cancel()
        await self.tracker.stop()

    async def _ready(self) -> None:
        # Used before the endpoint started it (a Presence made after startup):
        # start now. Never after a stop: a channel still running during
        # shutdown must not bring the tracker back.
        if not self.tracker.started and not self._stopped:
            await self.tracker.start()

    # -- tracking -----------------------------------------------------------------------

    @staticmethod
    def _topic(owner: Hashable, topic: str | None) -> str:
        if topic is not None:
            return topic
        if isinstance(owner, Channel):
            return owner.topic
        raise UsageError(
            f"{type(owner).__name__} is not a channel: give the topic, "
            "e.g. track(owner, key, meta, topic='room:lobby')"
        )

    async def track(
        self, owner: Hashable, key: Key, meta: Meta | None = None, *, topic: str | None = None
    ) -> str:
        """Track ``key`` with ``meta`` for ``owner`` (a channel: under its topic); returns
        the ``phx_ref``.

        A channel's presences leave when it ends, whatever the reason (leave,
        crash, closed socket, heartbeat timeout). Any other owner needs
        ``topic=`` and leaves on :meth:`untrack` (an asyncio task also leaves
        when it finishes). Raises
        :class:`~phoenix_channels.presence.AlreadyTrackedError` for a second
        ``track`` of the same owner, topic and key (use :meth:`update`).
        """
        topic = self._topic(owner, topic)
        await self._ready()
        return await self.tracker.track(owner, topic, key, meta)

    async def untrack(
        self, owner: Hashable, key: Key | None = None, *, topic: str | None = None
    ) -> None:
        """Stop tracking ``key`` for ``owner`` (under its topic, or ``topic``).

        Without a key: every presence of ``owner``, in every topic.
        Untracking what is not tracked does nothing.
        """
        if key is None:
            await self.tracker.untrack(owner)
        else:
            await self.tracker.untrack(owner, self._topic(owner, topic), key)

    async def update(
        self,
        owner: Hashable,
        key: Key,
        meta: Meta | Callable[[Meta], Meta],
        *,
        topic: str | None = None,
    ) -> str:
        """Replace the meta of a tracked presence (or apply a function to it); returns the
        new ``phx_ref``. Raises :class:`~phoenix_channels.presence.NotTrackedError` if
        nothing is tracked."""
        return await self.tracker.update(owner, self._topic(owner, topic), key, meta)

    # -- listing -------------------------------------------------------------------------

    async def list(self, topic: str | Channel) -> Grouped:
        """Every presence of the topic, grouped by key and passed through :meth:`fetch`.

        Read from this node's replica (no network), in time proportional to the
        topic's presences. ``{}`` for an empty topic.
        """
        name = topic.topic if isinstance(topic, Channel) else topic
        await self._ready()
        grouped = group(self.tracker.list(name), self._custom_fetch)
        if self._custom_fetch and grouped:
            grouped = await self._fetch(name, grouped)
        return grouped

    async def get_by_key(self, topic: str | Channel, key: Key) -> dict[str, Any] | None:
        """The presences of one key, ``{"metas": [...], ...}`` through :meth:`fetch`, or None."""
        name = topic.topic if isinstance(topic, Channel) else topic
        await self._ready()
        grouped = group(
            [(key, meta) for meta in self.tracker.get_by_key(name, key)], self._custom_fetch
        )
        if not grouped:
            return None
        if self._custom_fetch:
            grouped = await self._fetch(name, grouped)
        return grouped.get(key if type(key) is str else str(key))

    async def fetch(self, topic: str, presences: Grouped) -> Grouped:
        """Enrich grouped presences before they are listed or broadcast; the default returns
        them unchanged.

        Override it to add data per key, keeping ``metas``::

            async def fetch(self, topic, presences):
                users = await db.users(list(presences))
                return {k: {**p, "user": users[k]} for k, p in presences.items()}

        A plain ``def`` works too. It is called with the presences that joined or
        left in each diff as well as for :meth:`list`.
        """
        return presences

    async def _fetch(self, topic: str, grouped: Grouped) -> Grouped:
        result: Any = self.fetch(topic, grouped)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, dict):
            raise UsageError(
                f"{type(self).__name__}.fetch returned {type(result).__name__}; "
                "return the presences dict"
            )
        return result

    # -- diffs ----------------------------------------------------------------------------

    # -- big rooms (presence/batch.py) -------------------------------------------------

    def _init_big_rooms(self, diff_interval: float, count_interval: float) -> None:
        for name, value in (("diff_interval", diff_interval), ("count_interval", count_interval)):
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if not count_interval:
            raise ConfigurationError("count_interval must be > 0 (seconds between counts)")
        self.diff_interval = float(diff_interval)
        self._batcher = DiffBatcher(self._send_diff, self.diff_interval_for)
        self._counts = CountBroadcaster(self.tracker_count, self._send_count, float(count_interval))

    def diff_interval_for(self, topic: str) -> float:
        """Seconds over which ``topic``'s diffs are merged into one (0: none merged).

        The default is the ``diff_interval`` option for every topic; override it
        to batch only big rooms, e.g. ``1.0 if topic.startswith("stadium:") else 0``.
        """
        return self.diff_interval

    def counts_only(self, topic: str) -> bool:
        """Whether ``topic`` is too big to list: its members get counts, not lists.

        Default False. Override it (a fixed rule per topic: clients must know
        which kind of room they are in). Such a topic gets no ``presence_diff``;
        ``presence_count`` ``{"count": n}`` is broadcast at most once per
        ``count_interval`` when the count changed, and :meth:`push_state`
        pushes the count instead of ``presence_state``.
        """
        return False

    def tracker_count(self, topic: str) -> int:
        """Presences (metas) under ``topic``, without building a list."""
        return self.tracker.count(topic)

    async def count(self, topic: str | Channel, *, keys: bool = False) -> int:
        """How many presences ``topic`` has: metas (one per tracked channel), in O(1);
        with ``keys=True``, distinct keys (users), in O(presences)."""
        name = topic.topic if isinstance(topic, Channel) else topic
        await self._ready()
        if keys:
            return len({key for key, _ in self.tracker.list(name)})
        return self.tracker.count(name)

    async def push_state(self, channel: Channel) -> None:
        """Push what a joining client needs: ``presence_state``, or ``presence_count`` for a
        topic in count mode (:meth:`counts_only`). Call it after the join, with ``track``."""
        if self.counts_only(channel.topic):
            await channel.push("presence_count", {"count": self.tracker.count(channel.topic)})
        else:
            await channel.push("presence_state", await self.list(channel.topic))

    def _send_count(self, topic: str, count: int) -> None:
        self.endpoint.local_broadcast(topic, "presence_count", {"count": count})

    def _on_diff(self, diff: Diff) -> None:
        if PRESENCE_DIFF.on:
            presence_diff(self, diff)
        if self.counts_only(diff.topic):
            self._counts.changed(diff.topic)
        elif not self._batcher.hold(diff):
            self._send_diff(diff)

    def _send_diff(self, diff: Diff) -> None:
        if not self._custom_fetch and not self._pending:
            self._broadcast(diff.topic, group(diff.joins), group(diff.leaves))
            return
        pending = self._pending
        pending.append(diff)
        if len(pending) > self.max_pending_diffs:
            self._compact_pending()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain())

    def _compact_pending(self) -> None:
        by_topic: dict[str, list[Diff]] = {}
        for diff in self._pending:
            by_topic.setdefault(diff.topic, []).append(diff)
        log.warning(
            "%s: %d presence diffs wait for fetch; combining them per topic",
            type(self).__name__,
            len(self._pending),
        )
        self._pending = deque(
            Diff(topic, *_coalesce(diffs)) if len(diffs) > 1 else diffs[0]
            for topic, diffs in by_topic.items()
        )

    async def _drain(self) -> None:
        """Broadcast queued diffs in order, through fetch; combine per topic what piled up."""
        while self._pending:
            batch: dict[str, list[Diff]] = {}
            pending, self._pending = self._pending, deque()
            for diff in pending:
                batch.setdefault(diff.topic, []).append(diff)
            for topic, diffs in batch.items():
                if len(diffs) == 1:
                    joins, leaves = diffs[0].joins, diffs[0].leaves
                else:
                    joins, leaves = _coalesce(diffs)
                if not joins and not leaves:
                    continue
                custom = self._custom_fetch
                grouped_joins, grouped_leaves = group(joins, custom), group(leaves, custom)
                if custom:
                    try:
                        if grouped_joins:
                            grouped_joins = await self._fetch(topic, grouped_joins)
                        if grouped_leaves:
                            grouped_leaves = await self._fetch(topic, grouped_leaves)
                    except Exception:
                        log.exception(
                            "%s.fetch raised on %r; broadcasting the diff without it",
                            type(self).__name__,
                            topic,
                        )
                        grouped_joins, grouped_leaves = group(joins), group(leaves)
                try:
                    self._broadcast(topic, grouped_joins, grouped_leaves)
                except Exception:
                    log.exception("presence_diff on %r could not be broadcast", topic)

    def _broadcast(self, topic: str, joins: Grouped, leaves: Grouped) -> None:
        self.endpoint.local_broadcast(topic, "presence_diff", {"joins": joins, "leaves": leaves})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.tracker!r}>"
