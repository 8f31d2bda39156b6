"""Which topics have history: topic patterns from the routes, looked up once per topic.

The endpoint collects ``(pattern, History)`` pairs from its sockets' routes
(a channel with a ``history`` attribute) and registers them on its PubSub,
so anything that broadcasts through that PubSub (the endpoint, a plain
script building the same endpoint) assigns positions on the same topics.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import ConfigurationError
from . import History

__all__ = ["HistoryPolicy"]

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
