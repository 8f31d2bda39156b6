"""Per-topic delivery in offset order, for engines whose messages may arrive out of order.

On NATS, a node publishes a broadcast to other nodes only after JetStream
stored it and gave it its offset, so two nodes publishing on one topic at
the same moment can reach a third node in the wrong order. A
:class:`Sequencer` puts them back in order on each receiving node: it
delivers a topic's message at once when its offset follows the last one
delivered, holds it otherwise, and after ``wait`` seconds fetches what is
still missing from the store (a publisher that died between storing and
publishing) and delivers everything in order. Duplicates (an offset at or
below the last delivered one, same epoch) are dropped.

Bounded: at most ``limit`` topics are tracked (beyond, the table starts
over: the next message of a forgotten topic is delivered as it comes), and
at most ``limit`` messages are held per topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

from ..protocol.messages import Broadcast
from . import Position

__all__ = ["Sequencer"]

log = logging.getLogger("phoenix_channels.history")

Deliver = Callable[[str, Broadcast, Hashable], None]
Fetch = Callable[[str, int], Awaitable[list[Broadcast]]]


class _Track:
    __slots__ = ("epoch", "held", "last", "timer")

    def __init__(self, epoch: str, last: int) -> None:
        self.epoch = epoch
        self.last = last
        self.held: dict[int, tuple[Broadcast, Hashable]] = {}
        self.timer: asyncio.TimerHandle | None = None


class Sequencer:
    def __init__(self, deliver: Deliver, fetch: Fetch, wait: float = 0.5, limit: int = 10_000):
        self._deliver = deliver
        self._fetch = fetch
        self.wait = wait
        self.limit = limit
        self._tracks: dict[str, _Track] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.filled = 0
        """Messages fetched from the store because they did not arrive in time."""

    def feed(self, topic: str, message: Broadcast, skip: Hashable = None) -> None:
        position = Position.parse(message.ref)
        if position is None:
            self._deliver(topic, message, skip)
            return
        track = self._tracks.get(topic)
        if track is None or track.epoch != position.epoch:
            if track is not None and track.timer is not None:
                track.timer.cancel()
            if len(self._tracks) >= self.limit:
                self._tracks.clear()
            self._tracks[topic] = _Track(position.epoch, position.offset)
            self._deliver(topic, message, skip)
            return
        offset = position.offset
        if offset <= track.last or offset in track.held:
            return  # delivered already
        if offset == track.last + 1:
            track.last = offset
            self._deliver(topic, message, skip)
            self._drain(topic, track)
            return
        if len(track.held) < self.limit:
            track.held[offset] = (message, skip)
        if track.timer is None:
            track.timer = asyncio.get_running_loop().call_later(self.wait, self._gap, topic, track)

    def _drain(self, topic: str, track: _Track) -> None:
        held = track.held
        while track.last + 1 in held:
            track.last += 1
            message, skip = held.pop(track.last)
            self._deliver(topic, message, skip)
        if not held and track.timer is not None:
            track.timer.cancel()
            track.timer = None

    def _gap(self, topic: str, track: _Track) -> None:
        track.timer = None
        task = asyncio.get_running_loop().create_task(self._fill(topic, track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fill(self, topic: str, track: _Track) -> None:
        try:
            stored = await self._fetch(topic, track.last)
        except Exception:
            log.exception("fetching missing messages of %r failed; delivering what came", topic)
            stored = []
        if self._tracks.get(topic) is not track:
            return
        for message in stored:
            position = Position.parse(message.ref)
            if position is None or position.epoch != track.epoch:
                continue
            if position.offset == track.last + 1:
                track.last = position.offset
                self.filled += 1
                held = track.held.pop(position.offset, None)
                self._deliver(topic, message, None if held is None else held[1])
                self._drain(topic, track)
        if track.held:  # lost for good: go on from the oldest held one
            track.last = min(track.held) - 1
            self._drain(topic, track)

    def position(self, topic: str) -> tuple[str, int] | None:
        """``(epoch, last offset delivered)`` of a tracked topic."""
        track = self._tracks.get(topic)
        return None if track is None else (track.epoch, track.last)

    def start(self, topic: str, epoch: str, last: int) -> None:
        """Track ``topic`` from ``last`` (what a recovery read found), unless tracked already."""
        if topic not in self._tracks:
            if len(self._tracks) >= self.limit:
                self._tracks.clear()
            self._tracks[topic] = _Track(epoch, last)

    def forget(self, topic: str) -> None:
        track = self._tracks.pop(topic, None)
        if track is not None and track.timer is not None:
            track.timer.cancel()

    def close(self) -> None:
        for track in self._tracks.values():
            if track.timer is not None:
                track.timer.cancel()
        self._tracks.clear()
        for task in self._tasks:
            task.cancel()
