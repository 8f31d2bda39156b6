"""The topic table of one socket: its channel entries, and what to do with each inbound message.

A connection keeps at most one *entry* per topic: the channel joined on it,
the ``join_ref`` its join carried, and its state. :meth:`TopicTable.classify`
reads one decoded message and says what to do with it, following Phoenix's
rules in this order:

1. ``phoenix``/``heartbeat`` is answered ``ok`` before anything else.
2. ``phx_join`` on a topic without an entry is routed (:mod:`.router`; no route: "unmatched
   topic"; too many entries: "too many channels joined"), else joined.
3. ``phx_join`` on a topic with an entry replaces it (a duplicate join: the
   old channel is shut down and gets a ``phx_close`` after the new reply).
4. Other messages to a topic with an entry are forwarded when their
   ``join_ref`` is null or equal to the entry's; otherwise they are stale and
   dropped without a reply. A forwarded ``phx_leave`` marks the entry leaving.
5. ``phx_leave`` to a topic without an entry is answered ``ok``.
6. Anything else to a topic without an entry is answered "unmatched topic".

Entry states move only along this table (see :mod:`.transitions`); anything
else raises :class:`~phoenix_channels.errors.InvalidTransition` naming the
state and event::

    state      event        next
    joining    joined       joined
    joining    removed      (gone)
    joined     leave        leaving
    joined     removed      (gone)
    leaving    removed      (gone)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from ..errors import UsageError
from .messages import HEARTBEAT, PHX_JOIN, PHX_LEAVE, Message, Ref
from .router import Router
from .transitions import advance

__all__ = ["Action", "Decision", "Entry", "EntryState", "TopicTable"]

T = TypeVar("T")

HEARTBEAT_TOPIC = "phoenix"


class EntryState(Enum):
    JOINING = "joining"
    JOINED = "joined"
    LEAVING = "leaving"


_TRANSITIONS = {
    (EntryState.JOINING, "joined"): EntryState.JOINED,
    (EntryState.JOINED, "leave"): EntryState.LEAVING,
}


class Entry:
    """One topic's channel on one socket. ``channel`` is whatever runs it."""

    __slots__ = ("channel", "join_ref", "state", "topic")

    def __init__(self, topic: str, join_ref: Ref, channel: Any) -> None:
        self.topic = topic
        self.join_ref = join_ref
        self.channel = channel
        self.state = EntryState.JOINING

    def advance(self, event: str) -> None:
        self.state = advance(_TRANSITIONS, self.state, event, f"channel entry for {self.topic!r}")

    def __repr__(self) -> str:
        return f"<Entry {self.topic!r} join_ref={self.join_ref!r} {self.state.value}>"


class Action(Enum):
    HEARTBEAT = "heartbeat"  # reply ok {} with join_ref null
    JOIN = "join"  # start a channel (entry may hold a channel to replace)
    TOO_MANY = "too_many"  # reply error "too many channels joined"
    FORWARD = "forward"  # give the message to the entry's channel
    LEAVE = "leave"  # forward a phx_leave; the entry is now leaving
    LEAVE_UNJOINED = "leave_unjoined"  # reply ok {} echoing the message's join_ref
    UNMATCHED = "unmatched"  # reply error "unmatched topic" with join_ref null
    STALE = "stale"  # drop without reply


@dataclass(slots=True)
class Decision(Generic[T]):
    action: Action
    entry: Entry | None = None  # the existing entry (FORWARD, LEAVE, JOIN replacing)
    route: T | None = None  # the routed target (JOIN)


class TopicTable(Generic[T]):
    """The entries of one socket, and the decision for each inbound message."""

    __slots__ = ("entries", "max_channels", "router")

    def __init__(self, router: Router[T], max_channels: int) -> None:
        self.router = router
        self.max_channels = max_channels
        self.entries: dict[str, Entry] = {}

    def classify(self, msg: Message) -> Decision[T]:
        topic, event = msg.topic, msg.event
        if event == HEARTBEAT and topic == HEARTBEAT_TOPIC:
            return Decision(Action.HEARTBEAT)
        entry = self.entries.get(topic)
        if event == PHX_JOIN:
            route = self.router.match(topic)
            if route is None:
                return Decision(Action.UNMATCHED)
            if entry is None and len(self.entries) >= self.max_channels:
                return Decision(Action.TOO_MANY)
            return Decision(Action.JOIN, entry, route)
        if entry is None:
            if event == PHX_LEAVE:
                return Decision(Action.LEAVE_UNJOINED)
            return Decision(Action.UNMATCHED)
        if msg.join_ref is not None and msg.join_ref != entry.join_ref:
            return Decision(Action.STALE, entry)
        if event == PHX_LEAVE:
            if entry.state is EntryState.JOINED:
                entry.advance("leave")
            return Decision(Action.LEAVE, entry)
        return Decision(Action.FORWARD, entry)

    def add(self, topic: str, join_ref: Ref, channel: Any) -> Entry:
        if topic in self.entries:
            raise UsageError(f"topic {topic!r} already has an entry; remove it first")
        entry = self.entries[topic] = Entry(topic, join_ref, channel)
        return entry

    def remove(self, entry: Entry) -> bool:
        """Remove ``entry`` if it is still the topic's entry; says whether it was."""
        if self.entries.get(entry.topic) is entry:
            del self.entries[entry.topic]
            return True
        return False
