"""History and recovery: positions for broadcasts on chosen topics, and replay on rejoin.

A topic has history when the channel that serves it declares one::

    class RoomChannel(Channel):
        history = History(size=100, ttl=300.0)   # the last 100 messages, for 5 minutes

Every broadcast through the PubSub on such a topic gets one
:class:`Position` (an *epoch*, which changes when the stored history is
lost or reset, and an *offset*, +1 per message on the topic), assigned once
by the history store, and stored there. The position travels to clients in
the frame's ``ref`` as ``"<epoch>:<offset>"``: a string with a colon, so it
never looks like the integer refs the JS client uses for its own messages.

A client that sends its last position under :data:`RECOVER_KEY` in its join
payload gets, right after the join reply, one :data:`RECOVERY_EVENT` push
telling the outcome (:class:`Outcome`), then every message it missed, in
order and once, then live messages. See ``docs/recovery.md``.

Topics without history cost what they cost before: the PubSub asks the
policy only when one was registered, and caches the answer per topic.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ConfigurationError
from ..protocol.messages import Broadcast

__all__ = [
    "RECOVERY_EVENT",
    "RECOVER_KEY",
    "History",
    "HistorySlice",
    "HistoryStore",
    "Outcome",
    "Position",
    "Reason",
]

RECOVER_KEY = "phx_recover"
"""The reserved join-payload key a client sends its last position under (or null)."""

RECOVERY_EVENT = "phx_recovery"
"""The event pushed once after the join reply when the client sent :data:`RECOVER_KEY`."""

Reason = str
"""Why a recovery was not possible; one of :data:`REASONS`."""

REASONS = (
    "no_position",
    "too_old",
    "epoch_changed",
    "not_found",
    "history_off",
    "invalid_position",
)

_EPOCH_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class History:
    """How much of a topic's broadcasts to keep: at most ``size`` messages, for ``ttl`` seconds.

    ``ttl=None`` keeps messages until ``size`` newer ones push them out.
    """

    size: int = 100
    ttl: float | None = 300.0

    def __post_init__(self) -> None:
        if type(self.size) is not int or not 1 <= self.size <= 1_000_000:
            raise ConfigurationError(
                f"History(size=...) must be an int in 1..1000000, got {self.size!r}"
            )
        ttl = self.ttl
        if ttl is not None and (
            not isinstance(ttl, int | float) or isinstance(ttl, bool) or not ttl > 0
        ):
            raise ConfigurationError(
                f"History(ttl=...) must be a positive number of seconds or None, got {ttl!r}"
            )


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a message sits in its topic's history: ``"<epoch>:<offset>"`` on the wire."""

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def parse(cls, value: Any) -> Position | None:
        """The position in ``value`` (a ``"<epoch>:<offset>"`` str), or None if it is not one."""
        if type(value) is not str or len(value) > 90:
            return None
        epoch, sep, offset = value.rpartition(":")
        if not sep or not _EPOCH_RE.match(epoch) or not offset.isdigit() or not offset.isascii():
            return None
        return cls(epoch, int(offset))


@dataclass(frozen=True, slots=True)
class HistorySlice:
    """What a store holds for a topic: its epoch, newest offset, and messages after a point.

    ``first`` is the offset of the oldest message still stored (``top + 1``
    when none is), so a reader can tell whether messages it wants were lost.
    """

    epoch: str
    top: int
    first: int
    messages: list[Broadcast] = field(default_factory=list)

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.top)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a rejoin got: the payload of the :data:`RECOVERY_EVENT` push.

    ``recovered`` is True when every message after ``requested`` follows
    (``replayed`` of them); otherwise ``reason`` says why nothing was replayed.
    ``position`` is where the client stands once the replay is done.
    """

    recovered: bool
    reason: Reason | None
    position: Position | None
    replayed: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "recovered": self.recovered,
            "reason": self.reason,
            "position": None if self.position is None else str(self.position),
            "replayed": self.replayed,
        }


class HistoryStore(Protocol):
    """Assigns positions and keeps messages; one per PubSub (memory, Redis, NATS)."""

    async def append(
        self, topic: str, broadcast: Broadcast, history: History, from_: Hashable = None
    ) -> Broadcast | None:
        """Store ``broadcast``; return it with its position in ``ref`` for the PubSub to publish.

        A store on a message engine publishes it itself, in the same atomic
        step, to every node this one included (skipping ``from_`` here), and
        returns None.
        """
        ...

    async def read(self, topic: str, history: History, after: int | None) -> HistorySlice:
        """The topic's epoch and bounds, and its stored messages with offset > ``after``.

        ``after=None`` reads no messages (bounds only).
        """
        ...

    async def reset(self) -> None:
        """Forget everything and start a new epoch."""
        ...
