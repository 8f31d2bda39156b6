"""The client socket: one connection to a Phoenix server, kept open, and its channels.

::

    async with Socket("ws://localhost:4000/socket", params={"token": token}) as socket:
        channel = socket.channel("room:lobby", {"nick": "ana"})
        await channel.join()
        reply = await channel.push("new_msg", {"body": "hi"})
        async for message in channel:
            print(message.event, message.payload)

This module is the asyncio driver of :class:`~phoenix_channels.client._socket_machine.SocketCore`:
it runs one task per connection attempt (connect, then read frames), one
timer handle for the core's next deadline, and carries out the core's
actions. Everything runs on the event loop the socket is first used from.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Unpack
from urllib.parse import quote, urlsplit, urlunsplit

from .. import __version__
from ..errors import ConfigurationError, DecodeError
from ..protocol.messages import Message
from ._actions import (
    Action,
    ChannelEnded,
    Close,
    Closed,
    Deliver,
    Errored,
    Joined,
    Open,
    Opened,
    Pong,
    Received,
    Send,
    Settled,
)
from ._socket_machine import SocketCore
from .channel import Channel, Push
from .errors import ConnectError, ConnectionRefused
from .options import SocketArgs, SocketOptions, positive_seconds
from .transports import (
    LongPollTransport,
    Transport,
    TransportClosed,
    TransportOptions,
    WebSocketTransport,
)

__all__ = ["Socket"]

log = logging.getLogger("phoenix_channels.client")

_TRANSPORTS: dict[str, type[Transport]] = {
    "websocket": WebSocketTransport,
    "longpoll": LongPollTransport,
}


class _Link:
    """One connection attempt: its task and, once open, its transport."""

    __slots__ = ("task", "transport")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.transport: Transport | None = None


def encode_params(params: Mapping[str, Any], parent: str | None = None) -> list[str]:
    """``key=value`` pairs as the JS client writes them (nested: ``parent[child]=value``)."""
    pairs: list[str] = []
    for key, value in params.items():
        name = f"{parent}[{key}]" if parent is not None else str(key)
        if isinstance(value, Mapping):
            pairs.extend(encode_params(value, name))
        elif value is None:
            continue  # the JS client writes nothing for null
        else:
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            pairs.append(f"{_uri_component(name)}={_uri_component(text)}")
    return pairs


def _uri_component(text: str) -> str:
    return quote(text, safe="-_.!~*'()")


class Socket:
    """A connection to a Phoenix server's socket, with its channels.

    ``url`` is the socket's mount, as given to the JS client:
    ``"ws://host:4000/socket"`` (``wss``, ``http`` and ``https`` work too);
    the transport's path (``/websocket`` or ``/longpoll``) is appended, then
    the connect ``params`` and ``vsn``.

    The options (``timeout``, ``heartbeat_interval``, ``transport``,
    ``auth_token``, ...) are the keywords of
    :class:`~phoenix_channels.client.SocketOptions`, where each one's default
    and meaning are declared; the values given are checked here, and a wrong
    one raises :class:`~phoenix_channels.ConfigurationError` saying what is
    expected.
    """

    def __init__(self, url: str, **options: Unpack[SocketArgs]) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"url must look like ws://host/socket (ws, wss, http or https), got {url!r}"
            )
        self._endpoint = parts
        self.options = opts = SocketOptions(**options)
        """The socket's options, checked (:class:`~phoenix_channels.client.SocketOptions`)."""
        transport = opts.transport
        self._transport: type[Transport] = (
            _TRANSPORTS[transport] if isinstance(transport, str) else transport
        )
        self.timeout = opts.timeout
        self.heartbeat_interval = opts.heartbeat_interval
        self.connect_timeout = opts.resolved_connect_timeout
        self._params = opts.params
        self._auth_token = opts.auth_token
        self._max_queued_events = opts.max_queued_events
        self._options = TransportOptions(
            headers=opts.header_pairs,
            connect_timeout=self.connect_timeout,
            longpoll_timeout=opts.longpoll_timeout,
            max_frame_size=opts.max_frame_size,
            compress=opts.compress,
            ssl=opts.ssl,
            vsn=opts.vsn,
            user_agent=f"phoenix-channels/{__version__} (Python client)",
        )
        self._core = SocketCore(opts)
        self.vsn = opts.vsn
        self._loop: asyncio.AbstractEventLoop | None = None
        self._links: dict[int, _Link] = {}
        self._tasks: set[asyncio.Task[Any]] = set()  # connections and their closing
        self._handler_tasks: set[asyncio.Task[Any]] = set()  # async handlers of the app
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pumping = False
        self._listeners: dict[str, list[tuple[int, Callable[..., object]]]] = {
            "open": [],
            "close": [],
            "error": [],
            "message": [],
        }
        self._listener_ref = 0
        self._open_waiters: list[asyncio.Future[None]] = []
        self._pings: dict[str, asyncio.Future[float | None]] = {}
        self._last_error: BaseException | None = None

    # -- public API --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The socket's mount URL, without query parameters."""
        return urlunsplit(self._endpoint._replace(query="", fragment=""))

    @property
    def is_connected(self) -> bool:
        return self._core.is_connected

    @property
    def connection_state(self) -> str:
        """``"connecting"``, ``"open"``, ``"reconnecting"`` (waiting for the next attempt)
        or ``"closed"`` (not connecting: before ``connect()``, after ``disconnect()``)."""
        return self._core.connection_state

    @property
    def established_connections(self) -> int:
        """How many times a connection opened (1 + the reconnects)."""
        return self._core.established_connections

    @property
    def channels(self) -> list[Channel]:
        """The channel objects of this socket that are not closed."""
        return [ch.owner for ch in self._core.channels if isinstance(ch.owner, Channel)]

    async def connect(self, timeout: float | None = None) -> None:
        """Open the connection; returns once it is open.

        Raises :class:`ConnectionRefused` if the server refuses (a Phoenix
        ``connect`` returning false gives 403) and :class:`ConnectError` when
        no connection opened within ``timeout`` (``connect_timeout`` by
        default); connection failures before that are retried with the
        reconnect backoff. If this call started the socket, a failure stops
        it; once a connection opened, the socket reconnects by itself until
        :meth:`disconnect` or :meth:`close`.
        """
        loop = self._ensure_loop()
        if self._core.is_connected:
            return
        started = not self._core.wanted
        waiter: asyncio.Future[None] = loop.create_future()
        self._open_waiters.append(waiter)
        self._last_error = None
        self._call(self._core.connect)
        limit = self.connect_timeout if timeout is None else positive_seconds("timeout", timeout)
        try:
            async with asyncio.timeout(limit):
                await waiter
        except TimeoutError:
            if started:
                await self.disconnect()
            raise ConnectError(
                f"no connection to {self.url} within {limit:g} s"
                + (f" (last failure: {self._last_error})" if self._last_error else "")
            ) from self._last_error
        except ConnectError:
            if started:
                await self.disconnect()
            raise
        except asyncio.CancelledError:
            if started:  # the caller gave up: do not leave a reconnect loop behind
                self._call(self._core.disconnect, 1000, "")
            raise
        finally:
            if waiter in self._open_waiters:
                self._open_waiters.remove(waiter)

    async def disconnect(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and stop reconnecting; channels rejoin after :meth:`connect`."""
        if self._loop is None:
            return
        self._call(self._core.disconnect, code, reason)
        for waiter in self._open_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectError(f"{self.url}: disconnect() was called"))
        await self._settle_tasks()

    async def close(self) -> None:
        """Disconnect for good: every channel ends (iterators stop, pending pushes fail)."""
        if self._loop is None:
            return
        await self.disconnect()
        self._call(self._core.close_channels, "the socket was closed")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None

    async def __aenter__(self) -> Socket:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def channel(
        self,
        topic: str,
        params: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        *,
        max_queued_events: int | None = None,
        recover: bool = False,
    ) -> Channel:
        """A new channel object for ``topic``; call ``await channel.join()`` next.

        ``params`` (a dict or a function returning one, evaluated at every
        join) are the join params the server's ``join`` callback receives.
        The channel tracks history positions and sends the last one at each
        rejoin (``docs/recovery.md``); ``recover=True`` asks from the first
        join on, so the outcome (``channel.recovery``) comes every time.
        """
        size = self._max_queued_events if max_queued_events is None else max_queued_events
        return Channel(self, topic, params, size, recover)

    async def ping(self, timeout: float | None = None) -> float:
        """Send a heartbeat now; the round trip in seconds."""
        loop = self._ensure_loop()
        ref = self._call(self._core.ping)
        if ref is None:
            raise ConnectError(f"{self.url}: not connected")
        future: asyncio.Future[float | None] = loop.create_future()
        self._pings[ref] = future
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                rtt = await future
        finally:
            self._pings.pop(ref, None)
        if rtt is None:
            raise ConnectError(f"{self.url}: the connection closed before the ping's reply")
        return rtt

    def on_open(self, callback: Callable[[], object]) -> int:
        """Call ``callback()`` whenever a connection opens; returns a ref for :meth:`off`."""
        return self._listen("open", callback)

    def on_close(self, callback: Callable[[int, str], object]) -> int:
        """Call ``callback(code, reason)`` whenever a connection closes or fails."""
        return self._listen("close", callback)

    def on_error(self, callback: Callable[[BaseException], object]) -> int:
        """Call ``callback(error)`` when a connection fails (refused, lost, undecodable)."""
        return self._listen("error", callback)

    def on_message(self, callback: Callable[[Message], object]) -> int:
        """Call ``callback(message)`` for every message received, whatever its topic."""
        self._core.report_messages = True
        return self._listen("message", callback)

    def off(self, ref: int) -> None:
        """Remove a listener added by ``on_open``/``on_close``/``on_error``/``on_message``."""
        for kind, listeners in self._listeners.items():
            self._listeners[kind] = [entry for entry in listeners if entry[0] != ref]
        self._core.report_messages = bool(self._listeners["message"])

    def __repr__(self) -> str:
        return f"<Socket {self.url} {self.connection_state} channels={len(self.channels)}>"

    # -- the driver ------------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("this Socket is used from an event loop other than its own")
        return loop

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a core method at the current time, then carry out what it asks."""
        self._ensure_loop()
        try:
            return method(self._now(), *args, **kwargs)
        finally:
            self._pump()

    def _pump(self) -> None:
        # Handlers called below may call back into the socket: their actions are
        # queued behind the current ones, so frames keep their order.
        if self._pumping:
            return
        self._pumping = True
        try:
            while actions := self._core.take_actions():
                for action in actions:
                    self._carry_out(action)
        finally:
            self._pumping = False
        self._reschedule()

    def _reschedule(self) -> None:
        when = self._core.next_deadline()
        # A timer already due earlier stays: when it fires it finds nothing due and sets
        # the next one. So a push answered before its timeout (the usual case) costs no
        # timer handle at all.
        if when is not None and self._timer_at is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        if when is None:
            self._timer = None
        else:
            assert self._loop is not None
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        when, self._timer, self._timer_at = self._timer_at, None, None
        now = self._now()
        self._core.advance(now if when is None else max(now, when))
        self._pump()

    def _carry_out(self, action: Action) -> None:
        if isinstance(action, Send):
            link = self._links.get(action.conn)
            if link is not None and link.transport is not None:
                link.transport.send(action.data, action.binary)
        elif isinstance(action, Deliver):
            owner = action.channel.owner
            if isinstance(owner, Channel):
                owner._deliver(action.message)
        elif isinstance(action, Settled):
            if isinstance(action.owner, Push):
                action.owner._settle(action.outcome, action.status, action.response)
        elif isinstance(action, Joined):
            if isinstance(action.channel.owner, Channel):
                action.channel.owner._joined(action.response)
        elif isinstance(action, ChannelEnded):
            if isinstance(action.channel.owner, Channel):
                action.channel.owner._ended_with(action.reason)
        elif isinstance(action, Open):
            link = self._links[action.conn] = _Link()
            link.task = self._spawn(self._run_link(action.conn, link))
        elif isinstance(action, Close):
            closing = self._links.pop(action.conn, None)
            if closing is not None:
                self._spawn(self._close_link(closing, action.code, action.reason))
        elif isinstance(action, Opened):
            for waiter in self._open_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._notify("open")
        elif isinstance(action, Closed):
            self._notify("close", action.code, action.reason)
        elif isinstance(action, Errored):
            self._last_error = action.error
            if isinstance(action.error, ConnectionRefused):
                for waiter in self._open_waiters:
                    if not waiter.done():
                        waiter.set_exception(action.error)
            self._notify("error", action.error)
        elif isinstance(action, Received):
            self._notify("message", action.message)
        elif isinstance(action, Pong):
            future = self._pings.get(action.ref)
            if future is not None and not future.done():
                future.set_result(action.rtt)

    async def _run_link(self, conn: int, link: _Link) -> None:
        """One connection attempt: connect, then feed every frame to the core until it ends."""
        transport: Transport | None = None
        try:
            url = await self._connect_url()
            token = await _resolve(self._auth_token)
            options = self._options
            if token is not None:
                options = dataclasses.replace(options, auth_token=str(token))
            transport = self._transport(url, options)
            await transport.connect()
        except Exception as exc:
            if self._links.get(conn) is link:
                del self._links[conn]
                log.info("connecting to %s failed: %s", self.url, exc)
                self._call(self._core.transport_closed, conn, 1006, str(exc), exc)
            return
        if self._links.get(conn) is not link:  # closed while connecting
            await transport.close(1000, "")
            return
        link.transport = transport
        self._call(self._core.transport_opened, conn, skip_heartbeat=transport.skip_heartbeat)
        codec = self._core.codec
        while self._links.get(conn) is link:
            try:
                data, binary = await transport.recv()
            except TransportClosed as closed:
                if self._links.pop(conn, None) is link:
                    self._call(
                        self._core.transport_closed, conn, closed.code, closed.reason, closed.error
                    )
                return
            try:
                message = codec.decode(data, binary)
            except DecodeError as exc:
                log.warning("closing the connection to %s: %s", self.url, exc)
                if self._links.pop(conn, None) is link:
                    self._spawn(self._close_link(link, 1003, "undecodable frame"))
                    self._call(self._core.transport_closed, conn, 1003, str(exc), exc)
                return
            self._call(self._core.received, conn, message)

    async def _close_link(self, link: _Link, code: int, reason: str) -> None:
        # The reader keeps reading while the close handshake runs (what it reads is
        # ignored: the link is no longer current), so the server's close frame is not
        # stuck behind unread frames; then it is stopped.
        if link.transport is not None:
            try:
                await link.transport.close(code, reason)
            except Exception as exc:  # the connection is being dropped anyway
                log.debug("closing a connection to %s: %r", self.url, exc)
        task = link.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _connect_url(self) -> str:
        params = await _resolve(self._params)
        pairs = encode_params(params or {})
        pairs.append(f"vsn={_uri_component(self.vsn)}")
        parts = self._endpoint
        path = parts.path.rstrip("/") + "/" + self._transport.path
        query = "&".join(([parts.query] if parts.query else []) + pairs)
        return urlunsplit(parts._replace(path=path, query=query, fragment=""))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("a task of the socket to %s failed", self.url, exc_info=exc)

    async def _settle_tasks(self) -> None:
        """Wait (a bounded time) for connections being closed to finish closing."""
        pending = [t for t in self._tasks if t is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending, timeout=5.0)

    def _listen(self, kind: str, callback: Callable[..., object]) -> int:
        if not callable(callback):
            raise ConfigurationError(f"callback must be callable, got {callback!r}")
        self._listener_ref += 1
        self._listeners[kind].append((self._listener_ref, callback))
        return self._listener_ref

    def _notify(self, kind: str, *args: Any) -> None:
        for _, callback in tuple(self._listeners[kind]):
            self._call_user(callback, *args)

    def _call_user(self, callback: Callable[..., object], *args: Any) -> None:
        """Run application code; an exception is logged and harms nothing else."""
        try:
            result = callback(*args)
        except Exception:
            log.exception("%r raised", callback)
            return
        if inspect.isawaitable(result):
            assert self._loop is not None
            task: asyncio.Task[None] = self._loop.create_task(_guard(result, callback))
            self._handler_tasks.add(task)
            task.add_done_callback(self._handler_tasks.discard)


async def _guard(awaitable: Awaitable[object], callback: object) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("%r raised", callback)


async def _resolve(source: Any) -> Any:
    value = source() if callable(source) else source
    if inspect.isawaitable(value):
        value = await value
    return value
