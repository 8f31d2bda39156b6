"""Topic patterns to targets: which channel class serves a topic a client joins.

``"room:lobby"`` matches itself, ``"room:*"`` any topic with that prefix; the
first declared pattern that matches wins (Phoenix's ``channel "room:*"``).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from ..errors import ConfigurationError

__all__ = ["Router"]

T = TypeVar("T")


class Router(Generic[T]):
    """Ordered topic patterns: ``"room:lobby"`` matches itself, ``"room:*"`` any suffix.

    The first declared pattern that matches wins. ``*`` may only end a pattern.
    """

    __slots__ = ("_routes",)

    def __init__(self, routes: dict[str, T] | list[tuple[str, T]]) -> None:
        pairs = list(routes.items()) if isinstance(routes, dict) else list(routes)
        self._routes: list[tuple[str, bool, T]] = []
        for pattern, target in pairs:
            if not isinstance(pattern, str):
                raise ConfigurationError(f"topic pattern must be a str, got {pattern!r}")
            star = pattern.find("*")
            if star != -1 and star != len(pattern) - 1:
                raise ConfigurationError(
                    f"topic pattern {pattern!r}: '*' is only allowed as the last character"
                )
            wildcard = star != -1
            self._routes.append((pattern[:-1] if wildcard else pattern, wildcard, target))

    def match(self, topic: str) -> T | None:
        for prefix, wildcard, target in self._routes:
            if topic == prefix or (wildcard and topic.startswith(prefix)):
                return target
        return None

    def __len__(self) -> int:
        return len(self._routes)
