"""The connection registry: what is open on this endpoint, and who reports it.

The endpoint owns one :class:`ConnectionRegistry` (``endpoint.registry``);
transports and sockets report to it, and nobody else keeps these books:

* transports: ``opened(conn)`` when a connection starts counting for the
  idle sweeper and the drain, ``closed(conn)`` when it is gone;
* sockets: ``socket_opened(sid, address, on_id_message, transport)`` when a
  socket goes live (it is subscribed to its id, so a ``disconnect`` broadcast
  reaches it, counted against its peer address and among its transport's
  open sockets, :data:`~phoenix_channels.telemetry.TRANSPORTS`),
  ``socket_closed(...)`` with the same values when it ends;
* long polling: ``session_opened(session)``, ``session_closed(session)``,
  ``session(id)``.

The endpoint reads it for the per-address limit (:meth:`full`), the drain
(:meth:`take`) and the idle sweep (:meth:`sweep_idle`). Nothing here runs
per message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from .telemetry import TransportCounts, counts_for

__all__ = ["Connection", "ConnectionRegistry", "Session"]


class Connection(Protocol):
    """What the registry keeps of each open connection, whatever its transport."""

    last_seen: float
    timeout: float

    def idle_close(self) -> None: ...

    def drain(self) -> None: ...


class Session(Connection, Protocol):
    """A long-poll session: a connection found again by its id on every request."""

    id: str


class _Subscriptions(Protocol):
    """The part of :class:`~phoenix_channels.pubsub.PubSub` the registry uses."""

    def subscribe(self, topic: str, callback: Callable[[Any], None]) -> None: ...

    def unsubscribe(self, topic: str, subscriber: Hashable) -> None: ...


class ConnectionRegistry:
    """Open connections, long-poll sessions and per-address counts of one endpoint."""

    __slots__ = ("_pubsub", "addresses", "connections", "max_per_address", "sessions")

    def __init__(self, pubsub: _Subscriptions, max_per_address: int | None = None) -> None:
        self._pubsub = pubsub
        self.max_per_address = max_per_address
        self.connections: set[Connection] = set()
        self.sessions: dict[str, Any] = {}  # long-poll session id -> session
        self.addresses: dict[str, int] = {}  # peer address -> open sockets

    # -- transports ---------------------------------------------------------------------

    def opened(self, conn: Connection) -> None:
        """``conn`` is open: the idle sweeper watches it and the drain closes it."""
        self.connections.add(conn)

    def closed(self, conn: Connection) -> None:
        """``conn`` is gone (safe to call more than once)."""
        self.connections.discard(conn)

    # -- sockets ----------------------------------------------------------------------------

    def counted(self, address: str | None) -> str | None:
        """The address to count a new socket under: None when no limit is set."""
        return address if self.max_per_address is not None else None

    def full(self, address: str | None) -> bool:
        """Whether ``address`` already has ``max_per_address`` sockets open."""
        limit = self.max_per_address
        return limit is not None and address is not None and self.addresses.get(address, 0) >= limit

    def socket_opened(
        self,
        sid: str | None,
        address: str | None,
        on_id_message: Callable[[Any], None] | None,
        transport: str | None,
    ) -> TransportCounts:
        """A socket went live: subscribe it to its id, count it against its address.

        ``on_id_message`` receives what is broadcast to ``sid`` (None when ``sid`` is None).
        Returns the running totals of ``transport`` (named so), where the socket counts
        its messages and which :meth:`socket_closed` takes back.
        """
        counts = counts_for(transport)
        counts.sockets += 1
        if sid is not None and on_id_message is not None:
            self._pubsub.subscribe(sid, on_id_message)
        if address is not None:
            self.addresses[address] = self.addresses.get(address, 0) + 1
        return counts

    def socket_closed(
        self,
        sid: str | None,
        address: str | None,
        on_id_message: Callable[[Any], None] | None,
        counts: TransportCounts,
    ) -> None:
        """The other half of :meth:`socket_opened`, with the same values (and the totals
        it returned), once."""
        counts.sockets -= 1
        if sid is not None and on_id_message is not None:
            self._pubsub.unsubscribe(sid, on_id_message)
        if address is not None:
            left = self.addresses.get(address, 0) - 1
            if left > 0:
                self.addresses[address] = left
            else:
                self.addresses.pop(address, None)

    # -- long-poll sessions -------------------------------------------------------------

    def session_opened(self, session: Session) -> None:
        self.sessions[session.id] = session
        self.connections.add(session)

    def session_closed(self, session: Session) -> None:
        self.connections.discard(session)
        self.sessions.pop(session.id, None)

    def session(self, session_id: str) -> Any:
        """The live session with this id on this endpoint, or None."""
        return self.sessions.get(session_id)

    # -- the endpoint's side ------------------------------------------------------------

    def take(self, count: int) -> list[Connection]:
        """Up to ``count`` open connections, removed from the registry (to drain them)."""
        batch = list(self.connections)[:count]
        for conn in batch:
            self.connections.discard(conn)
        return batch

    async def sweep_idle(self, interval: float = 1.0) -> None:
        """Close connections silent for longer than their timeout; runs until cancelled."""
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in [c for c in self.connections if now - c.last_seen > c.timeout]:
                conn.idle_close()
