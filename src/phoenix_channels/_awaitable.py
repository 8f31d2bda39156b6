"""A forgotten ``await`` never loses a message silently.

``channel.push(...)`` without ``await`` used to create a coroutine that never
ran: the push was lost and Python printed only its generic "coroutine ... was
never awaited" warning, far from the cause. Two remedies, chosen per call:

* What completes at once does not need ``await`` at all. ``Channel.push`` and
  ``SocketRef.reply`` write their frame when called and return :data:`DONE`,
  an awaitable that is already finished; ``await channel.push(...)`` stays the
  documented form and costs nothing, and forgetting it loses nothing.
* What really waits (a broadcast publishes on the cluster's engine) returns
  a :class:`MustAwait`: it behaves as the coroutine it wraps (``await`` it,
  or give it to ``asyncio.create_task``/``gather``), and if it is dropped
  without ever running it logs an ERROR naming the call and the fix.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine, Generator
from typing import Any, ParamSpec, TypeVar

__all__ = ["DONE", "Done", "MustAwait", "must_await"]

log = logging.getLogger("phoenix_channels")

P = ParamSpec("P")
T = TypeVar("T")


class Done(Coroutine[Any, Any, None]):
    """An awaitable that has already finished (the work happened at the call)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator that returns at once

    def send(self, value: Any) -> Any:
        raise StopIteration

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        raise typ if val is None else val

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return "<done>"


DONE = Done()


class MustAwait(Coroutine[Any, Any, T]):
    """A coroutine that logs an ERROR if it is dropped without ever being run."""

    __slots__ = ("_call", "_coro", "_started")

    def __init__(self, coro: Coroutine[Any, Any, T], call: Callable[[], tuple[str, str]]) -> None:
        self._coro = coro
        self._call = call
        self._started = False

    def __await__(self) -> Generator[Any, None, T]:
        self._started = True
        return self._coro.__await__()

    def send(self, value: Any) -> Any:
        self._started = True
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._started = True
        if val is None:
            return self._coro.throw(typ)
        return self._coro.throw(val)

    def close(self) -> None:
        self._started = True
        self._coro.close()

    def __del__(self) -> None:
        if self._started:
            return
        self._coro.close()  # it never ran: no half-done work, and no generic warning
        try:
            call, fix = self._call()
        except Exception:  # pragma: no cover - describing must never raise in __del__
            call, fix = "a broadcast", "await ..."
        log.error("%s was never awaited, so nothing was sent: write `%s`", call, fix)


def must_await(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Make ``async def method`` return a :class:`MustAwait` naming the call."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
        def call() -> tuple[str, str]:
            owner, rest = args[0], args[1:]
            shown = ", ".join(_short(a) for a in rest if not _is_owner_like(a))
            text = f"{type(owner).__name__}.{name}({shown})"
            topic = getattr(owner, "topic", None)
            if isinstance(topic, str):  # a channel
                return f"{text} on {topic!r}", f"await self.{name}(...)"
            return text, f"await {type(owner).__name__.lower()}.{name}(...)"

        return MustAwait(method(*args, **kwargs), call)

    return wrapper


def _is_owner_like(value: Any) -> bool:
    # broadcast_from's first argument (the subscriber to skip) says nothing useful
    return not isinstance(value, str | int | float | dict | list | tuple | bytes | type(None))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
