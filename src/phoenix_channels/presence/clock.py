"""Version vectors: which dots of which replica a state has seen, and how they compare.

A *context* maps a replica ref ``(node name, vsn)`` to the highest clock of
that replica seen without gaps. Trackers exchange contexts in every
heartbeat; comparing them tells a tracker which peers know more than it does
(they *dominate* it) and so whom to ask for a state transfer.

Pure functions over dicts, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = [
    "Context",
    "ReplicaId",
    "append_clock",
    "dominates",
    "dominates_or_equal",
    "lowerbound",
    "upperbound",
]

ReplicaId = tuple[str, int]
"""A replica: the node's name and the version of this start of it (new on every restart)."""

Context = dict[ReplicaId, int]


def dominates(a: Mapping[ReplicaId, int], b: Mapping[ReplicaId, int]) -> bool:
    """Whether ``a`` has seen everything ``b`` has: ``a[r] >= b[r]`` for every replica of ``b``.

    A clock with fewer replicas than ``b`` never dominates it.
    """
    if len(a) < len(b):
        return False
    get = a.get
    return all(get(r, 0) >= c for r, c in b.items())


def dominates_or_equal(a: Mapping[ReplicaId, int], b: Mapping[ReplicaId, int]) -> bool:
    """Whether ``a`` is at least ``b`` on ``a``'s own replicas (missing in ``b`` counts as 0).

    Used for delta ranges, where only the replicas of ``a`` matter. An empty
    ``a`` is only at least an empty ``b``.
    """
    if not a:
        return not b
    get = b.get
    return all(c >= get(r, 0) for r, c in a.items())


def upperbound(a: Mapping[ReplicaId, int], b: Mapping[ReplicaId, int]) -> Context:
    """Pointwise maximum; replicas of either side are kept."""
    out = dict(a)
    for r, c in b.items():
        if out.get(r, -1) < c:
            out[r] = c
    return out


def lowerbound(a: Mapping[ReplicaId, int], b: Mapping[ReplicaId, int]) -> Context:
    """Pointwise minimum on the common replicas; replicas of only one side are kept as they are."""
    out = dict(a)
    for r, c in b.items():
        mine = out.get(r)
        if mine is None or c < mine:
            out[r] = c
    return out


def append_clock(
    clockset: list[tuple[ReplicaId, Context]], clock: tuple[ReplicaId, Context]
) -> list[tuple[ReplicaId, Context]]:
    """Add a replica's clock to a set of clocks, keeping only the ones nobody dominates.

    What remains after a sampling period names the most advanced replicas:
    the ones worth asking for a transfer. An empty context adds nothing.
    """
    ref, context = clock
    if not context:
        return clockset
    combined: Context = {}
    for _ref, other in clockset:
        combined = upperbound(combined, other)
    if dominates(context, combined):
        return [(ref, context)]
    if dominates(combined, context):
        return clockset
    kept: list[tuple[ReplicaId, Context]] = []
    insert = False
    for other_ref, other in clockset:
        if dominates(context, other):
            insert = True
        else:
            kept.append((other_ref, other))
            insert = insert or not dominates(other, context)
    if insert:
        kept.insert(0, (ref, context))
    return kept


def replicas(clockset: Iterable[tuple[ReplicaId, Context]]) -> list[ReplicaId]:
    """The replicas named in a clock set."""
    return [ref for ref, _context in clockset]
