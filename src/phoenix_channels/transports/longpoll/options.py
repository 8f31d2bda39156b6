"""The long-polling options of a socket class (``longpoll = LongPoll(...)``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import ConfigurationError

if TYPE_CHECKING:
    from ...handshake import SocketClass

__all__ = ["LongPoll", "longpoll_options"]


@dataclass(frozen=True, slots=True)
class LongPoll:
    """Long-polling options of a socket: ``longpoll = LongPoll(window=10.0)`` on the class.

    ``longpoll = True`` means these defaults (Phoenix's):

    * ``window``: seconds a GET waits for frames (10);
    * ``pubsub_timeout``: seconds a request waits for a session on another
      node to answer (2);
    * ``max_age``: seconds a session token stays valid (14 days);
    * ``max_outbox``: frames a session holds for a client that is not
      polling; past it the session is closed as a slow consumer (10,000);
    * ``max_body``: bytes of one POST body (16 MiB).
    """

    window: float = 10.0
    pubsub_timeout: float = 2.0
    max_age: float = 14 * 86_400.0
    max_outbox: int = 10_000
    max_body: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.window <= 0 or self.pubsub_timeout <= 0 or self.max_age <= 0:
            raise ConfigurationError("LongPoll window, pubsub_timeout and max_age must be > 0")
        if self.max_outbox < 1 or self.max_body < 1024:
            raise ConfigurationError("LongPoll max_outbox >= 1 and max_body >= 1024 required")


def longpoll_options(socket_cls: SocketClass) -> LongPoll | None:
    """The long-poll options of a socket class (its ``longpoll`` attribute), or None."""
    value = getattr(socket_cls, "longpoll", False)
    if value is True:
        return LongPoll()
    if isinstance(value, LongPoll):
        return value
    return None
