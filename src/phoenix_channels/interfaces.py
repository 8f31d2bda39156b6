"""What the lower layers need of the endpoint, as a protocol (they never import it).

Sockets, channels and presence hold their endpoint typed as :class:`EndpointAPI`:
the node's broadcast API, its PubSub, and the registry that sockets report to.
The :class:`~phoenix_channels.Endpoint` implements it; so can a test double.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

from .pubsub import PubSub
from .registry import ConnectionRegistry

__all__ = ["EndpointAPI"]


class EndpointAPI(Protocol):
    """The endpoint as sockets, channels and presence see it."""

    @property
    def pubsub(self) -> PubSub: ...

    @property
    def registry(self) -> ConnectionRegistry: ...

    async def broadcast(self, topic: str, event: str, payload: Any) -> None: ...

    async def broadcast_from(
        self, from_: Hashable, topic: str, event: str, payload: Any
    ) -> None: ...

    def local_broadcast(self, topic: str, event: str, payload: Any) -> None: ...
