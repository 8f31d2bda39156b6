"""Run a coroutine at once, and give it a task only if it has to wait.

Most channel callbacks never wait for anything (an echo, a push, a local
broadcast), so creating a task per message would cost more than the work.
:func:`start` steps the coroutine synchronously; only when it suspends on a
future does a task take over, resuming it where it stopped. This is what
Python 3.12's eager tasks do, for 3.11 too.

Every task :func:`start` creates is held here until it ends (the event loop
keeps only weak references to tasks), and an exception that ends one is
logged, so callers that start work and move on lose neither.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["start"]

log = logging.getLogger("phoenix_channels")

_running: set[asyncio.Task[None]] = set()


def start(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first suspends; then continue it in a task (returned).

    Like a task, the coroutine runs in a copy of the caller's context: a
    ContextVar it sets (asgiref's, OpenTelemetry's) stays with it, and never
    leaks into the transport callback that started it, nor into the next one.
    """
    context = contextvars.copy_context()
    try:
        yielded = context.run(coro.send, None)
    except StopIteration:
        return None
    task = asyncio.get_running_loop().create_task(_resume(coro, yielded), context=context)
    _running.add(task)
    task.add_done_callback(_ended)
    return task


def _ended(task: asyncio.Task[None]) -> None:
    _running.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("a started coroutine failed: %r", exc, exc_info=exc)


async def _resume(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    while True:
        value: Any = None
        error: BaseException | None = None
        try:
            if yielded is None:  # a bare yield, as in asyncio.sleep(0)
                await asyncio.sleep(0)
            else:
                # The coroutine yielded the future it waits on, marked as
                # blocking; clear the mark (as a Task would) and wait on it here.
                yielded._asyncio_future_blocking = False
                value = await yielded
        except BaseException as exc:
            error = exc
        try:
            yielded = coro.send(value) if error is None else coro.throw(error)
        except StopIteration:
            return
