"""One-at-a-time processing of messages, eager when nothing waits.

The base of :class:`~phoenix_channels.Channel` and
:class:`~phoenix_channels.RawSocket`: messages queue in a mailbox (created
on demand) and run through ``_dispatch`` strictly in order. The first runs
at once, inside ``_enqueue``; a task exists only while a callback waits
(see :mod:`phoenix_channels._eager`), so an idle owner costs no task and no
queue.

The kinds of message are named below (``IN``, ``INFO``, ...): plain ``str``
constants, as cheap to compare as the literals they stand for.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Final, Literal

from . import _eager

__all__ = ["CLOSE", "IN", "INFO", "JOIN", "LEAVE", "OUT", "STOP", "TERMINATE", "Kind", "Mailbox"]

IN: Final = "in"  # a client message: Channel.handle_in, or a RawSocket frame
OUT: Final = "out"  # an intercepted broadcast for Channel.handle_out
INFO: Final = "info"  # a message for handle_info
JOIN: Final = "join"  # the phx_join that starts a channel
LEAVE: Final = "leave"  # the client's phx_leave
STOP: Final = "stop"  # Channel.stop(reason), or a callback's stop(...)
CLOSE: Final = "close"  # the connection ended: the channel finishes
TERMINATE: Final = "terminate"  # a RawSocket's connection ended

Kind = Literal["in", "out", "info", "join", "leave", "stop", "close", "terminate"]


class Mailbox:
    __slots__ = ("_busy", "_mailbox", "_task")

    def __init__(self) -> None:
        self._mailbox: deque[tuple[Kind, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False

    def _accepting(self) -> bool:
        """Whether messages are still taken (False once the owner is ending)."""
        raise NotImplementedError

    async def _dispatch(self, kind: Kind, value: Any) -> None:
        raise NotImplementedError

    async def _crash(self, exc: Exception) -> None:
        raise NotImplementedError

    def _enqueue(self, kind: Kind, value: Any) -> None:
        if not self._accepting():
            return
        box = self._mailbox
        if box is None:
            box = self._mailbox = deque()
        box.append((kind, value))
        if not self._busy:
            self._busy = True
            self._task = _eager.start(self._run())

    async def _run(self) -> None:
        box = self._mailbox
        try:
            while box and self._accepting():
                kind, value = box.popleft()
                try:
                    await self._dispatch(kind, value)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._crash(exc)
        finally:
            self._task = None
            self._busy = False
            if self._mailbox is box and not box:
                self._mailbox = None
