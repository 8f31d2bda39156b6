"""Broadcast from code that does not run an endpoint: sync views, Celery tasks, cron scripts.

::

    from phoenix_channels.publisher import Publisher

    publisher = Publisher.redis("redis://127.0.0.1:6379/0")   # once, at import time

    def checkout(request):                                    # any sync code, any thread
        publisher.publish("room:lobby", "new_order", {"id": 42})

    async def handler():                                      # any event loop
        await publisher.apublish("room:lobby", "new_order", {"id": 42})

A broadcast made here is the one ``Endpoint.broadcast`` makes: the same
:class:`~phoenix_channels.Broadcast`, handed to the same
:meth:`PubSub.broadcast <phoenix_channels.PubSub.broadcast>` of the same
engine adapter, so the bytes on Redis or NATS are the ones an endpoint
node would publish and subscribers cannot tell the two apart. Whatever the
PubSub adds to a broadcast (positions on history topics, for instance)
is added here too, as long as the publisher's PubSub is configured like
the endpoint's: pass that PubSub (``Publisher(PubSub.redis(url, ...))``)
or the endpoint itself (``Publisher(endpoint)``).

How it runs, and why:

* The engine adapters are asyncio code. Rather than a second, synchronous
  implementation of each engine's protocol, the publisher runs the
  adapter on a private event loop in one daemon thread, started on the
  first publish. ``publish`` hands the broadcast to that loop and blocks
  until the engine has taken it (or raises
  :class:`~phoenix_channels.BroadcastError`); ``apublish`` awaits the same
  result from whatever loop the caller runs, so it works under
  ``asyncio.run`` called once per task (Celery) as well as inside a server.
* It is safe to share between threads (Django or gunicorn sync workers):
  every call goes through the loop's thread-safe queue, and the engine
  link is shared, so broadcasts pipeline on one connection.
* After ``fork`` (Celery prefork, gunicorn ``--preload``) the child
  forgets the parent's loop and engine link at once (an
  ``os.register_at_fork`` hook, run while the child still has one thread)
  and starts its own on its next publish; the parent's connection is
  never used by two processes, and threads the child starts cannot race
  over the reset.
* ``Publisher(endpoint)`` in the process that serves the endpoint (a sync
  Django view under an ASGI server, say) publishes through the running
  endpoint on its own loop: no second engine link, and the local adapter
  works too. In a process where the endpoint is not running, the
  endpoint's (unstarted) PubSub is run on the private loop instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .errors import BroadcastError, UsageError
from .protocol import Broadcast
from .protocol.checks import check_payload
from .pubsub import LocalAdapter, PubSub

if TYPE_CHECKING:
    from .endpoint import Endpoint

__all__ = ["Publisher"]

_STOP_TIMEOUT = 5.0


class Publisher:
    """Publishes broadcasts over a PubSub engine from sync or async code, in any thread.

    ``target`` is a URL (``redis://...``, ``rediss://...``, ``unix://...``
    or ``nats://...``; ``options`` go to :meth:`PubSub.redis` /
    :meth:`PubSub.nats`, e.g. ``prefix``), a :class:`PubSub` configured
    like the endpoint's, a function that builds one (called again in each
    forked child), or the :class:`Endpoint` itself.

    ``endpoint``: the endpoint these broadcasts are for, when ``target`` is a
    URL or a PubSub (``Publisher(endpoint)`` sets it too), kept as
    :attr:`endpoint` for the endpoint's per-topic settings (which topics
    keep history). The broadcast itself goes through the PubSub, which
    treats it as it treats the endpoint's own.

    ``timeout``: seconds ``publish`` waits for the engine before raising
    :class:`BroadcastError` (default: the adapter's own timeout plus one).
    """

    def __init__(
        self,
        target: str | PubSub | Endpoint | Callable[[], PubSub],
        *,
        endpoint: Endpoint | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> None:
        from .endpoint import Endpoint

        self.endpoint: Endpoint | None = endpoint
        if isinstance(target, str):
            self._factory: Any = lambda: _pubsub_for_url(target, options)
            self.pubsub = self._factory()
        elif options:
            raise UsageError("options are only for a URL target; configure the PubSub instead")
        elif isinstance(target, PubSub):
            self.pubsub = target
            self._factory = None
        elif isinstance(target, Endpoint):
            self.endpoint = target
            self.pubsub = target.pubsub
            self._factory = None
        elif callable(target):
            self._factory = target
            self.pubsub = target()
        else:
            raise UsageError(
                f"Publisher needs a URL, a PubSub or an Endpoint, got {type(target).__name__}"
            )
        self._follow_endpoint()
        if timeout is None:
            timeout = float(getattr(self.pubsub.adapter, "timeout", 5.0)) + 1.0
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise UsageError("timeout must be a positive number of seconds")
        self.timeout = float(timeout)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._starting = False
        self._closed = False
        self._unusable: str | None = None  # why publishing cannot work in this process
        _LIVE.add(self)

    @classmethod
    def redis(
        cls, url: str = "redis://127.0.0.1:6379/0", *, timeout: float | None = None, **options: Any
    ) -> Publisher:
        """A publisher over Redis; ``options`` as for :meth:`PubSub.redis` (``prefix``...)."""
        return cls(lambda: PubSub.redis(url, **options), timeout=timeout)

    @classmethod
    def nats(
        cls, url: str = "nats://127.0.0.1:4222", *, timeout: float | None = None, **options: Any
    ) -> Publisher:
        """A publisher over NATS (``nats`` extra); ``options`` as for :meth:`PubSub.nats`."""
        return cls(lambda: PubSub.nats(url, **options), timeout=timeout)

    # -- publishing ------------------------------------------------------------------------

    def publish(self, topic: str, event: str, payload: Any) -> None:
        """Broadcast ``event`` with ``payload`` on ``topic`` to every node; block until sent.

        Raises :class:`BroadcastError` when the engine cannot take it within
        ``timeout``. Call :meth:`apublish` instead from a coroutine.
        """
        message = _message(topic, event, payload)
        loop = self._target_loop()
        if _running_loop() is loop:
            raise UsageError(
                "Publisher.publish() blocks, and was called on the loop that must send the "
                "broadcast; use `await publisher.apublish(...)` in async code"
            )
        future = asyncio.run_coroutine_threadsafe(self._send(message), loop)
        try:
            future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BroadcastError(
                f"broadcast on {topic!r} not sent within {self.timeout:g} s"
            ) from None

    async def apublish(self, topic: str, event: str, payload: Any) -> None:
        """The same as :meth:`publish`, awaited from any event loop."""
        message = _message(topic, event, payload)
        loop = self._target_loop()
        if asyncio.get_running_loop() is loop:
            await self._send(message)
            return
        future = asyncio.run_coroutine_threadsafe(self._send(message), loop)
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.wrap_future(future)
        except TimeoutError:
            future.cancel()
            raise BroadcastError(
                f"broadcast on {topic!r} not sent within {self.timeout:g} s"
            ) from None

    async def _send(self, message: Broadcast) -> None:
        await self.pubsub.broadcast(message.topic, message)

    # -- the private loop ------------------------------------------------------------------

    def _target_loop(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise UsageError("this Publisher is closed")
        if self._unusable is not None:
            raise UsageError(self._unusable)
        loop = self._live_loop()
        if loop is not None:
            return loop
        with self._lock:
            loop = self._live_loop()
            if loop is not None:
                return loop
            if isinstance(self.pubsub.adapter, LocalAdapter):
                raise UsageError(
                    "this Publisher's PubSub is the local one and does not run in this "
                    "process, so no subscriber would ever see its broadcasts; give the "
                    "endpoint PubSub.redis(url) or PubSub.nats(url) and publish over it"
                )
            self._starting = True
            try:
                self._start_thread()
            finally:
                self._starting = False
            assert self._loop is not None
            return self._loop

    def _live_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the PubSub runs on in this process (our own thread's, or the endpoint's)."""
        if self._loop is not None:  # our thread's, set once its PubSub has started
            return self._loop
        if self._starting:  # our thread is connecting: wait for it on the lock
            return None
        loop = self.pubsub.loop
        if loop is None or loop.is_closed() or not self.pubsub._started:
            return None
        return loop

    def _start_thread(self) -> None:
        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.pubsub.start())
            except BaseException as exc:
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(None)
            try:
                loop.run_forever()
            finally:
                loop.close()

        thread = threading.Thread(target=run, name="phoenix-channels-publisher", daemon=True)
        thread.start()
        try:
            ready.result(self.timeout)
        except Exception as exc:
            if not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(loop.stop)
                except RuntimeError:  # closed in the meantime
                    pass
            thread.join(_STOP_TIMEOUT)
            raise BroadcastError(f"the publisher could not start its PubSub: {exc}") from exc
        self._loop = loop
        self._thread = thread

    def _after_fork(self) -> None:
        # The parent's thread does not exist here and its sockets belong to the
        # parent: forget both (never close them from the child) and start afresh.
        # Runs in the child before any of its threads (see _reset_after_fork): what
        # cannot work is reported at the next publish.
        self._lock = threading.Lock()
        self._loop = None
        self._thread = None
        self._starting = False
        if self._factory is not None:
            self.pubsub = self._factory()
            self._follow_endpoint()
        elif getattr(self.pubsub, "_started", False):
            self._unusable = (
                "this Publisher's PubSub was started before the process forked; build the "
                "Publisher from a URL (Publisher.redis(url)), which starts afresh in each child"
            )

    def _follow_endpoint(self) -> None:
        """Give our own PubSub the endpoint's history routes (its own PubSub has them)."""
        endpoint = self.endpoint
        if endpoint is None or self.pubsub is endpoint.pubsub:
            return
        self.pubsub.add_history_routes(endpoint.history_routes)

    def close(self) -> None:
        """Stop the private loop and the engine link (a no-op if none was started)."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:  # none started (or forgotten after a fork)
            return
        stopping = asyncio.run_coroutine_threadsafe(self.pubsub.stop(), loop)
        try:
            stopping.result(_STOP_TIMEOUT)
        except Exception:  # closing must not raise; the link dies with the loop
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_STOP_TIMEOUT)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_LIVE: weakref.WeakSet[Publisher] = weakref.WeakSet()


def _reset_after_fork() -> None:
    """In a forked child, before any of its threads runs: every publisher starts afresh."""
    for publisher in list(_LIVE):
        try:
            publisher._after_fork()
        except Exception as exc:  # a failing factory: say so at the next publish
            publisher._unusable = f"this Publisher could not be rebuilt after fork: {exc!r}"


if hasattr(os, "register_at_fork"):  # every system with os.fork
    os.register_at_fork(after_in_child=_reset_after_fork)


def _pubsub_for_url(url: str, options: dict[str, Any]) -> PubSub:
    scheme = url.partition(":")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return PubSub.redis(url, **options)
    if scheme in ("nats", "tls"):
        return PubSub.nats(url, **options)
    raise UsageError(
        f"Publisher URL must start with redis://, rediss://, unix:// or nats://: {url!r}"
    )


def _message(topic: str, event: str, payload: Any) -> Broadcast:
    check_payload(payload)
    return Broadcast(topic, event, payload)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
