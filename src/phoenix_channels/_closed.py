"""``Socket.closed`` / ``RawSocket.closed``: a flag, callable for one release.

Sockets used to have a method ``closed(reason)`` that transports call when
the client is gone, where every other class (sessions, PubSub adapters) has
a ``closed`` attribute saying whether it has ended. The method is now
``connection_lost(reason)`` (the name asyncio gives the same event) and
``closed`` is a read-only property like the others. So that transports
written against the old name keep working, the property's value is truthy
when the connection has ended and, called, forwards to ``connection_lost``
with a :class:`DeprecationWarning`; in the next major release it becomes a
plain ``bool``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["ClosedFlag"]


class ClosedFlag:
    """Truthy once the connection has ended; calling it is the deprecated ``connection_lost``."""

    __slots__ = ("_lost", "_value")

    def __init__(self, value: bool, lost: Callable[[Any], None]) -> None:
        self._value = value
        self._lost = lost

    def __bool__(self) -> bool:
        return self._value

    def __eq__(self, other: object) -> bool:
        return self._value == other

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return repr(self._value)

    def __call__(self, reason: Any = "shutdown:closed") -> None:
        warnings.warn(
            "socket.closed(reason) is deprecated: call socket.connection_lost(reason); "
            "socket.closed is now a flag (True once the connection has ended)",
            DeprecationWarning,
            stacklevel=2,
        )
        self._lost(reason)
