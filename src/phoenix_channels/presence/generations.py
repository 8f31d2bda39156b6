"""Delta generations: recent changes kept at a few sizes, to answer transfer requests cheaply.

A replica that missed a heartbeat or two asks a peer for a transfer. Rather
than the whole state, the peer answers with the smallest accumulated delta
that covers what the requester lacks. It keeps one accumulated delta per
size limit (by default 100, 1,000 and 10,000 dots and entries): every
delta it gossips or merges is folded into each generation; a generation that
would outgrow its limit starts over from the next smaller one. A delta that
does not follow on from a generation (a gap) is not folded into it. So a
generation never holds more than its limit: the memory they take is bounded
by ``max_delta_sizes`` whatever the churn.

Pure functions over :class:`~phoenix_channels.presence.state.Delta` values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .clock import ReplicaId, dominates, dominates_or_equal
from .state import Delta, merge_deltas

__all__ = ["fulfilling", "push", "remove_replica"]


def push(
    generations: list[Delta], delta: Delta, current: Delta, limits: Sequence[int]
) -> list[Delta]:
    """Fold ``delta`` into each generation; ``current`` seeds them when there are none yet."""
    if not generations:
        generations = [current.copy() for _ in limits]
    out: list[Delta] = []
    previous = delta
    for generation, limit in zip(generations, limits, strict=True):
        merged = merge_deltas(generation, delta)
        if merged is None:  # a gap: this generation cannot cover the new changes
            out.append(generation)
            previous = generation
        elif merged.size() <= limit:
            out.append(merged)
            previous = merged
        else:  # too big: start over from the next smaller accumulation
            if previous.size() > limit:  # even that is too big: start empty, where we are
                out.append(Delta(dict(merged.end), dict(merged.end)))
            else:
                out.append(previous)
            previous = merged
    return out


def fulfilling(
    generations: Sequence[Delta], remote_context: Mapping[ReplicaId, int]
) -> Delta | None:
    """The first (smallest) generation that brings ``remote_context`` up to date, if any.

    It must change something for the requester, start no later than what
    the requester has, and reach beyond it.
    """
    for generation in generations:
        start = {r: c for r, c in generation.start.items() if r in remote_context}
        end = {r: c for r, c in generation.end.items() if r in remote_context}
        if (
            not dominates_or_equal(start, end)
            and dominates_or_equal(remote_context, start)
            and not dominates(remote_context, end)
        ):
            return generation
    return None


def remove_replica(generations: list[Delta], replica: ReplicaId) -> list[Delta]:
    """Forget a replica that is gone for good."""
    return [g.without_replica(replica) for g in generations]
