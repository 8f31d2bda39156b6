"""Which topics have history: topic patterns from the routes, looked up once per topic.

The endpoint collects ``(pattern, History)`` pairs from its sockets' routes
(a channel with a ``history`` attribute) and registers them on its PubSub,
so anything that broadcasts through that PubSub (the endpoint, a plain
script building the same endpoint) assigns positions on the same topics.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from ..errors import BroadcastError, ConfigurationError, UsageError
from ..protocol.messages import Broadcast
from . import History, HistoryStore, Position

__all__ = ["HistoryPolicy", "append", "read_stored", "store_for"]

_CACHE_LIMIT = 65536  # topics remembered; beyond, the cache starts over (bounded memory)


class HistoryPolicy:
    """Ordered patterns (``"room:*"`` or an exact topic); the first that matches wins."""

    __slots__ = ("_cache", "_routes")

    def __init__(self, routes: Iterable[tuple[str, History | None]] = ()) -> None:
        self._routes: list[tuple[str, bool, History | None]] = []
        self._cache: dict[str, History | None] = {}
        self.extend(routes)

    def extend(self, routes: Iterable[tuple[str, History | None]]) -> None:
        """Add patterns after those already there; ``None``: a route without history.

        Routes without history are kept too, so a topic gets the answer of
        the route that serves it (the first match, as in the socket).
        """
        for pattern, history in routes:
            if type(pattern) is not str or "*" in pattern[:-1]:
                raise ConfigurationError(
                    f"history topic pattern {pattern!r}: '*' may only end the pattern"
                )
            if history is not None and type(history) is not History:
                raise ConfigurationError(
                    f"history for {pattern!r} must be a History(...), got {history!r}"
                )
            wildcard = pattern.endswith("*")
            self._routes.append((pattern[:-1] if wildcard else pattern, wildcard, history))
        self._cache.clear()

    def __bool__(self) -> bool:
        """Whether any route has history."""
        return any(history is not None for _p, _w, history in self._routes)

    def __call__(self, topic: str) -> History | None:
        cache = self._cache
        try:
            return cache[topic]
        except KeyError:
            pass
        found = None
        for prefix, wildcard, history in self._routes:
            if topic == prefix or (wildcard and topic.startswith(prefix)):
                found = history
                break
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[topic] = found
        return found


def store_for(adapter: Any) -> HistoryStore:
    """The history store of a PubSub adapter (its ``history_store()``), or a clear error."""
    make = getattr(adapter, "history_store", None)
    if make is None:
        raise ConfigurationError(
            f"a channel declares history, but the {type(adapter).__name__} has no history "
            "store; use the local, Redis or NATS adapter, or set pubsub.history_store"
        )
    store: HistoryStore = make()
    return store


async def append(
    store: HistoryStore | None, topic: str, message: Broadcast, history: History, from_: Hashable
) -> Broadcast | None:
    """``store.append``, with the store's own failures mapped to BroadcastError."""
    assert store is not None  # set with the policy
    try:
        return await store.append(topic, message, history, from_)
    except (BroadcastError, UsageError):
        raise
    except Exception as exc:
        raise BroadcastError(f"storing the broadcast on {topic!r} failed: {exc}") from exc


async def read_stored(
    store: HistoryStore | None,
    history: History | None,
    topic: str,
    after: Position | str | None,
) -> list[Broadcast]:
    """What ``PubSub.history`` returns: stored broadcasts after ``after`` (same epoch)."""
    if history is None or store is None:
        raise UsageError(f"topic {topic!r} has no history; declare `history = History(...)`")
    if isinstance(after, str):
        parsed = Position.parse(after)
        if parsed is None:
            raise UsageError(f"{after!r} is not a position ('<epoch>:<offset>')")
        after = parsed
    found = await store.read(topic, history, 0)
    if after is None or after.epoch != found.epoch:
        return found.messages
    mark = after.offset
    return [m for m in found.messages if int((m.ref or ":0").rpartition(":")[2]) > mark]
