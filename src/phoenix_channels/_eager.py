"""Run a coroutine at once, and give it a task only if it has to wait.

Most channel callbacks never wait for anything (an echo, a push, a local
broadcast), so creating a task per message would cost more than the work.
:func:`start` steps the coroutine synchronously; only when it suspends on a
future does a task take over, resuming it where it stopped. This is what
Python 3.12's eager tasks do, for 3.11 too.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any

__all__ = ["start"]


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
    return asyncio.get_running_loop().create_task(_resume(coro, yielded), context=context)


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
