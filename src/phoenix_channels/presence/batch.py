"""Presence in big rooms: batched ``presence_diff`` and counts instead of lists.

In a room of N members, Phoenix broadcasts one ``presence_diff`` per join
or leave to all N: with J joins and leaves a second that is J * N frames a
second. Two tools bound it, both per topic (see ``docs/presence.md``):

* **Batching** (:class:`DiffBatcher`): the diffs of a topic during an
  interval are merged into one, so each member gets at most one
  ``presence_diff`` per interval, whatever the churn. Merging keeps, for
  each meta (named by its ``phx_ref``), only its *last* operation: a meta
  that joined and left in the interval is sent as a leave, one that left
  and came back (a healed netsplit) as a join. Both are idempotent in the
  JS helper, which is what keeps a client correct whichever moment of the
  interval its ``presence_state`` was taken at.
* **Counts** (:class:`CountBroadcaster`): for topics too big to list, no
  ``presence_state`` and no diffs at all; members get ``presence_count``
  (``{"count": n}``) at most once per interval, when the count changed.

Both are plain bookkeeping around ``loop.call_later``: no task per topic,
and nothing is held for a topic with no pending change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from .tracker import Diff, Key, Presences

__all__ = ["CountBroadcaster", "DiffBatcher", "merge_diffs"]


def merge_diffs(diffs: Iterable[Diff]) -> tuple[Presences, Presences]:
    """Several diffs of one topic as one ``(joins, leaves)``: each meta's last operation.

    Unlike a net count (where a join and a leave cancel out), a meta that
    joined and left is kept as a leave: a client whose ``presence_state``
    was taken between the two has it and must drop it.
    """
    last: dict[tuple[Key, Any], tuple[bool, Key, Any]] = {}
    for diff in diffs:
        for key, meta in diff.joins:
            ident = (key, meta.get("phx_ref"))
            last.pop(ident, None)  # re-inserted last: a meta's place follows its last operation
            last[ident] = (True, key, meta)
        for key, meta in diff.leaves:
            # Within one diff the leaves come after the joins, as the JS helper applies them.
            ident = (key, meta.get("phx_ref"))
            last.pop(ident, None)
            last[ident] = (False, key, meta)
    joins = [(key, meta) for joined, key, meta in last.values() if joined]
    leaves = [(key, meta) for joined, key, meta in last.values() if not joined]
    return joins, leaves


class DiffBatcher:
    """Holds the diffs of batched topics and emits one merged diff per topic per interval.

    ``interval_for(topic)`` gives the topic's interval in seconds (0: not
    batched, :meth:`hold` returns False and the caller sends the diff at
    once). The first diff of a quiet topic starts its interval; when it
    ends, the merged diff goes to ``emit`` (nothing if the diffs cancel
    out entirely, which last-operation merging never does for a change).
    """

    def __init__(self, emit: Callable[[Diff], None], interval_for: Callable[[str], float]) -> None:
        self._emit = emit
        self._interval_for = interval_for
        self._held: dict[str, list[Diff]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.held = 0
        """Diffs taken into a batch so far."""
        self.emitted = 0
        """Merged diffs emitted so far."""

    def hold(self, diff: Diff) -> bool:
        interval = self._interval_for(diff.topic)
        if not interval or interval <= 0:
            return False
        topic = diff.topic
        held = self._held.get(topic)
        if held is None:
            self._held[topic] = [diff]
            loop = asyncio.get_running_loop()
            self._timers[topic] = loop.call_later(interval, self.flush, topic)
        else:
            held.append(diff)
        self.held += 1
        return True

    def pending(self) -> int:
        """Topics with a batch waiting for its interval to end."""
        return len(self._held)

    def flush(self, topic: str) -> None:
        """Emit the batch of ``topic`` now (its timer does it at the end of the interval)."""
        timer = self._timers.pop(topic, None)
        if timer is not None:
            timer.cancel()
        diffs = self._held.pop(topic, None)
        if not diffs:
            return
        merged = diffs[0] if len(diffs) == 1 else Diff(topic, *merge_diffs(diffs))
        if merged.joins or merged.leaves:
            self.emitted += 1
            self._emit(merged)

    def flush_all(self) -> None:
        for topic in list(self._held):
            self.flush(topic)


class CountBroadcaster:
    """``presence_count`` for topics in count mode: at most one per interval, when changed.

    ``changed(topic)`` marks a topic (a diff arrived); at the end of the
    interval ``count(topic)`` is read and, if it differs from the last one
    sent, ``send(topic, count)`` is called.
    """

    def __init__(
        self, count: Callable[[str], int], send: Callable[[str, int], None], interval: float
    ) -> None:
        self._count = count
        self._send = send
        self.interval = interval
        self._dirty: set[str] = set()
        self._last: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.sent = 0
        """``presence_count`` broadcasts so far."""

    def changed(self, topic: str) -> None:
        self._dirty.add(topic)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        dirty, self._dirty = self._dirty, set()
        for topic in dirty:
            count = self._count(topic)
            if self._last.get(topic) == count:
                continue
            if count:
                self._last[topic] = count
            else:
                self._last.pop(topic, None)
            self.sent += 1
            self._send(topic, count)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._dirty.clear()
