"""The history store of one process (the local adapter's): a bounded deque per topic.

Positions are assigned synchronously, in the order broadcasts are made, so
they are unique and increasing without locks. The epoch is one random token
per store: a restarted process (or :meth:`MemoryHistory.reset`) has a new
one, so a client holding a position from before says ``epoch_changed``.

Memory: each message is kept at most ``size`` deep and ``ttl`` seconds
long; each topic ever published with history keeps a small record (its
offset counter) for the life of the store, so offsets never restart.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Hashable
from itertools import islice

from ..errors import EncodeError
from ..protocol.messages import Broadcast
from . import History, HistorySlice

__all__ = ["MemoryHistory", "new_epoch"]


def new_epoch() -> str:
    """A fresh epoch token: 12 URL-safe characters, never a plain number."""
    return "e" + secrets.token_urlsafe(8).replace("-", "x").replace("_", "y")


class _Topic:
    __slots__ = ("entries", "offset")

    def __init__(self, size: int) -> None:
        self.offset = 0
        self.entries: deque[tuple[int, float, Broadcast]] = deque(maxlen=size)


class MemoryHistory:
    """Keeps each history topic's recent broadcasts in this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.epoch = new_epoch()
        self._clock = clock
        self._topics: dict[str, _Topic] = {}

    def stored(self) -> int:
        """How many messages are held right now, over every topic (for monitoring)."""
        return sum(len(t.entries) for t in self._topics.values())

    def append_now(self, topic: str, broadcast: Broadcast, history: History) -> Broadcast:
        """:meth:`append` without a coroutine: what the PubSub calls on one node."""
        if type(broadcast.payload) is bytes:
            raise binary_refused(topic)
        record = self._topics.get(topic)
        if record is None:
            record = self._topics[topic] = _Topic(history.size)
        record.offset += 1
        now = self._clock()
        if history.ttl is not None:
            _expire(record, now - history.ttl)
        stored = Broadcast(
            broadcast.topic, broadcast.event, broadcast.payload, f"{self.epoch}:{record.offset}"
        )
        record.entries.append((record.offset, now, stored))
        return stored

    async def append(
        self, topic: str, broadcast: Broadcast, history: History, from_: Hashable = None
    ) -> Broadcast:
        return self.append_now(topic, broadcast, history)

    async def read(self, topic: str, history: History, after: int | None) -> HistorySlice:
        record = self._topics.get(topic)
        if record is None:
            return HistorySlice(self.epoch, 0, 1)
        if history.ttl is not None:
            _expire(record, self._clock() - history.ttl)
        entries = record.entries
        first = entries[0][0] if entries else record.offset + 1
        if after is None:
            return HistorySlice(self.epoch, record.offset, first)
        skip = max(0, after + 1 - first)
        messages = [entry[2] for entry in islice(entries, skip, None)]
        return HistorySlice(self.epoch, record.offset, first, messages)

    async def reset(self) -> None:
        self.epoch = new_epoch()
        self._topics.clear()


def _expire(record: _Topic, oldest: float) -> None:
    entries = record.entries
    while entries and entries[0][1] < oldest:
        entries.popleft()


def binary_refused(topic: str) -> EncodeError:
    return EncodeError(
        f"cannot broadcast bytes on {topic!r}: the topic keeps history, and a binary "
        "broadcast frame has no ref to carry the message's position; send a dict "
        "(e.g. with the bytes in base64)"
    )
