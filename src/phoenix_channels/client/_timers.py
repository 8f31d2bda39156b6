"""The client core's clock work: named deadlines, retry backoffs and the JS client's delays.

The core never sleeps. It sets deadlines in a :class:`Timers` (a heap of
named deadlines, where setting a name again replaces its deadline) and the
driver asks for the next one and calls the core back when it passes.
A :class:`Backoff` is the retry timer of reconnects and rejoins: its n-th
consecutive schedule waits ``delay(n)``, jittered by the socket.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable

__all__ = ["Backoff", "Timers", "default_reconnect_after", "default_rejoin_after"]

_RECONNECT = (0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.0)
_REJOIN = (1.0, 2.0, 5.0)


def default_reconnect_after(tries: int) -> float:
    """The JS client's reconnect backoff in seconds: 10 ms, 50 ms, ... 2 s, then 5 s."""
    return _RECONNECT[tries - 1] if 0 < tries <= len(_RECONNECT) else 5.0


def default_rejoin_after(tries: int) -> float:
    """The JS client's rejoin backoff in seconds: 1 s, 2 s, 5 s, then 10 s."""
    return _REJOIN[tries - 1] if 0 < tries <= len(_REJOIN) else 10.0


class Timers:
    """Named deadlines; setting a name again replaces its deadline."""

    __slots__ = ("_heap", "_live", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable]] = []
        self._live: dict[Hashable, tuple[int, Callable[[float], None]]] = {}
        self._seq = 0

    def set(self, key: Hashable, when: float, fn: Callable[[float], None]) -> None:
        self._seq += 1
        self._live[key] = (self._seq, fn)
        heapq.heappush(self._heap, (when, self._seq, key))
        # Cancelled entries stay in the heap until they surface; compact when they dominate.
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._live):
            self._heap = [e for e in self._heap if self._is_live(e)]
            heapq.heapify(self._heap)

    def cancel(self, key: Hashable) -> None:
        self._live.pop(key, None)

    def _is_live(self, entry: tuple[float, int, Hashable]) -> bool:
        live = self._live.get(entry[2])
        return live is not None and live[0] == entry[1]

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and not self._is_live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> Callable[[float], None] | None:
        when = self.next_deadline()
        if when is None or when > now:
            return None
        _, _, key = heapq.heappop(self._heap)
        return self._live.pop(key)[1]

    def __len__(self) -> int:
        return len(self._live)


class Backoff:
    """A retry timer: the n-th consecutive schedule waits ``delay(n)`` (jittered)."""

    __slots__ = ("_callback", "_delay", "_jittered", "_key", "_timers", "tries")

    def __init__(
        self,
        timers: Timers,
        key: Hashable,
        delay: Callable[[int], float],
        callback: Callable[[float], None],
        jittered: Callable[[float], float],
    ) -> None:
        self._timers = timers
        self._key = key
        self._delay = delay
        self._callback = callback
        self._jittered = jittered
        self.tries = 0

    def schedule(self, now: float) -> None:
        delay = self._jittered(self._delay(self.tries + 1))
        self._timers.set(self._key, now + delay, self._fire)

    def _fire(self, now: float) -> None:
        self.tries += 1
        self._callback(now)

    def reset(self) -> None:
        self.tries = 0
        self._timers.cancel(self._key)
