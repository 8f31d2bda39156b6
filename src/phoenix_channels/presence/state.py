"""The presence CRDT: an add-wins observed-remove set with causal context, without I/O.

Every tracker holds one :class:`State`, a replica of the set of tracked
entries of the whole cluster. An entry ``(topic, owner, key, meta)`` is
created by one replica, the only one that ever removes it; its *tag* is the
*dot* ``(replica, clock)`` at which it was created. Replication only has to
say which dots a replica has seen and which of them are still alive:

* ``context[r]``: every dot of replica ``r`` up to this clock has been seen;
* ``clouds[r]``: dots of ``r`` seen beyond the context (after a gap);
* ``values``: the live entries among the seen dots.

So a dot that a state has seen but holds no entry for is an entry that was
removed. Merging another replica's data (a :class:`Delta` sent on a
heartbeat, or a :class:`Snapshot` sent on request) adds the entries whose
dots were unseen, removes the local entries whose dots the other side has
seen without holding them, and unions what was seen. Merging is
commutative, associative and idempotent, so deltas may arrive late, twice,
or never (a snapshot then repairs the gap). A concurrent add and remove of
one entry cannot happen (only the owner removes), and the ``add-wins`` rule
covers the rest.

Each replica is *up* or *down* here: entries of a down replica are kept but
hidden from :meth:`State.get_by_topic` and reported as leaves when it goes down (as
joins when it comes back). Diffs returned by the operations are exactly the
changes of the visible set.

This follows the design of Phoenix.Tracker.State, with deliberate
differences: a dot observed as removed stays seen (so a stale delta that
still carries its add cannot bring the entry back); what is sent to a
replica never claims anything about that replica's own dots; a replica
gossips only its own changes (removals it observes are not echoed by every
node); and deltas are joined only when their ranges touch in both
directions (a late, older delta is not joined across a gap).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from .clock import Context, ReplicaId, lowerbound, upperbound

__all__ = ["Delta", "Entry", "Snapshot", "State", "Tag", "contiguous", "merge_deltas"]

Tag = tuple[ReplicaId, int]
Clouds = dict[ReplicaId, set[int]]


class Entry:
    """One tracked presence: ``key`` with ``meta`` under ``topic``, owned by ``owner``.

    ``owner`` identifies what was tracked on the replica that created the
    entry (an id that replica gives to a channel, a task, any object); only
    that replica interprets it. Entries are never changed once made: an
    update is a new entry with a new tag.
    """

    __slots__ = ("clock", "key", "meta", "owner", "replica", "topic")

    def __init__(
        self,
        topic: str,
        owner: Any,
        key: Any,
        meta: dict[str, Any],
        replica: ReplicaId,
        clock: int,
    ) -> None:
        self.topic = topic
        self.owner = owner
        self.key = key
        self.meta = meta
        self.replica = replica
        self.clock = clock

    @property
    def tag(self) -> Tag:
        return (self.replica, self.clock)

    def __repr__(self) -> str:
        return (
            f"Entry({self.topic!r}, owner={self.owner!r}, key={self.key!r}, meta={self.meta!r}, "
            f"tag={self.tag!r})"
        )


class Delta:
    """Changes since a point: the dots seen and the entries alive among them.

    ``start`` and ``end`` bound the dots covered for the replicas that
    produced the changes: for each replica ``r`` in the range, every dot in
    ``(start[r], end[r]]`` is in ``clouds``. A dot of ``r`` at or below
    ``start[r]`` in ``clouds`` is an older entry of ``r`` removed meanwhile.
    """

    __slots__ = ("clouds", "end", "start", "values")

    def __init__(
        self,
        start: Context,
        end: Context,
        clouds: Clouds | None = None,
        values: dict[Tag, Entry] | None = None,
    ) -> None:
        self.start = start
        self.end = end
        self.clouds: Clouds = clouds if clouds is not None else {}
        self.values: dict[Tag, Entry] = values if values is not None else {}

    def size(self) -> int:
        """Entries plus dots: what bounds a delta generation."""
        return len(self.values) + sum(len(c) for c in self.clouds.values())

    def is_empty(self) -> bool:
        return not any(self.clouds.values())

    def copy(self) -> Delta:
        return Delta(
            dict(self.start),
            dict(self.end),
            {r: set(c) for r, c in self.clouds.items()},
            dict(self.values),
        )

    def without_replica(self, replica: ReplicaId) -> Delta:
        """This delta with every trace of ``replica`` removed (it was permanently lost)."""
        return Delta(
            {r: c for r, c in self.start.items() if r != replica},
            {r: c for r, c in self.end.items() if r != replica},
            {r: c for r, c in self.clouds.items() if r != replica},
            {t: e for t, e in self.values.items() if t[0] != replica},
        )

    def extract(self, remote: ReplicaId, remote_context: Mapping[ReplicaId, int]) -> Delta:
        """What of this delta to send to ``remote``: replicas it knows, not its own."""

        def keep(r: ReplicaId) -> bool:
            return r != remote and r in remote_context

        return Delta(
            {r: c for r, c in self.start.items() if keep(r)},
            {r: c for r, c in self.end.items() if keep(r)},
            {r: set(c) for r, c in self.clouds.items() if keep(r)},
            {t: e for t, e in self.values.items() if keep(t[0])},
        )

    def __repr__(self) -> str:
        return f"Delta(start={self.start}, end={self.end}, dots={self.size()})"


def _seen(context: Mapping[ReplicaId, int], clouds: Mapping[ReplicaId, set[int]], tag: Tag) -> bool:
    replica, clock = tag
    upto = context.get(replica)
    if upto is not None and clock <= upto:
        return True
    cloud = clouds.get(replica)
    return cloud is not None and clock in cloud


def contiguous(a: Delta, b: Delta) -> bool:
    """Whether two deltas' ranges touch or overlap on every replica they share.

    Both directions are checked, so a delta that arrives late (an older
    one) is never joined across the gap between it and a newer one.
    """
    b_start, b_end = b.start, b.end
    a_start = a.start
    for r, a_end in a.end.items():
        start = b_start.get(r)
        if start is not None and (start > a_end or a_start.get(r, 0) > b_end.get(r, start)):
            return False
    return True


def merge_deltas(older: Delta, newer: Delta) -> Delta | None:
    """One delta covering both, or None when they are not contiguous (a gap between them)."""
    if not contiguous(older, newer):
        return None
    clouds: Clouds = {r: set(c) for r, c in older.clouds.items()}
    for r, cloud in newer.clouds.items():
        mine = clouds.get(r)
        if mine is None:
            clouds[r] = set(cloud)
        else:
            mine |= cloud
    empty: Context = {}
    values = {
        tag: entry
        for tag, entry in older.values.items()
        if tag in newer.values or not _seen(empty, newer.clouds, tag)
    }
    for tag, entry in newer.values.items():
        if tag not in older.values and not _seen(empty, older.clouds, tag):
            values[tag] = entry
    return Delta(
        lowerbound(older.start, newer.start), upperbound(older.end, newer.end), clouds, values
    )


class Snapshot:
    """A whole state as sent to one replica for a transfer: its context, clouds and entries."""

    __slots__ = ("clouds", "context", "values")

    def __init__(self, context: Context, clouds: Clouds, values: dict[Tag, Entry]) -> None:
        self.context = context
        self.clouds = clouds
        self.values = values

    def __repr__(self) -> str:
        return f"Snapshot(context={self.context}, entries={len(self.values)})"


class State:
    """A replica of the cluster's presences (see the module docstring).

    Queries cost what they return: :meth:`get_by_topic` walks one topic's entries,
    :meth:`get` and :meth:`owned_by` use indexes of this replica's own entries.
    """

    __slots__ = (
        "_by_owner",
        "clouds",
        "context",
        "delta",
        "down",
        "replica",
        "topics",
        "values",
    )

    def __init__(self, replica: ReplicaId) -> None:
        self.replica = replica
        self.context: Context = {replica: 0}
        self.clouds: Clouds = {}
        # replica -> clock -> entry: every entry, by the dot that created it.
        self.values: dict[ReplicaId, dict[int, Entry]] = {replica: {}}
        # topic -> its entries (a dict as an ordered set): what list(topic) walks.
        self.topics: dict[str, dict[Entry, None]] = {}
        self.down: set[ReplicaId] = set()
        # owner -> its one entry, or {(topic, key): entry} when it has several (most
        # owners, channels, have one: no dict each).
        self._by_owner: dict[Hashable, Entry | dict[tuple[str, Any], Entry]] = {}
        self.delta = self._fresh_delta()

    # -- queries --------------------------------------------------------------

    @property
    def clock(self) -> int:
        return self.context[self.replica]

    def clocks(self) -> tuple[ReplicaId, Context]:
        """This replica and its context without down replicas (what heartbeats carry)."""
        down = self.down
        if not down:
            return self.replica, dict(self.context)
        return self.replica, {r: c for r, c in self.context.items() if r not in down}

    def get_by_topic(self, topic: str) -> list[Entry]:
        """The visible entries of ``topic`` (those of up replicas)."""
        entries = self.topics.get(topic)
        if not entries:
            return []
        down = self.down
        if not down:
            return list(entries)
        return [e for e in entries if e.replica not in down]

    def count(self, topic: str) -> int:
        entries = self.topics.get(topic)
        if not entries:
            return 0
        if not self.down:
            return len(entries)
        return sum(1 for e in entries if e.replica not in self.down)

    def get(self, topic: str, owner: Hashable, key: Hashable) -> Entry | None:
        """This replica's own entry for ``(topic, owner, key)``."""
        mine = self._by_owner.get(owner)
        if mine is None:
            return None
        if type(mine) is Entry:
            return mine if mine.topic == topic and mine.key == key else None
        return mine.get((topic, key))  # type: ignore[union-attr]

    def owned_by(self, owner: Hashable) -> list[Entry]:
        """This replica's own entries of ``owner``."""
        mine = self._by_owner.get(owner)
        if mine is None:
            return []
        if type(mine) is Entry:
            return [mine]
        return list(mine.values())  # type: ignore[union-attr]

    def entries(self, replica: ReplicaId | None = None) -> list[Entry]:
        """Every entry held (of one replica, or of all), visible or not."""
        if replica is not None:
            return list(self.values.get(replica, {}).values())
        return [e for by_clock in self.values.values() for e in by_clock.values()]

    def visible(self) -> list[Entry]:
        """Every entry of an up replica."""
        down = self.down
        return [
            e for r, by_clock in self.values.items() if r not in down for e in by_clock.values()
        ]

    def size(self) -> int:
        return sum(len(v) for v in self.values.values())

    def seen(self, tag: Tag) -> bool:
        return _seen(self.context, self.clouds, tag)

    def is_up(self, replica: ReplicaId) -> bool:
        return replica in self.context and replica not in self.down

    # -- local changes ------------------------------------------------------------

    def join(self, owner: Hashable, topic: str, key: Hashable, meta: dict[str, Any]) -> Entry:
        """Add an entry of this replica (the caller checks it is not tracked yet)."""
        clock = self._bump()
        entry = Entry(topic, owner, key, meta, self.replica, clock)
        self._insert(entry)
        self.delta.values[entry.tag] = entry
        return entry

    def leave(self, entry: Entry) -> None:
        """Remove an entry of this replica.

        A removal takes a fresh dot that no other delta will ever mention: a
        peer that misses this delta then has a gap in its context (and asks
        for a transfer) even if later deltas mention the removed entry's dot.
        """
        self._delete(entry)
        self._forget_in_delta(entry.tag)
        self._bump()

    def leave_join(self, entry: Entry, meta: dict[str, Any]) -> Entry:
        """Replace an entry of this replica by one with ``meta`` (an update), in one step.

        The removal gets its own dot, as in :meth:`leave`: a later delta may
        mention the new entry's dot again (when it is removed in turn), and
        only a dot that no other delta mentions makes a peer that missed this
        one see a gap, and ask for a transfer, instead of keeping the old entry.
        """
        self._delete(entry)
        self._forget_in_delta(entry.tag)
        self._bump()
        return self.join(entry.owner, entry.topic, entry.key, meta)

    def _bump(self) -> int:
        me = self.replica
        clock = self.context[me] + 1
        self.context[me] = clock
        delta = self.delta
        cloud = delta.clouds.get(me)
        if cloud is None:
            delta.clouds[me] = {clock}
        else:
            cloud.add(clock)
        delta.end[me] = clock
        return clock

    def _forget_in_delta(self, tag: Tag) -> None:
        """The delta says: this dot was seen, and its entry is gone."""
        delta = self.delta
        delta.values.pop(tag, None)
        cloud = delta.clouds.get(tag[0])
        if cloud is None:
            delta.clouds[tag[0]] = {tag[1]}
        else:
            cloud.add(tag[1])

    # -- the delta ------------------------------------------------------------------

    def _fresh_delta(self) -> Delta:
        mine = {self.replica: self.context[self.replica]}
        return Delta(mine, dict(mine))

    def has_delta(self) -> bool:
        return not self.delta.is_empty()

    def take_delta(self) -> Delta:
        """The changes since the last call (to gossip); the next delta starts empty."""
        delta = self.delta
        self.delta = self._fresh_delta()
        return delta

    # -- replication ------------------------------------------------------------------

    def extract(self, remote: ReplicaId, remote_context: Mapping[ReplicaId, int]) -> Snapshot:
        """The whole state for ``remote``: replicas it knows (and has up), not its own."""

        def keep(r: ReplicaId) -> bool:
            return r != remote and r in remote_context

        values: dict[Tag, Entry] = {}
        for r, by_clock in self.values.items():
            if keep(r):
                for clock, entry in by_clock.items():
                    values[(r, clock)] = entry
        return Snapshot(
            {r: c for r, c in self.context.items() if keep(r)},
            {r: set(c) for r, c in self.clouds.items() if keep(r) and c},
            values,
        )

    def merge(self, remote: Delta | Snapshot) -> tuple[list[Entry], list[Entry]]:
        """Merge a delta or a snapshot; returns the visible ``(joins, leaves)``."""
        remote_context: Mapping[ReplicaId, int] = remote.context if type(remote) is Snapshot else {}
        remote_clouds = remote.clouds
        remote_values = remote.values
        me = self.replica
        context = self.context
        down = self.down
        joins: list[Entry] = []
        leaves: list[Entry] = []

        # Removes: our copies of other replicas' entries whose dots the remote has
        # seen but does not hold any more.
        removed: list[Entry] = []
        for r, upto in remote_context.items():
            if r == me:
                continue
            by_clock = self.values.get(r)
            if by_clock:
                removed.extend(
                    e for c, e in by_clock.items() if c <= upto and (r, c) not in remote_values
                )
        for r, cloud in remote_clouds.items():
            if r == me:
                continue
            by_clock = self.values.get(r)
            if by_clock:
                upto = remote_context.get(r, 0)
                for c in cloud:
                    if c > upto:  # those up to the context were handled above
                        e = by_clock.get(c)
                        if e is not None and (r, c) not in remote_values:
                            removed.append(e)
        for e in removed:
            # Not added to our own delta: the owner's heartbeat tells every peer,
            # and echoing it from every node would cost O(nodes^2) messages.
            self._delete(e)
            if e.replica not in down:
                leaves.append(e)

        # Joins: entries of known replicas whose dots we have not seen.
        clouds = self.clouds
        for tag, e in remote_values.items():
            r, c = tag
            known = context.get(r)
            if known is None or c <= known or r == me:
                continue
            seen_after = clouds.get(r)
            if seen_after is not None and c in seen_after:
                continue
            self._insert(e)
            if r not in down:
                joins.append(e)

        # What was seen: clouds and context, for replicas we know.
        touched: list[ReplicaId] = []
        for r, cloud in remote_clouds.items():
            if r in context and r != me and cloud:
                mine = clouds.get(r)
                if mine is None:
                    clouds[r] = set(cloud)
                else:
                    mine |= cloud
                touched.append(r)
        for r, c in remote_context.items():
            if r != me and context.get(r, c) < c:
                context[r] = c
                touched.append(r)
        self._compact(touched)
        return joins, leaves

    def _compact(self, replicas: Iterable[ReplicaId]) -> None:
        """Move dots that became contiguous from the clouds into the context."""
        context, clouds = self.context, self.clouds
        for r in replicas:
            cloud = clouds.get(r)
            if not cloud:
                continue
            upto = context[r]
            if min(cloud) > upto + 1:
                continue
            keep: set[int] = set()
            for dot in sorted(cloud):
                if dot == upto + 1:
                    upto = dot
                elif dot > upto:
                    keep.add(dot)
            context[r] = upto
            if keep:
                clouds[r] = keep
            else:
                del clouds[r]

    # -- replica visibility ---------------------------------------------------------------

    def replica_up(self, replica: ReplicaId) -> list[Entry]:
        """``replica`` is (again) reachable: know it, show its entries; returns them (joins)."""
        if replica == self.replica:
            return []
        if replica not in self.context:
            self.context[replica] = 0
            self.values[replica] = {}
            return []
        if replica in self.down:
            self.down.discard(replica)
            return self.entries(replica)
        return []

    def replica_down(self, replica: ReplicaId) -> list[Entry]:
        """``replica`` is unreachable: hide its entries (kept); returns them (leaves)."""
        if replica == self.replica or replica not in self.context or replica in self.down:
            return []
        self.down.add(replica)
        return self.entries(replica)

    def remove_replica(self, replica: ReplicaId) -> list[Entry]:
        """``replica`` is gone for good: drop its entries and all we knew of it.

        Returns the entries that were still visible (the caller reports them
        as leaves; entries of a replica already down left when it went down).
        """
        if replica == self.replica:
            return []
        by_clock = self.values.pop(replica, {})
        visible = [] if replica in self.down else list(by_clock.values())
        topics = self.topics
        for e in by_clock.values():
            in_topic = topics.get(e.topic)
            if in_topic is not None:
                in_topic.pop(e, None)
                if not in_topic:
                    del topics[e.topic]
        self.context.pop(replica, None)
        self.clouds.pop(replica, None)
        self.down.discard(replica)
        self.delta = self.delta.without_replica(replica)
        return visible

    # -- storage ------------------------------------------------------------------------

    def _insert(self, e: Entry) -> None:
        by_clock = self.values.get(e.replica)
        if by_clock is None:
            by_clock = self.values[e.replica] = {}
        by_clock[e.clock] = e
        in_topic = self.topics.get(e.topic)
        if in_topic is None:
            in_topic = self.topics[e.topic] = {}
        in_topic[e] = None
        if e.replica == self.replica:
            owners = self._by_owner
            mine = owners.get(e.owner)
            if mine is None:
                owners[e.owner] = e
            elif type(mine) is Entry:
                owners[e.owner] = {(mine.topic, mine.key): mine, (e.topic, e.key): e}
            else:
                mine[(e.topic, e.key)] = e  # type: ignore[index]

    def _delete(self, e: Entry) -> None:
        del self.values[e.replica][e.clock]
        in_topic = self.topics[e.topic]
        del in_topic[e]
        if not in_topic:
            del self.topics[e.topic]
        if e.replica == self.replica:
            owners = self._by_owner
            mine = owners[e.owner]
            if type(mine) is Entry:
                del owners[e.owner]
            else:
                del mine[(e.topic, e.key)]  # type: ignore[union-attr]
                if len(mine) == 1:  # type: ignore[arg-type]
                    (owners[e.owner],) = mine.values()  # type: ignore[union-attr]

    def __repr__(self) -> str:
        return (
            f"<State {self.replica} clock={self.clock} entries={self.size()} "
            f"replicas={len(self.context)} down={len(self.down)}>"
        )
