"""The history store on NATS JetStream: one stream, one subject per topic.

The stream ``<prefix>_hist`` (dots of the prefix become ``_``) captures
``<prefix>.h.<topic token>``. Each stored message carries its position in
headers: ``Phx-Epoch`` (the topic's epoch) and ``Phx-Offset``, and its
publication time (``Phx-Time``).

**Offsets.** A publish states the JetStream sequence of the topic's last
message in ``Nats-Expected-Last-Subject-Sequence`` (optimistic
concurrency): JetStream refuses it if another node published on the topic
meanwhile, and this node reads the last message again and retries. So the
offset (last + 1) and the order are the same on every node. Cost: one
round trip per broadcast while one node publishes on a topic (this node
remembers the topic's last sequence); one more (and a retry) each time
another node published in between.

**Delivery.** After JetStream acknowledged it, the message goes to the
other nodes over core NATS (as a positioned message) and to this node's
subscribers. Two nodes publishing at the same moment can reach a third in
either order, so every node delivers through a :class:`.Sequencer`, which
restores offset order (and fetches from the stream what a failed node never
sent on).

**Epochs.** A topic's epoch is made with its first message (or, when a
client reads an empty topic, with a stored marker at offset 0, so that the
first message does not start another one) and copied by every later one.
When its messages are all gone (aged out, the stream deleted, a server
restart with memory storage), the next one starts a new epoch, so a client
holding an older position hears ``epoch_changed``.

**Limits.** The stream keeps, per subject, the largest ``size`` of the
routes and, in age, the largest ``ttl`` (or forever); a read applies the
topic's own ``size`` and ``ttl`` (by ``Phx-Time``: the nodes' clocks should
agree within a fraction of the ``ttl``). A read creates an ephemeral
consumer filtered on the topic: three or four round trips, whatever the
number of messages.

**Reads are shared.** A read fetches the topic's whole kept history, and
each reader keeps what follows its own position, so readers of one topic
share reads: while a read of a topic runs, the readers who arrive wait
for the next one, which starts when it ends and serves them all. Each
reader's read still starts after the reader asked (a rejoin must see
every message published before it subscribed), and a mass rejoin after an
outage costs one read per topic and round, not one consumer per client.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Hashable
from typing import Any

from ..errors import BroadcastError
from ..protocol.messages import Broadcast
from ..pubsub import codec
from . import History, HistorySlice
from .memory import binary_refused
from .sequencer import Sequencer

__all__ = ["NatsHistory"]

_WRONG_LAST = 10071  # JetStream: wrong last sequence
_RETRIES = 20
_NO_STREAM = 10059  # JetStream: stream not found

# A topic's kept history as one read found it: (epoch, top offset, first kept offset,
# [(epoch, offset, broadcast)...]). Shared by the readers of that read: never mutated.
_Snapshot = tuple[str, int, int, list[tuple[str, int, Broadcast]]]


class NatsHistory:
    """Positions and stored messages in JetStream, shared by every node of the cluster."""

    def __init__(self, adapter: Any, storage: str = "memory") -> None:
        # ``adapter``: the NatsAdapter (pubsub/nats.py); it names the subjects
        # (history_subject), publishes (_publish) and holds the connection (_nc).
        self.adapter = adapter
        self.storage = storage
        self.stream = adapter.prefix.replace(".", "_") + "_hist"
        self._head = codec.positioned_head(adapter.node_name.encode())
        self._last: dict[str, tuple[int, str, int]] = {}  # topic -> (seq, epoch, offset)
        self._size = 0
        self._age: float | None = 0.0  # 0: not configured yet; None: forever
        self._ready: asyncio.Lock | None = None
        self._configured = False
        # Shared reads, per topic: the one running, and the one its late comers wait for.
        self._reading: dict[str, asyncio.Lock] = {}
        self._next_read: dict[str, asyncio.Future[_Snapshot]] = {}
        self.sequencer = Sequencer(self._deliver_local, self._missing)
        adapter._sequencer = self.sequencer

    # -- JetStream ---------------------------------------------------------------------------

    def _js(self) -> Any:
        nc = self.adapter._nc
        if nc is None or not nc.is_connected:
            raise BroadcastError(f"nats at {self.adapter.url} is unreachable; history unavailable")
        return nc.jetstream(timeout=self.adapter.timeout)

    def _subject(self, topic: str) -> str:
        subject: str = self.adapter.history_subject(topic)
        return subject

    async def _ensure(self, history: History) -> None:
        age = history.ttl
        wants_size = history.size > self._size
        wants_age = self._age is not None and (age is None or age > self._age)
        if self._configured and not wants_size and not wants_age:
            return
        if self._ready is None:
            self._ready = asyncio.Lock()
        async with self._ready:
            from nats.js.api import StorageType, StreamConfig

            size = max(self._size, history.size)
            new_age = None if (age is None or self._age is None) else max(age, self._age)
            config = StreamConfig(
                name=self.stream,
                subjects=[f"{self.adapter.prefix}.h.>"],
                storage=StorageType.MEMORY if self.storage == "memory" else StorageType.FILE,
                max_msgs_per_subject=size,
                max_age=0 if new_age is None else new_age,
            )
            jsm = self._js()
            try:
                await jsm.add_stream(config)
            except Exception:
                await jsm.update_stream(config)
            self._size, self._age, self._configured = size, new_age, True

    async def _last_of(self, topic: str) -> tuple[int, str, int] | None:
        """(sequence, epoch, offset) of the topic's last stored message, or None."""
        from nats.js.errors import NotFoundError

        try:
            msg = await self._js().get_last_msg(self.stream, self._subject(topic))
        except NotFoundError as exc:
            if getattr(exc, "err_code", None) == _NO_STREAM:
                self._configured = False  # deleted elsewhere: made again on the next write
            return None
        headers = msg.headers or {}
        return msg.seq, headers["Phx-Epoch"], int(headers["Phx-Offset"])

    # -- the store ---------------------------------------------------------------------------

    async def append(
        self, topic: str, broadcast: Broadcast, history: History, from_: Hashable = None
    ) -> None:
        if type(broadcast.payload) is bytes:
            raise binary_refused(topic)
        from nats.js.errors import APIError, NoStreamResponseError

        await self._ensure(history)
        try:
            body = codec.encode_value([topic, broadcast, None])
        except Exception as exc:
            raise BroadcastError(f"the message on {topic!r} cannot be sent: {exc}") from None
        js = self._js()
        subject = self._subject(topic)
        for _ in range(_RETRIES):
            last = self._last.get(topic)
            if last is None:
                last = await self._last_of(topic)
            seq, epoch, offset = last if last is not None else (0, _new_epoch(), 0)
            headers = {
                "Nats-Expected-Last-Subject-Sequence": str(seq),
                "Phx-Epoch": epoch,
                "Phx-Offset": str(offset + 1),
                "Phx-Time": f"{time.time():.3f}",
            }
            try:
                ack = await js.publish(subject, body, stream=self.stream, headers=headers)
            except NoStreamResponseError:
                # The stream was deleted (a reset elsewhere, a restart): make it again.
                self._configured = False
                self._last.pop(topic, None)
                await self._ensure(history)
                continue
            except APIError as exc:
                self._last.pop(topic, None)
                if exc.err_code == _WRONG_LAST:
                    continue
                raise BroadcastError(f"nats refused the message on {topic!r}: {exc}") from None
            break
        else:
            raise BroadcastError(f"too much contention publishing on {topic!r}; try again")
        self._last[topic] = (ack.seq, epoch, offset + 1)
        if len(self._last) > 100_000:
            self._last.clear()
        position = f"{epoch}:{offset + 1}"
        stored = Broadcast(broadcast.topic, broadcast.event, broadcast.payload, position)
        pos = position.encode()
        data = self._head + bytes((len(pos),)) + pos + body
        adapter = self.adapter
        await adapter._publish(adapter.channel_for(topic), data)
        adapter.stats.published += 1
        pubsub = adapter._pubsub
        if pubsub is not None and pubsub.subscribers(topic):
            self.sequencer.feed(topic, stored, from_)
        return None

    async def read(self, topic: str, history: History, after: int | None) -> HistorySlice:
        return await self._read(topic, history, after)

    async def read_for_replay(
        self, topic: str, history: History, after: int | None
    ) -> HistorySlice:
        """:meth:`read` for a rejoin on this node (the recovery calls this one when present)."""
        found = await self._read(topic, history, after)
        # What this node has delivered is where a reader stands: messages past it
        # are on their way to this node, and come through the sequencer (live) to
        # whoever subscribed before this read; replaying them too would double them.
        tracked = self.sequencer.position(topic)
        if tracked is None:
            self.sequencer.start(topic, found.epoch, found.top)
            return found
        epoch, last = tracked
        if epoch != found.epoch or last >= found.top:
            return found
        kept = [m for m in found.messages if _offset(m) <= last]
        return HistorySlice(found.epoch, last, min(found.first, last + 1), kept)

    async def _read(self, topic: str, history: History, after: int | None) -> HistorySlice:
        epoch, top, first, kept = await self._shared_snapshot(topic, history)
        replay = [] if after is None else [m[2] for m in kept if m[1] > after]
        return HistorySlice(epoch, top, first, replay)

    async def _shared_snapshot(self, topic: str, history: History) -> _Snapshot:
        """The topic's kept history, from a read that started after this call (shared)."""
        while True:
            upcoming = self._next_read.get(topic)
            if upcoming is None:
                break
            try:  # a read that starts after we arrived is coming: take its result
                return await asyncio.shield(upcoming)
            except asyncio.CancelledError:
                if not upcoming.cancelled():  # we were cancelled, not its reader
                    raise
        upcoming = self._next_read[topic] = asyncio.get_running_loop().create_future()
        lock = self._reading.get(topic)
        if lock is None:
            lock = self._reading[topic] = asyncio.Lock()
        try:
            async with lock:  # the read before ours ends first; late comers wait for ours
                if self._next_read.get(topic) is upcoming:
                    del self._next_read[topic]
                snapshot = await self._snapshot(topic, history)
        except asyncio.CancelledError:
            if self._next_read.get(topic) is upcoming:
                del self._next_read[topic]
            upcoming.cancel()  # its waiters start a read of their own
            raise
        except Exception as exc:
            upcoming.set_exception(exc)
            upcoming.exception()  # retrieved: waiters, if any, raise it themselves
            raise
        finally:
            if not lock.locked() and self._next_read.get(topic) is None:
                self._reading.pop(topic, None)
        upcoming.set_result(snapshot)
        return snapshot

    async def _snapshot(self, topic: str, history: History) -> _Snapshot:
        await self._ensure(history)
        last = await self._last_of(topic)
        if last is None:
            last = await self._mark(topic, history)
        _seq, epoch, top = last
        messages = await self._fetch(topic, history) if top > 0 else []
        kept = [m for m in messages if m[0] == epoch and m[1] > top - history.size]
        first = kept[0][1] if kept else top + 1
        return epoch, top, first, kept

    async def _mark(self, topic: str, history: History) -> tuple[int, str, int]:
        """Give an empty topic its epoch: a stored marker at offset 0 (never delivered).

        A client that joined while the topic was empty holds ``<epoch>:0``;
        without the marker the first message would start another epoch.
        """
        from nats.js.errors import APIError, NoStreamResponseError

        for _ in range(_RETRIES):
            epoch = _new_epoch()
            headers = {
                "Nats-Expected-Last-Subject-Sequence": "0",
                "Phx-Epoch": epoch,
                "Phx-Offset": "0",
                "Phx-Time": f"{time.time():.3f}",
            }
            try:
                ack = await self._js().publish(
                    self._subject(topic), b"", stream=self.stream, headers=headers
                )
                return ack.seq, epoch, 0
            except NoStreamResponseError:
                self._configured = False
                await self._ensure(history)
            except APIError as exc:
                if exc.err_code != _WRONG_LAST:
                    raise BroadcastError(f"nats refused a write on {topic!r}: {exc}") from None
                found = await self._last_of(topic)  # another node marked it first
                if found is not None:
                    return found
        raise BroadcastError(f"too much contention on {topic!r}; try again")

    async def _fetch(self, topic: str, history: History) -> list[tuple[str, int, Broadcast]]:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            filter_subject=self._subject(topic),
            inactive_threshold=30.0,
        )
        sub = await self._js().pull_subscribe(
            self._subject(topic), stream=self.stream, config=config
        )
        oldest = None if history.ttl is None else time.time() - history.ttl
        found: list[tuple[str, int, Broadcast]] = []
        try:
            info = await sub.consumer_info()
            pending = info.num_pending
            while pending > 0:
                batch = await sub.fetch(min(pending, 1000), timeout=self.adapter.timeout)
                pending -= len(batch)
                for msg in batch:
                    headers = msg.headers or {}
                    if oldest is not None and float(headers.get("Phx-Time", "0")) < oldest:
                        continue
                    epoch, offset = headers["Phx-Epoch"], int(headers["Phx-Offset"])
                    if offset == 0:
                        continue  # the epoch marker of an empty topic
                    _t, stored, _tok = codec.decode_body(msg.data)
                    position = f"{epoch}:{offset}"
                    found.append(
                        (
                            epoch,
                            offset,
                            Broadcast(stored.topic, stored.event, stored.payload, position),
                        )
                    )
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # the consumer goes away by itself (inactive_threshold)
                pass
        return found

    async def reset(self) -> None:
        """Delete the stream: every topic starts a new epoch."""
        try:
            await self._js().delete_stream(self.stream)
        except Exception:
            pass
        self._last.clear()
        self._configured = False
        self._size, self._age = 0, 0.0

    # -- delivery ------------------------------------------------------------------------------

    def _deliver_local(self, topic: str, message: Broadcast, skip: Hashable) -> None:
        pubsub = self.adapter._pubsub
        if pubsub is not None:
            pubsub.local_broadcast(topic, message, from_=skip)

    async def _missing(self, topic: str, after: int) -> list[Broadcast]:
        history = History(size=max(self._size, 1), ttl=None)
        found = await self._read(topic, history, after)
        return found.messages


def _new_epoch() -> str:
    return "n" + secrets.token_urlsafe(8).replace("-", "x").replace("_", "y")


def _offset(message: Broadcast) -> int:
    return int((message.ref or ":0").rpartition(":")[2])
