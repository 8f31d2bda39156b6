"""Who is here: the JS client's ``Presence`` helper, with the same sync rules.

A Phoenix Presence server pushes ``presence_state`` (everyone, by key, each
with a list of ``metas``: one per connection, told apart by ``phx_ref``)
after every join, and broadcasts ``presence_diff`` (``joins`` and ``leaves``)
as people come and go. :class:`Presence` keeps the resulting state for one
channel::

    presence = Presence(channel)
    presence.on_sync(lambda: print(presence.list(lambda key, p: key)))
    await channel.join()

The rules, as in the JS helper (``presence.md`` §5):

* until the first ``presence_state`` after a (re)join, diffs are buffered;
  the state, then the buffered diffs in order, are applied when it comes;
* syncing a state computes the joins and leaves against the current state
  (matching metas by ``phx_ref`` only) and applies them as a diff;
* a diff applies its joins first (the current metas that the join does not
  repeat are kept, in front), then its leaves (metas removed by ``phx_ref``;
  a key with no metas left is removed; leaves of unknown keys are ignored).
  An update is a join and a leave of the same key, so it ends with the new
  meta only.

:func:`sync_state`, :func:`sync_diff` and :func:`list_presences` are the same
rules without a channel, for state kept elsewhere.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .channel import Channel

__all__ = ["Presence", "PresenceState", "list_presences", "sync_diff", "sync_state"]

log = logging.getLogger("phoenix_channels.client")

PresenceState = dict[str, dict[str, Any]]
"""``{key: {"metas": [{"phx_ref": ..., ...}, ...], ...}}``"""

OnJoin = Callable[[str, dict[str, Any] | None, dict[str, Any]], object]
OnLeave = Callable[[str, dict[str, Any], dict[str, Any]], object]
T = TypeVar("T")

_MAX_PENDING_DIFFS = 10_000


def _refs(presence: Mapping[str, Any]) -> list[Any]:
    return [meta.get("phx_ref") for meta in presence.get("metas", ())]


def sync_state(
    state: Mapping[str, Any],
    new_state: Mapping[str, Any],
    on_join: OnJoin | None = None,
    on_leave: OnLeave | None = None,
) -> PresenceState:
    """A new state equal to ``new_state``, reached from ``state`` through joins and leaves.

    ``on_join(key, current, joined)`` and ``on_leave(key, current, left)`` are
    called for each key that gains or loses metas (``current`` is None for a
    new key). ``state`` is not modified.
    """
    current_state: PresenceState = copy.deepcopy(dict(state))
    joins: PresenceState = {}
    leaves: PresenceState = {}
    for key, presence in current_state.items():
        if key not in new_state:
            leaves[key] = presence
    for key, new_presence in new_state.items():
        current = current_state.get(key)
        if current is None:
            joins[key] = new_presence
            continue
        new_refs, cur_refs = _refs(new_presence), _refs(current)
        joined = [m for m in new_presence.get("metas", ()) if m.get("phx_ref") not in cur_refs]
        left = [m for m in current.get("metas", ()) if m.get("phx_ref") not in new_refs]
        if joined:
            joins[key] = {**new_presence, "metas": joined}
        if left:
            leaves[key] = {**copy.deepcopy(current), "metas": left}
    return sync_diff(current_state, {"joins": joins, "leaves": leaves}, on_join, on_leave)


def sync_diff(
    state: PresenceState,
    diff: Mapping[str, Any],
    on_join: OnJoin | None = None,
    on_leave: OnLeave | None = None,
) -> PresenceState:
    """Apply a ``{"joins": ..., "leaves": ...}`` diff to ``state`` (in place) and return it."""
    joins = copy.deepcopy(diff.get("joins") or {})
    leaves = copy.deepcopy(diff.get("leaves") or {})
    for key, new_presence in joins.items():
        current = state.get(key)
        state[key] = copy.deepcopy(new_presence)
        if current is not None:
            joined_refs = _refs(state[key])
            kept = [m for m in current.get("metas", ()) if m.get("phx_ref") not in joined_refs]
            state[key]["metas"] = kept + list(state[key].get("metas", ()))
        if on_join is not None:
            on_join(key, current, new_presence)
    for key, left_presence in leaves.items():
        current = state.get(key)
        if current is None:
            continue
        removed = _refs(left_presence)
        current["metas"] = [m for m in current.get("metas", ()) if m.get("phx_ref") not in removed]
        if on_leave is not None:
            on_leave(key, current, left_presence)
        if not current["metas"]:
            del state[key]
    return state


def list_presences(
    presences: Mapping[str, Any], chooser: Callable[[str, Any], T] | None = None
) -> list[Any]:
    """``chooser(key, presence)`` for every key (the presences themselves by default)."""
    if chooser is None:
        return list(presences.values())
    return [chooser(key, presence) for key, presence in presences.items()]


class Presence:
    """The presence state of one channel, kept in sync from its presence events.

    Create it before joining, so the first ``presence_state`` is not missed.
    ``on_join``, ``on_leave`` and ``on_sync`` set the callbacks (one of each,
    as in JS; they also work as decorators). Pending diffs are bounded
    (10,000, the oldest dropped) for a server that never sends a state.
    """

    def __init__(
        self,
        channel: Channel,
        *,
        state_event: str = "presence_state",
        diff_event: str = "presence_diff",
    ) -> None:
        self.channel = channel
        self.state: PresenceState = {}
        self.pending_diffs: deque[Mapping[str, Any]] = deque(maxlen=_MAX_PENDING_DIFFS)
        self.join_ref: str | None = None
        self._on_join: OnJoin | None = None
        self._on_leave: OnLeave | None = None
        self._on_sync: Callable[[], object] | None = None
        channel.on(state_event, self._got_state)
        channel.on(diff_event, self._got_diff)

    def on_join(self, callback: OnJoin) -> OnJoin:
        """``callback(key, current, joined)`` for each key that gains metas."""
        self._on_join = callback
        return callback

    def on_leave(self, callback: OnLeave) -> OnLeave:
        """``callback(key, current, left)`` for each key that loses metas."""
        self._on_leave = callback
        return callback

    def on_sync(self, callback: Callable[[], object]) -> Callable[[], object]:
        """``callback()`` after each state or diff has been applied."""
        self._on_sync = callback
        return callback

    def list(self, chooser: Callable[[str, Any], T] | None = None) -> list[Any]:
        """``chooser(key, presence)`` for every key present (the presences by default)."""
        return list_presences(self.state, chooser)

    def in_pending_sync_state(self) -> bool:
        """True until the first ``presence_state`` of the channel's current join arrived."""
        return self.join_ref is None or self.join_ref != self.channel.join_ref

    def _got_state(self, new_state: Any) -> None:
        if not isinstance(new_state, Mapping):
            log.warning("ignoring a presence state that is not an object: %r", new_state)
            return
        self.join_ref = self.channel.join_ref
        self.state = sync_state(self.state, new_state, self._on_join, self._on_leave)
        while self.pending_diffs:
            self.state = sync_diff(
                self.state, self.pending_diffs.popleft(), self._on_join, self._on_leave
            )
        if self._on_sync is not None:
            self._on_sync()

    def _got_diff(self, diff: Any) -> None:
        if not isinstance(diff, Mapping):
            log.warning("ignoring a presence diff that is not an object: %r", diff)
            return
        if self.in_pending_sync_state():
            self.pending_diffs.append(diff)
            return
        self.state = sync_diff(self.state, diff, self._on_join, self._on_leave)
        if self._on_sync is not None:
            self._on_sync()
