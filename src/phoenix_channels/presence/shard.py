"""The replication protocol of one tracker replica, without I/O.

A :class:`Shard` holds the CRDT :class:`~.state.State`, the peers it has
heard from, and the delta generations. The runtime around it (the
:class:`~phoenix_channels.presence.Tracker`) feeds it the time, the local
changes and the messages received, and sends what it returns. Every call
returns the messages to send as ``(node, message)`` pairs, where ``node`` is
``None`` for a broadcast to every peer, and reports visible changes through
the ``report(joins, leaves)`` callback given at construction.

The protocol, as in Phoenix.Tracker:

* **Heartbeat** every ``broadcast_period``: the delta of local changes since
  the previous one, or nothing; an empty heartbeat still goes out after
  ``max_silent_periods`` quiet ticks, so peers know this replica is alive.
  Every heartbeat carries the sender's clocks.
* **Transfers**: every ``clock_sample_periods`` ticks, a replica compares
  its clocks with the ones peers sent meanwhile; the peers whose clocks are
  not dominated (the most advanced ones) are asked for a transfer, and
  answer with the smallest delta generation that covers the gap, else with
  the whole state (a :class:`~.state.Snapshot`).
* **Failure detection**: a peer silent for more than ``down_period`` is
  *down* (its entries leave, but are kept); one silent for more than
  ``permdown_period`` is removed for good. A peer that restarts comes back
  with a new ``vsn``: its old incarnation is removed at once. A peer shutting
  down with ``permdown_on_shutdown`` says so and is removed at once.

Peer status, per name::

    (unknown) --heartbeat--> up --silent > down_period--> down --heartbeat, same vsn--> up
    up|down --silent > permdown_period | permdown message | heartbeat with new vsn--> (removed)
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from ..errors import AlreadyTrackedError, ConfigurationError, NotTrackedError
from . import generations as gens
from .clock import Context, ReplicaId, append_clock
from .state import Delta, Entry, Snapshot, State
from .wire import (
    Heartbeat,
    Message,
    Permdown,
    TransferAck,
    TransferReq,
    encode_heartbeat,
    encode_permdown,
    encode_transfer_ack,
    encode_transfer_req,
)

__all__ = [
    "AlreadyTrackedError",
    "NotTrackedError",
    "Outgoing",
    "Peer",
    "Shard",
    "TrackerArgs",
    "TrackerOptions",
    "new_vsn",
]

log = logging.getLogger("phoenix_channels.presence")

Outgoing = tuple[str | None, dict[str, Any]]
Report = Callable[[list[Entry], list[Entry]], None]

_UP, _DOWN = "up", "down"
_GONE_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class TrackerOptions:
    """Every option of a presence tracker, declared once; times in seconds, Phoenix's defaults.

    :class:`~phoenix_channels.presence.Tracker` and
    :class:`~phoenix_channels.presence.Presence` take these as keywords
    (typed by :class:`TrackerArgs`) and build one of these; ``__post_init__``
    checks them together. ``docs/presence.md`` shows them as a table that a
    test keeps equal to this declaration.
    """

    broadcast_period: float = 1.5
    """How often deltas are gossiped (a heartbeat)."""
    max_silent_periods: int = 10
    """Quiet heartbeats skipped before an empty one is sent. Lowered when ``down_period``
    is short, so that an idle replica still heartbeats at least every 0.55 x
    ``down_period`` (the ratio of Phoenix's defaults, 16.5 s for 30 s)."""
    down_period: float | None = None
    """Silence after which a peer is down and its entries leave; at least twice
    ``broadcast_period``. None: ``broadcast_period * max_silent_periods * 2`` (30)."""
    permdown_period: float = 1200.0
    """Silence after which a peer's entries are dropped for good (20 min); larger than
    ``down_period``."""
    clock_sample_periods: int = 2
    """Heartbeats between two decisions to ask peers for transfers."""
    max_delta_sizes: Sequence[int] = field(default=(100, 1000, 10_000))
    """Sizes of the delta generations kept to answer transfer requests without sending
    the whole state."""
    permdown_on_shutdown: bool = False
    """On a graceful stop, tell peers to drop this node's entries at once rather than
    after ``down_period``."""
    max_message_bytes: int = 512 * 1024
    """Cap of each message published (at least 1024): larger ones (a heartbeat after a
    burst, a whole state for a new node) are sent in parts, since engines cap message
    sizes (NATS: 1 MiB by default)."""

    def __post_init__(self) -> None:
        def positive(name: str, value: Any, kind: type | tuple[type, ...] = (int, float)) -> None:
            number: float = value if isinstance(value, int | float) else 0
            if isinstance(value, bool) or not isinstance(value, kind) or number <= 0:
                raise ConfigurationError(
                    f"tracker option {name} must be a positive number, got {value!r}"
                )

        positive("broadcast_period", self.broadcast_period)
        positive("max_silent_periods", self.max_silent_periods, int)
        positive("permdown_period", self.permdown_period)
        positive("clock_sample_periods", self.clock_sample_periods, int)
        if self.down_period is None:
            object.__setattr__(
                self, "down_period", self.broadcast_period * self.max_silent_periods * 2
            )
        positive("down_period", self.down_period)
        if self.down_period < 2 * self.broadcast_period:  # type: ignore[operator]
            raise ConfigurationError(
                f"down_period ({self.down_period}) must be at least twice as large as the "
                f"broadcast_period ({self.broadcast_period}): a peer would be declared down "
                "between two of its heartbeats"
            )
        if self.permdown_period <= self.down_period:  # type: ignore[operator]
            raise ConfigurationError(
                f"permdown_period ({self.permdown_period}) must be larger than the "
                f"down_period ({self.down_period})"
            )
        sizes = tuple(self.max_delta_sizes)
        if not sizes or any(type(s) is not int or s < 1 for s in sizes):
            raise ConfigurationError(
                f"max_delta_sizes must be a non-empty list of positive ints, got {sizes!r}"
            )
        object.__setattr__(self, "max_delta_sizes", sizes)
        if type(self.max_message_bytes) is not int or self.max_message_bytes < 1024:
            raise ConfigurationError(
                f"max_message_bytes must be an int of at least 1024, got {self.max_message_bytes!r}"
            )

    @property
    def silent_periods(self) -> int:
        """Quiet ticks before an empty heartbeat, after the cap described above."""
        cap = math.floor(0.55 * self.down / self.broadcast_period + 1e-9) - 1
        return max(0, min(self.max_silent_periods, cap))

    @property
    def down(self) -> float:
        assert self.down_period is not None
        return self.down_period


class TrackerArgs(TypedDict, total=False):
    """The keywords of ``Tracker(...)`` and ``Presence(...)`` that build :class:`TrackerOptions`.

    Defaults and meanings are in :class:`TrackerOptions` (a test keeps the two lists equal).
    """

    broadcast_period: float
    max_silent_periods: int
    down_period: float | None
    permdown_period: float
    clock_sample_periods: int
    max_delta_sizes: Sequence[int]
    permdown_on_shutdown: bool
    max_message_bytes: int


class Peer:
    """What a replica knows of another: its incarnation, its node, when it was last heard."""

    __slots__ = ("last_heartbeat", "name", "node", "status", "vsn")

    def __init__(self, name: str, vsn: int, node: str, now: float) -> None:
        self.name = name
        self.vsn = vsn
        self.node = node
        self.last_heartbeat = now
        self.status = _UP

    @property
    def replica_id(self) -> ReplicaId:
        return (self.name, self.vsn)

    def __repr__(self) -> str:
        return f"<Peer {self.name}#{self.vsn} on {self.node} {self.status}>"


_last_vsn = 0


def new_vsn() -> int:
    """A version for a new start of a replica: microseconds since the epoch, never repeated.

    A restarted node must come back with a larger vsn than before (peers
    take a smaller one for a late message of an old incarnation), which
    the wall clock gives unless it steps back by more than the restart took.
    """
    global _last_vsn
    _last_vsn = max(time.time_ns() // 1000, _last_vsn + 1)
    return _last_vsn


class Shard:
    """One replica's replication state machine (see the module docstring)."""

    def __init__(
        self,
        name: str,
        vsn: int,
        node: str,
        report: Report,
        options: TrackerOptions | None = None,
    ) -> None:
        self.name = name
        self.node = node
        self.options = options or TrackerOptions()
        self.state = State((name, vsn))
        self.peers: dict[str, Peer] = {}
        self.generations: list[Delta] = []
        self._report = report
        self._clockset: list[tuple[ReplicaId, Context]] = []
        self._silent_limit = self.options.silent_periods
        self._silent = self._silent_limit  # so the first tick announces us
        self._samples = self.options.clock_sample_periods
        self._refs = itertools.count(1)
        self.transfers_requested = 0
        self.transfers_sent = 0
        # Incarnations that said goodbye: a message of theirs still in flight
        # must not bring them back. Kept for permdown_period, at most _GONE_LIMIT.
        self._gone: dict[ReplicaId, float] = {}

    @property
    def replica_id(self) -> ReplicaId:
        return self.state.replica

    # -- local changes --------------------------------------------------------------

    def track(self, owner: Hashable, topic: str, key: Hashable, meta: dict[str, Any]) -> Entry:
        if self.state.get(topic, owner, key) is not None:
            raise AlreadyTrackedError(
                f"{key!r} is already tracked under {topic!r} by this owner; "
                "use update() to change its meta"
            )
        entry = self.state.join(owner, topic, key, meta)
        self._report([entry], [])
        return entry

    def untrack(self, owner: Hashable, topic: str, key: Hashable) -> Entry | None:
        entry = self.state.get(topic, owner, key)
        if entry is not None:
            self.state.leave(entry)
            self._report([], [entry])
        return entry

    def untrack_all(self, owner: Hashable) -> list[Entry]:
        entries = self.state.owned_by(owner)
        for entry in entries:
            self.state.leave(entry)
        if entries:
            self._report([], entries)
        return entries

    def update(self, owner: Hashable, topic: str, key: Hashable, meta: dict[str, Any]) -> Entry:
        old = self.current(owner, topic, key)
        new = self.state.leave_join(old, meta)
        self._report([new], [old])
        return new

    def current(self, owner: Hashable, topic: str, key: Hashable) -> Entry:
        entry = self.state.get(topic, owner, key)
        if entry is None:
            raise NotTrackedError(f"{key!r} is not tracked under {topic!r} by this owner")
        return entry

    # -- the tick ---------------------------------------------------------------------------

    def first_delay(self, rng: random.Random | None = None) -> float:
        """When the first tick should run: at random in the first quarter period (no herds)."""
        return (rng or random).uniform(0, self.options.broadcast_period / 4)

    def tick(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        self._broadcast(out)
        self._request_transfers(out)
        self._detect_downs(now)
        return out

    def _broadcast(self, out: list[Outgoing]) -> None:
        state = self.state
        if state.has_delta():
            delta = state.take_delta()
            out.append(
                (None, encode_heartbeat(self.replica_id, self.node, state.clocks()[1], delta))
            )
            self._silent = 0
            self._push_generation(delta)
        elif self._silent >= self._silent_limit:
            out.append(
                (None, encode_heartbeat(self.replica_id, self.node, state.clocks()[1], None))
            )
            self._silent = 0
        else:
            self._silent += 1

    def flush(self) -> list[Outgoing]:
        """A last heartbeat with the pending delta (on shutdown), if there is one."""
        out: list[Outgoing] = []
        if self.state.has_delta():
            delta = self.state.take_delta()
            out.append(
                (None, encode_heartbeat(self.replica_id, self.node, self.state.clocks()[1], delta))
            )
        return out

    def goodbye(self) -> Outgoing:
        """The message that makes peers drop this replica at once (graceful permdown)."""
        return (None, encode_permdown(self.replica_id))

    def _request_transfers(self, out: list[Outgoing]) -> None:
        if self._samples > 1:
            self._samples -= 1
            return
        self._samples = self.options.clock_sample_periods
        clockset = append_clock(self._clockset, self.state.clocks())
        self._clockset = []
        for ref, _context in clockset:
            if ref == self.replica_id:
                continue
            peer = self.peers.get(ref[0])
            if peer is None or peer.vsn != ref[1] or peer.status != _UP:
                continue
            self.transfers_requested += 1
            out.append(
                (
                    peer.node,
                    encode_transfer_req(
                        self.replica_id,
                        self.node,
                        peer.name,
                        next(self._refs),
                        self.state.clocks()[1],
                    ),
                )
            )

    def _detect_downs(self, now: float) -> None:
        options = self.options
        if self._gone:
            for ref, when in list(self._gone.items()):
                if now - when > options.permdown_period:
                    del self._gone[ref]
        for peer in list(self.peers.values()):
            silent = now - peer.last_heartbeat
            if silent > options.permdown_period:
                log.info("%s: peer %s gone for good (silent %.1f s)", self.name, peer, silent)
                self._down(peer)
                self._permdown(peer)
            elif silent > options.down and peer.status == _UP:
                log.info("%s: peer %s down (silent %.1f s)", self.name, peer, silent)
                self._down(peer)

    # -- peers ------------------------------------------------------------------------------

    def _up(self, peer: Peer) -> None:
        peer.status = _UP
        joins = self.state.replica_up(peer.replica_id)
        if joins:
            self._report(joins, [])

    def _down(self, peer: Peer) -> None:
        if peer.status == _UP:
            peer.status = _DOWN
            leaves = self.state.replica_down(peer.replica_id)
            if leaves:
                self._report([], leaves)

    def _permdown(self, peer: Peer) -> None:
        leaves = self.state.remove_replica(peer.replica_id)
        if leaves:
            self._report([], leaves)
        self.generations = gens.remove_replica(self.generations, peer.replica_id)
        if self.peers.get(peer.name) is peer:
            del self.peers[peer.name]

    def _heard(self, sender: ReplicaId, node: str, now: float) -> bool:
        """Bookkeeping for a heartbeat; False if it must be ignored."""
        name, vsn = sender
        if sender in self._gone:
            return False
        if name == self.name:
            if vsn != self.replica_id[1]:
                log.error(
                    "%s: another tracker replica uses this node name (%s, vsn %s); node names "
                    "must be unique in a cluster. Ignoring its messages",
                    self.name,
                    name,
                    vsn,
                )
            return False
        peer = self.peers.get(name)
        if peer is None:
            peer = self.peers[name] = Peer(name, vsn, node, now)
            log.debug("%s: peer %s up", self.name, peer)
            self._up(peer)
        elif peer.vsn == vsn:
            peer.last_heartbeat = now
            peer.node = node
            if peer.status != _UP:
                log.info("%s: peer %s up again", self.name, peer)
                self._up(peer)
        elif vsn > peer.vsn:  # the node restarted: its old incarnation is gone
            log.info("%s: peer %s restarted (vsn %s)", self.name, peer, vsn)
            self._down(peer)
            self._permdown(peer)
            new = self.peers[name] = Peer(name, vsn, node, now)
            self._up(new)
        else:  # a late message of an incarnation already replaced
            return False
        return True

    # -- messages -------------------------------------------------------------------------------

    def handle(self, message: Message, now: float) -> list[Outgoing]:
        """Apply one decoded message from a peer."""
        if type(message) is Heartbeat:
            if self._heard(message.sender, message.node, now):
                if message.delta is not None:
                    self._merge(message.delta)
                    self._push_generation(message.delta)
                self._clockset = append_clock(self._clockset, (message.sender, message.clock))
            return []
        if type(message) is TransferReq:
            if message.to != self.name or message.sender[0] == self.name:
                return []
            data: Delta | Snapshot
            generation = gens.fulfilling(self.generations, message.clock)
            if generation is not None:
                data = generation.extract(message.sender, message.clock)
            else:
                data = self.state.extract(message.sender, message.clock)
            self.transfers_sent += 1
            return [
                (
                    message.node,
                    encode_transfer_ack(self.replica_id, message.sender[0], message.ref, data),
                )
            ]
        if type(message) is TransferAck:
            if message.to != self.name:
                return []
            peer = self.peers.get(message.sender[0])
            if peer is None or peer.vsn != message.sender[1]:
                return []  # from an incarnation we do not (or no longer) know
            self._merge(message.data)
            if type(message.data) is Delta:
                self._push_generation(message.data)
            else:
                self.generations = []
            return []
        if type(message) is Permdown:
            peer = self.peers.get(message.sender[0])
            if peer is not None and peer.vsn == message.sender[1]:
                log.info("%s: peer %s shut down", self.name, peer)
                self._down(peer)
                self._permdown(peer)
                if len(self._gone) >= _GONE_LIMIT:
                    del self._gone[next(iter(self._gone))]
                self._gone[message.sender] = now
            return []
        raise TypeError(f"not a tracker message: {message!r}")  # pragma: no cover

    def _merge(self, data: Delta | Snapshot) -> None:
        joins, leaves = self.state.merge(data)
        if joins or leaves:
            self._report(joins, leaves)

    def _push_generation(self, delta: Delta) -> None:
        self.generations = gens.push(
            self.generations, delta, self.state.delta, self.options.max_delta_sizes
        )

    # -- inspection ---------------------------------------------------------------------

    def peer_status(self) -> dict[str, str]:
        return {name: peer.status for name, peer in self.peers.items()}

    def stats(self) -> dict[str, Any]:
        return {
            "entries": self.state.size(),
            "topics": len(self.state.topics),
            "peers": self.peer_status(),
            "generation_sizes": [g.size() for g in self.generations],
            "transfers_requested": self.transfers_requested,
            "transfers_sent": self.transfers_sent,
        }
