"""A wake-up call for tasks waiting on a condition: a lighter :class:`asyncio.Event`.

An idle channel or connection holds one of these instead of an Event (which
carries a deque from the start): nothing is allocated until a task waits.
It is edge-triggered: :meth:`Wakeup.set` wakes the tasks waiting *now*, so a
waiter checks its condition first and waits only if it does not hold (on one
event loop nothing happens between the check and the wait).
"""

from __future__ import annotations

import asyncio

__all__ = ["Wakeup"]


class Wakeup:
    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] | None = None

    async def wait(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = [future]
        else:
            self._waiters.append(future)
        try:
            await future
        finally:
            if self._waiters is not None and future in self._waiters:
                self._waiters.remove(future)
                if not self._waiters:
                    self._waiters = None

    def set(self) -> None:
        waiters, self._waiters = self._waiters, None
        for future in waiters or ():
            if not future.done():
                future.set_result(None)
