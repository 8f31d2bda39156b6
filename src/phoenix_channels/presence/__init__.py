"""Presence: who is in each topic, on every node, kept right under failures.

Two layers, as in Phoenix:

* :class:`Tracker`: a replicated, eventually consistent registry of
  ``(topic, owner, key) -> meta`` with one replica per node, gossiped over
  PubSub (any adapter). Usable on its own, for service discovery say.
* :class:`Presence`: the channel-facing API on top, with the
  ``presence_state`` / ``presence_diff`` payloads the Phoenix JS client's
  ``Presence`` helper reads.

Inside: :mod:`.state` (the CRDT), :mod:`.clock`, :mod:`.generations`,
:mod:`.shard` (the replication protocol) and :mod:`.wire` (its messages)
hold no I/O; :mod:`.tracker` and :mod:`.api` run them on asyncio.
"""

from .api import Presence, group
from .shard import AlreadyTrackedError, NotTrackedError, TrackerOptions
from .tracker import Diff, Tracker
from .wire import ReplicationError

__all__ = [
    "AlreadyTrackedError",
    "Diff",
    "NotTrackedError",
    "Presence",
    "ReplicationError",
    "Tracker",
    "TrackerOptions",
    "group",
]
