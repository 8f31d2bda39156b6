"""Test your channels in process, the way ``Phoenix.ChannelTest`` tests them.

No server, no network, no JSON to write by hand: a :class:`ChannelTest`
plays the part of the client (and of the test process Phoenix delivers
everything to). It builds sockets on an in-memory transport, joins topics,
pushes events, and collects what the server sends back: replies, pushes,
and the broadcasts of the topics it subscribed to. The assertions wait for
a matching item with a bounded timeout and fail with a message that lists
what did arrive::

    from phoenix_channels.testing import ChannelTest

    async def test_echo():
        async with ChannelTest(endpoint) as ct:
            room = await ct.subscribe_and_join(UserSocket, "room:lobby", {"nick": "ana"})
            assert room.reply == {"welcome": "room:lobby"}
            ref = room.push("echo", {"hi": 1})
            await ct.assert_reply(ref, "ok", {"hi": 1})
            room.push("shout", {"msg": "hey"})
            await ct.assert_broadcast("shout", {"msg": "hey"})   # the test's subscription
            await ct.assert_push("shout", {"msg": "hey"})        # what the client receives

With pytest, the ``channel_test`` fixture (``phoenix_channels.pytest_plugin``,
loaded automatically) gives a started one for the endpoint returned by your
``phoenix_endpoint`` fixture.

Everything goes through the real socket and channel runtime (routing, the
join rules, channel limits, rate limits, intercepts, the fast lane); only
the wire is replaced. Values travel as they would on the wire: payloads go
through JSON both ways (a tuple arrives as a list, keys must be strings),
``bytes`` stay binary, and a value the real serializer cannot encode fails
here too.

A channel that crashes (an exception in a callback, or in ``terminate``)
fails the test, as a linked channel process does in Phoenix: the next
assertion, or the end of the ``ChannelTest``, raises :class:`ChannelCrashed`
with the original exception as its cause, unless the test expected it with
:meth:`TestChannel.assert_crashed` (or asserted the ``phx_error`` push).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import warnings
from collections.abc import Callable
from typing import Any, cast
from unittest.mock import ANY

import orjson

from .channel import Channel, is_graceful
from .client.codec import V2_CODEC
from .endpoint import Endpoint
from .errors import ConfigurationError, ConnectionRefused, EncodeError, JoinError, UsageError
from .handshake import NotConnected, connected, socket_id
from .protocol import PHX_ERROR, V2, Broadcast, Message, Reply, Serializer
from .socket import Socket
from .transports.base import FrameEncoder

__all__ = [
    "ANY",
    "DEFAULT_ASSERT_TIMEOUT",
    "DEFAULT_REFUTE_TIMEOUT",
    "ChannelCrashed",
    "ChannelTest",
    "ConnectionRefused",
    "TestChannel",
    "TestSocket",
]

log = logging.getLogger("phoenix_channels.testing")

DEFAULT_ASSERT_TIMEOUT = 1.0
"""Seconds an ``assert_*`` waits for a match. It returns as soon as one arrives, so a
generous bound costs a passing test nothing and keeps a loaded CI machine from failing it."""

DEFAULT_REFUTE_TIMEOUT = 0.1
"""Seconds a ``refute_*`` watches for an item that must not arrive (Phoenix's 100 ms)."""

Pattern = Any
"""What an assertion compares with: a value (``==``, so :data:`ANY` works inside
dicts and lists), :data:`ANY`, or a predicate ``lambda value: bool``."""


def __getattr__(name: str) -> Any:
    # The old name of ConnectionRefused, kept working (same class) for a while.
    if name == "ConnectRefused":
        warnings.warn(
            "phoenix_channels.testing.ConnectRefused is deprecated; use "
            "phoenix_channels.errors.ConnectionRefused (the same class)",
            DeprecationWarning,
            stacklevel=2,
        )
        return ConnectionRefused
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ChannelCrashed(AssertionError):
    """A channel crashed while the test did not expect it; ``__cause__`` is the exception."""


# -- the wire, without the wire ------------------------------------------------------


def _wire(value: Any, what: str) -> Any:
    """``value`` as the other side would decode it: JSON round trip; bytes stay bytes."""
    if type(value) is bytes:
        return value
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError as exc:
        raise UsageError(f"{what} must be JSON-serializable (or bytes): {exc}") from None


def _client_frame(join_ref: str, ref: str, topic: str, event: str, payload: Any) -> bytes:
    """What a V2 client sends (a JSON array, or a binary push for bytes): the client's codec."""
    try:
        prepared = V2_CODEC.prepare(topic, event, payload)
    except EncodeError as exc:
        raise UsageError(f"a payload must be JSON-serializable (or bytes): {exc}") from None
    return V2_CODEC.encode(join_ref, ref, topic, event, prepared)[0]


class _Values:
    """The test transport's serializer: the server's frames, as values for the test.

    Outbound items are encoded by the V2 serializer (so what cannot go on the
    wire fails as it would in production) and decoded back into
    :class:`Message`/:class:`Reply` values. Inbound frames are real V2
    frames, decoded by the socket's own V2 serializer.
    """

    vsn = "2.0.0"
    supports_binary = True

    decode = staticmethod(V2.decode)

    @staticmethod
    def encode_push(join_ref: Any, ref: Any, topic: str, event: str, payload: Any) -> Any:
        data, binary = V2.encode_push(join_ref, ref, topic, event, payload)
        if binary:
            return Message(join_ref, None, topic, event, payload), True
        return Message(*orjson.loads(data)), False

    @staticmethod
    def encode_reply(join_ref: Any, ref: Any, topic: str, status: str, response: Any) -> Any:
        data, binary = V2.encode_reply(join_ref, ref, topic, status, response)
        if binary:
            return Reply(join_ref, ref, topic, status, response), True
        jr, r, t, _event, body = orjson.loads(data)
        return Reply(jr, r, t, body["status"], body["response"]), False

    @staticmethod
    def encode_broadcast(broadcast: Broadcast) -> Any:
        data, binary = V2.encode_broadcast(broadcast)
        if binary:
            return Message(None, None, broadcast.topic, broadcast.event, broadcast.payload), True
        return Message(*orjson.loads(data)), False


def _as_item(item: Any, binary: bool) -> Any:
    return item


_ENCODER = FrameEncoder("test", cast(Serializer, _Values()), _as_item)

_CONNECT_INFO_KEYS: dict[str, Any] = {
    "peer_data": None,
    "uri": None,
    "x_headers": [],
    "trace_context_headers": [],
    "sec_websocket_headers": [],
    "user_agent": None,
    "auth_token": None,
}


class _Transport:
    """What a test socket writes to: everything lands in the ChannelTest's inbox."""

    name = "test"
    encoder = _ENCODER

    def __init__(self, case: ChannelTest, owner: TestSocket) -> None:
        self._case = case
        self._owner = owner
        self.paused = False

    def send(self, item: Any) -> None:
        self._case._deliver(item, self._owner)

    def close(self, code: int, reason: str) -> None:
        self._owner.closed = (code, reason)
        self._case._wake()

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class _Router:
    """The socket's routes plus the test's per-topic ``channel=`` overrides."""

    __slots__ = ("_inner", "overrides")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.overrides: dict[str, type[Channel]] = {}

    def match(self, topic: str) -> Any:
        explicit = self.overrides.get(topic)
        if explicit is not None:
            return explicit, None
        return self._inner.match(topic)

    def __len__(self) -> int:
        return len(self._inner)


class _Watch:
    """A channel's observer (:class:`~phoenix_channels.channel.ChannelObserver`):
    records how the channel ends (terminate's reason, a crash) and its join's error."""

    __slots__ = ("_case", "_joined")

    def __init__(self, case: ChannelTest, joined: TestChannel) -> None:
        self._case = case
        self._joined = joined

    def join_crashed(self, channel: Channel, exc: BaseException) -> None:
        self._joined._crash = exc

    def terminating(self, channel: Channel, reason: Any) -> None:
        joined = self._joined
        joined._terminated = True
        joined._reason = reason
        if isinstance(reason, BaseException):
            joined._crash = reason
        elif not is_graceful(reason):  # the client gets phx_error, as for a crash
            joined._crash = RuntimeError(f"stopped with reason {reason!r}")
        if joined._crash is not None:
            self._case._crashes.append(joined)

    def terminate_raised(self, channel: Channel, exc: BaseException) -> None:
        joined = self._joined
        if joined._crash is None:
            joined._crash = exc
            self._case._crashes.append(joined)


def _event_matcher(
    kind: type[Message] | type[Broadcast], event: str, payload: Pattern, topic: str | None
) -> Callable[[Any], bool]:
    """A predicate for a push (Message) or Broadcast of ``event`` matching ``payload``."""

    def match(item: Any) -> bool:
        return (
            type(item) is kind
            and item.event == event
            and (topic is None or item.topic == topic)
            and _matches(payload, item.payload)
        )

    return match


def _matches(expected: Pattern, actual: Any) -> bool:
    if expected is ANY:
        return True
    if callable(expected) and not isinstance(expected, type):
        return bool(expected(actual))
    return bool(expected == actual)


def _to(socket: TestSocket | None) -> str:
    return "" if socket is None else f" to socket #{socket.number}"


def _describe(item: Any, to: TestSocket | None = None) -> str:
    if type(item) is Message:
        return f"push    {item.topic!r} {item.event!r} {item.payload!r}{_to(to)}"
    if type(item) is Reply:
        return f"reply   {item.topic!r} ref={item.ref!r} {item.status!r} {item.response!r}{_to(to)}"
    if type(item) is Broadcast:
        return f"broadcast {item.topic!r} {item.event!r} {item.payload!r}"
    return repr(item)


# -- the public objects --------------------------------------------------------------


class TestChannel:
    """A joined channel, seen from the test: push to it, leave it, close it.

    ``reply`` is the join's response, ``channel`` the :class:`Channel`
    instance serving the topic (its ``assigns`` are ``self.assigns``).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, case: ChannelTest, socket: TestSocket, channel: Channel) -> None:
        self.case = case
        self.socket = socket
        self.channel = channel
        self.topic = channel.topic
        self.join_ref = channel.join_ref
        self.reply: Any = None
        self._ended = asyncio.Event()
        self._terminated = False
        self._reason: Any = None
        self._crash: BaseException | None = None

    @property
    def assigns(self) -> dict[str, Any]:
        return self.channel.assigns

    @property
    def stopped(self) -> bool:
        """Whether the channel has ended (however it ended)."""
        return self._ended.is_set()

    @property
    def terminate_reason(self) -> Any:
        """The reason ``terminate`` was called with; ``None`` if it has not run."""
        return self._reason

    def push(self, event: str, payload: Any = None) -> str:
        """Send ``event`` to the channel as its client would; returns the ref to assert on."""
        self.case._check_crashes()
        ref = self.case._next_ref()
        body = {} if payload is None else payload
        self.socket._receive(str(self.join_ref), ref, self.topic, event, body)
        return ref

    def leave(self) -> str:
        """Send ``phx_leave``; returns its ref (the reply is ``ok``, then ``phx_close``)."""
        return self.push("phx_leave")

    async def close(self, timeout: float = 5.0) -> None:
        """End the channel as if its connection closed (terminate gets ``"shutdown:closed"``).

        A channel that has not stopped within ``timeout`` seconds (a
        ``terminate`` that hangs) is killed.
        """
        sock = self.socket.socket
        entry = sock._table.entries.get(self.topic)
        if entry is not None and entry.channel is self.channel:
            sock._table.remove(entry)
        self.channel._socket_closed("shutdown:closed")
        try:
            async with asyncio.timeout(timeout):
                await self._ended.wait()
        except TimeoutError:
            self.channel._kill()
            self._ended.set()

    async def broadcast_from(self, event: str, payload: Any) -> None:
        """Broadcast on this channel's topic from the test (the test's own subscription
        does not get it; the channel does, through its fast lane or ``handle_out``)."""
        await self.case.broadcast_from(self.topic, event, payload)

    async def assert_push(
        self, event: str, payload: Pattern = ANY, *, timeout: float | None = None
    ) -> Message:
        """:meth:`ChannelTest.assert_push` for this channel's topic, sent to this channel's
        own client (its socket): a push to another socket on the same topic does not match."""
        return await self.case.assert_push(
            event, payload, topic=self.topic, socket=self.socket, timeout=timeout
        )

    async def refute_push(
        self, event: str, payload: Pattern = ANY, *, timeout: float | None = None
    ) -> None:
        """Fail if this channel's own client gets a matching push within ``timeout``."""
        await self.case.refute_push(
            event, payload, topic=self.topic, socket=self.socket, timeout=timeout
        )

    async def assert_stopped(self, reason: Pattern = ANY, *, timeout: float | None = None) -> Any:
        """Wait until the channel ended; returns the ``terminate`` reason (``None`` if
        it ended without ``terminate``, e.g. replaced by a duplicate join). A crash
        asserted this way is expected and no longer fails the test."""
        limit = DEFAULT_ASSERT_TIMEOUT if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                await self._ended.wait()
        except TimeoutError:
            raise AssertionError(
                f"the channel on {self.topic!r} did not stop within {limit:g} s"
            ) from None
        self.case._acknowledge(self)
        if not _matches(reason, self._reason):
            raise AssertionError(
                f"the channel on {self.topic!r} stopped with {self._reason!r}, expected {reason!r}"
            )
        return self._reason

    async def assert_crashed(self, *, timeout: float | None = None) -> BaseException:
        """Wait until the channel crashed; returns the exception (the crash is expected)."""
        reason = await self.assert_stopped(timeout=timeout)
        if self._crash is None:
            raise AssertionError(
                f"the channel on {self.topic!r} stopped with {reason!r}, not with a crash"
            )
        return self._crash

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else "joined"
        return f"<TestChannel {self.topic!r} join_ref={self.join_ref!r} {state}>"


class TestSocket:
    """One client connection in the test: its :class:`Socket` on an in-memory transport.

    ``closed`` is ``(code, reason)`` once the server closed the connection
    (a ``disconnect`` broadcast to the socket id, for instance).
    """

    __test__ = False

    def __init__(self, case: ChannelTest, socket: Socket) -> None:
        self.case = case
        self.socket = socket
        self.closed: tuple[int, str] | None = None
        self.number = len(case._sockets) + 1
        """This socket's place among the test's sockets (1, 2, ...), shown in failure reports."""
        self.transport = _Transport(case, self)
        self._router = _Router(socket._table.router)
        socket._table.router = self._router  # type: ignore[assignment]
        socket.channel_factory = case._build_channel

    @property
    def assigns(self) -> dict[str, Any]:
        return self.socket.assigns

    @property
    def id(self) -> str | None:
        return self.socket._id

    def _receive(self, join_ref: str, ref: str, topic: str, event: str, payload: Any) -> None:
        frame = _client_frame(join_ref, ref, topic, event, payload)
        self.socket.receive(frame, type(payload) is bytes)

    async def join(
        self, topic: str, payload: Any = None, *, channel: type[Channel] | None = None
    ) -> TestChannel:
        """Join ``topic`` (routed by the socket's ``channels``, or served by ``channel``).

        Returns the joined channel (its ``reply`` is the join's response);
        raises :class:`JoinError` with the error response otherwise (a join
        that crashed: ``{"reason": "join crashed"}``, the exception as cause).
        """
        case = self.case
        case._check_crashes()
        if channel is not None:
            if not (isinstance(channel, type) and issubclass(channel, Channel)):
                raise UsageError(f"channel must be a Channel subclass, got {channel!r}")
            self._router.overrides[topic] = channel
        elif self._router.match(topic) is None:
            raise UsageError(
                f"{type(self.socket).__name__}.channels routes no channel for {topic!r}; "
                "add a route or pass channel=..."
            )
        ref = case._next_ref()
        try:
            self._receive(ref, ref, topic, "phx_join", {} if payload is None else payload)
            reply = await case._take(
                lambda item: type(item) is Reply and item.ref == ref,
                case.join_timeout,
                f"the reply to joining {topic!r}",
            )
        finally:
            self._router.overrides.pop(topic, None)
        joined = case._joins.pop(ref, None)
        if reply.status != "ok" or joined is None:
            error = JoinError(reply.response)
            raise error from (joined._crash if joined is not None else None)
        joined.reply = reply.response
        return joined

    async def subscribe_and_join(
        self, topic: str, payload: Any = None, *, channel: type[Channel] | None = None
    ) -> TestChannel:
        """Subscribe the test to ``topic`` (for :meth:`ChannelTest.assert_broadcast`), then join."""
        self.case.subscribe(topic)
        return await self.join(topic, payload, channel=channel)

    async def close(self, timeout: float = 5.0) -> None:
        """Close the connection: every channel terminates with ``"shutdown:closed"``."""
        channels = [c for c in self.case._channels if c.socket is self and not c.stopped]
        self.socket.connection_lost("shutdown:closed")
        for joined in channels:
            try:
                async with asyncio.timeout(timeout):
                    await joined._ended.wait()
            except TimeoutError:
                joined.channel._kill()
                joined._ended.set()

    async def assert_push(
        self,
        event: str,
        payload: Pattern = ANY,
        *,
        topic: str | None = None,
        timeout: float | None = None,
    ) -> Message:
        """Wait for a push of ``event`` to this socket's client (on any topic, or ``topic``)."""
        return await self.case.assert_push(
            event, payload, topic=topic, socket=self, timeout=timeout
        )

    async def refute_push(
        self,
        event: str,
        payload: Pattern = ANY,
        *,
        topic: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Fail if this socket's client gets a matching push within ``timeout``."""
        await self.case.refute_push(event, payload, topic=topic, socket=self, timeout=timeout)

    def __repr__(self) -> str:
        return f"<TestSocket #{self.number} {type(self.socket).__name__} id={self.id!r}>"


class ChannelTest:
    """The test's side of the conversation; see the module documentation.

    Use it as ``async with ChannelTest(endpoint) as ct:`` (or call
    :meth:`start` and :meth:`stop`). ``join_timeout`` bounds how long a join
    may take before the test fails.
    """

    __test__ = False

    def __init__(self, endpoint: Endpoint, *, join_timeout: float = 5.0) -> None:
        self.endpoint = endpoint
        self.join_timeout = join_timeout
        self.received: list[Any] = []
        """Items that arrived and no assertion consumed yet, oldest first."""
        self._recipients: list[TestSocket | None] = []  # beside received: who got each item
        self._refs = itertools.count(1)
        self._arrived: asyncio.Event | None = None
        self._sockets: list[TestSocket] = []
        self._channels: list[TestChannel] = []
        self._joins: dict[str, TestChannel] = {}
        self._crashes: list[TestChannel] = []
        self._subscriptions: set[str] = set()
        # One bound method, kept: PubSub skips the sender of broadcast_from by identity.
        self._subscriber = self._deliver
        self._started_endpoint = False
        self._started = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the endpoint (PubSub) if it is not running yet."""
        if self._started:
            return
        self._started = True
        self._arrived = asyncio.Event()
        if not self.endpoint._started:
            await self.endpoint.start()
            self._started_endpoint = True

    async def stop(self) -> None:
        """Close every socket, drop the subscriptions, stop what :meth:`start` started.

        Raises :class:`ChannelCrashed` if a channel crashed unexpectedly.
        """
        if not self._started:
            return
        for sock in self._sockets:
            await sock.close()
        for topic in list(self._subscriptions):
            self.unsubscribe(topic)
        if self._started_endpoint:
            self._started_endpoint = False
            await self.endpoint.stop()
        self._started = False
        self._check_crashes()

    async def __aenter__(self) -> ChannelTest:
        await self.start()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc is None:
            await self.stop()
            return
        try:  # the test failed already: clean up, and let its error be the one shown
            self._crashes.clear()
            await self.stop()
        except Exception:
            log.exception("cleaning up after a failed test")

    # -- sockets -----------------------------------------------------------------------

    def socket(
        self,
        socket_cls: type[Socket],
        id: str | None = None,
        assigns: dict[str, Any] | None = None,
    ) -> TestSocket:
        """A connected socket of ``socket_cls`` without running its ``connect``.

        ``id`` is the socket id (a ``disconnect`` broadcast to it closes the
        socket), ``assigns`` its initial assigns.
        """
        if not (isinstance(socket_cls, type) and issubclass(socket_cls, Socket)):
            raise UsageError(f"socket() takes a Socket subclass, got {socket_cls!r}")
        if id is not None and type(id) is not str:
            raise UsageError(f"a socket id must be a str or None, got {id!r}")
        sock = socket_cls(self.endpoint, {}, V2)
        if assigns:
            sock.assigns.update(assigns)
        sock.handshake_done(id, None)
        return self._attach(sock)

    async def connect(
        self,
        socket_cls: type[Socket],
        params: dict[str, Any] | None = None,
        connect_info: dict[str, Any] | None = None,
    ) -> TestSocket:
        """Run ``socket_cls.connect(params, connect_info)`` and ``id()``, as a handshake does.

        ``params`` go through JSON (string keys). ``connect_info`` starts with
        every key the real transports provide (empty) and takes yours on top.
        Raises :class:`~phoenix_channels.errors.ConnectionRefused` if ``connect``
        returns False (and UsageError if it returns anything but a bool).
        """
        await self.start()
        if not (isinstance(socket_cls, type) and issubclass(socket_cls, Socket)):
            raise UsageError(f"connect() takes a Socket subclass, got {socket_cls!r}")
        wire_params = _wire({} if params is None else params, "connect params")
        if type(wire_params) is not dict:
            raise UsageError("connect params must be a dict")
        info = dict(_CONNECT_INFO_KEYS)
        info.update(connect_info or {})
        sock = socket_cls(self.endpoint, wire_params, V2)
        accepted = await sock.connect(wire_params, info)
        try:  # the handshake's own checks of what connect and id returned
            connected(socket_cls.__name__, accepted)
            sid = socket_id(sock, socket_cls.__name__)
        except NotConnected as exc:
            if exc.cause is not None:
                raise exc.cause from None
            if exc.stage == "connect" and type(exc.value) is bool:
                raise ConnectionRefused(
                    f"{socket_cls.__name__}.connect returned {exc.value!r} "
                    f"for params {wire_params!r}"
                ) from None
            if exc.stage == "connect":
                raise UsageError(
                    f"{socket_cls.__name__}.connect returned {exc.value!r}; return True to "
                    "accept, False to refuse (a real endpoint answers 403 and logs it)"
                ) from None
            raise UsageError(
                f"{socket_cls.__name__}.id returned {exc.value!r}; it must return a str"
            ) from None
        sock.handshake_done(sid, None)
        return self._attach(sock)

    def _attach(self, sock: Socket) -> TestSocket:
        if not self._started:
            # socket() is synchronous: start() only creates an Event and starts a
            # stopped endpoint, which tests that call socket() first do in a loop.
            raise UsageError("start the ChannelTest first: `async with ChannelTest(endpoint)`")
        test_socket = TestSocket(self, sock)
        sock.attach(test_socket.transport)
        self._sockets.append(test_socket)
        return test_socket

    async def join(
        self,
        socket: TestSocket | type[Socket],
        topic: str,
        payload: Any = None,
        *,
        channel: type[Channel] | None = None,
    ) -> TestChannel:
        """:meth:`TestSocket.join`; given a Socket class, on a new ``socket(cls)``."""
        await self.start()
        sock = socket if isinstance(socket, TestSocket) else self.socket(socket)
        return await sock.join(topic, payload, channel=channel)

    async def subscribe_and_join(
        self,
        socket: TestSocket | type[Socket],
        topic: str,
        payload: Any = None,
        *,
        channel: type[Channel] | None = None,
    ) -> TestChannel:
        """:meth:`TestSocket.subscribe_and_join`; given a Socket class, on a new socket."""
        await self.start()
        sock = socket if isinstance(socket, TestSocket) else self.socket(socket)
        return await sock.subscribe_and_join(topic, payload, channel=channel)

    # -- broadcasts ----------------------------------------------------------------------

    def subscribe(self, topic: str) -> None:
        """Receive the broadcasts of ``topic`` (see :meth:`assert_broadcast`)."""
        if topic not in self._subscriptions:
            self._subscriptions.add(topic)
            self.endpoint.pubsub.subscribe(topic, self._subscriber)

    def unsubscribe(self, topic: str) -> None:
        self._subscriptions.discard(topic)
        self.endpoint.pubsub.unsubscribe(topic, self._subscriber)

    async def broadcast_from(self, topic: str, event: str, payload: Any) -> None:
        """Broadcast to every subscriber of ``topic`` except the test itself."""
        await self.endpoint.broadcast_from(self._subscriber, topic, event, payload)

    # -- assertions ------------------------------------------------------------------------

    async def assert_push(
        self,
        event: str,
        payload: Pattern = ANY,
        *,
        topic: str | None = None,
        socket: TestSocket | None = None,
        timeout: float | None = None,
    ) -> Message:
        """Wait for a push (or a broadcast delivered to a joined client) of ``event``.

        It matches a push to any test socket, unless ``socket`` names one
        (``sock.assert_push(...)`` and ``channel.assert_push(...)`` do).
        Returns the :class:`Message`; consumes it, so the next assertion
        looks for another one.
        """

        match = _event_matcher(Message, event, payload, topic)
        what = _call("push", event, payload) + _to(socket)
        message = cast(Message, await self._take(match, timeout, what, socket))
        if message.event == PHX_ERROR:
            for joined in self._crashes:
                if joined.topic == message.topic and joined.join_ref == message.join_ref:
                    self._acknowledge(joined)
                    break
        return message

    async def refute_push(
        self,
        event: str,
        payload: Pattern = ANY,
        *,
        topic: str | None = None,
        socket: TestSocket | None = None,
        timeout: float | None = None,
    ) -> None:
        """Fail if a matching push arrives within ``timeout`` (0.1 s by default), to any
        socket or to ``socket``."""
        await self._refute(
            _event_matcher(Message, event, payload, topic),
            timeout,
            _call("push", event, payload, verb="refute") + _to(socket),
            socket,
        )

    async def assert_reply(
        self,
        ref: str,
        status: Pattern = "ok",
        payload: Pattern = ANY,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Wait for the reply to the push whose ref is ``ref``; returns its response."""

        def match(item: Any) -> bool:
            return type(item) is Reply and item.ref == ref

        reply = cast(Reply, await self._take(match, timeout, _call("reply", ref, status, payload)))
        if not (_matches(status, reply.status) and _matches(payload, reply.response)):
            raise AssertionError(
                f"the reply to ref {ref!r} is {reply.status!r} {reply.response!r}; "
                f"expected {status!r} {payload!r}"
            )
        return reply.response

    async def refute_reply(
        self,
        ref: str,
        status: Pattern = ANY,
        payload: Pattern = ANY,
        *,
        timeout: float | None = None,
    ) -> None:
        """Fail if a matching reply to ``ref`` arrives within ``timeout``."""
        await self._refute(
            lambda item: (
                type(item) is Reply
                and item.ref == ref
                and _matches(status, item.status)
                and _matches(payload, item.response)
            ),
            timeout,
            _call("reply", ref, status, payload, verb="refute"),
        )

    async def assert_broadcast(
        self,
        event: str,
        payload: Pattern = ANY,
        *,
        topic: str | None = None,
        timeout: float | None = None,
    ) -> Broadcast:
        """Wait for a broadcast on a topic the test subscribed to; returns it."""

        match = _event_matcher(Broadcast, event, payload, topic)
        return cast(Broadcast, await self._take(match, timeout, _call("broadcast", event, payload)))

    async def refute_broadcast(
        self,
        event: str,
        payload: Pattern = ANY,
        *,
        topic: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Fail if a matching broadcast arrives within ``timeout``."""
        await self._refute(
            _event_matcher(Broadcast, event, payload, topic),
            timeout,
            _call("broadcast", event, payload, verb="refute"),
        )

    # -- internals ---------------------------------------------------------------------------

    def _next_ref(self) -> str:
        return str(next(self._refs))

    def _deliver(self, item: Any, to: TestSocket | None = None) -> None:
        self._recipients_in_step().append(to)
        self.received.append(item)
        self._wake()

    def _recipients_in_step(self) -> list[TestSocket | None]:
        # A test may edit ``received`` itself; then who got what is unknown.
        if len(self._recipients) != len(self.received):
            self._recipients = [None] * len(self.received)
        return self._recipients

    def _wake(self) -> None:
        if self._arrived is not None:
            self._arrived.set()

    def _find(self, match: Callable[[Any], bool], to: TestSocket | None = None) -> Any:
        recipients = self._recipients_in_step()
        for index, item in enumerate(self.received):
            if (to is None or recipients[index] is to) and match(item):
                del self.received[index]
                del recipients[index]
                return item
        return None

    async def _take(
        self,
        match: Callable[[Any], bool],
        timeout: float | None,
        what: str,
        to: TestSocket | None = None,
    ) -> Any:
        limit = DEFAULT_ASSERT_TIMEOUT if timeout is None else timeout
        await self.start()
        arrived = self._arrived
        assert arrived is not None
        try:
            async with asyncio.timeout(limit):
                while True:
                    found = self._find(match, to)
                    if found is not None:
                        return found
                    self._check_crashes()
                    arrived.clear()
                    await arrived.wait()
        except TimeoutError:
            self._check_crashes()
            raise AssertionError(
                f"{what}: nothing matching arrived within {limit:g} s. " + self._inbox_report()
            ) from None

    async def _refute(
        self,
        match: Callable[[Any], bool],
        timeout: float | None,
        what: str,
        to: TestSocket | None = None,
    ) -> None:
        limit = DEFAULT_REFUTE_TIMEOUT if timeout is None else timeout
        await self.start()
        arrived = self._arrived
        assert arrived is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            for item, recipient in zip(self.received, self._recipients_in_step(), strict=True):
                if (to is None or recipient is to) and match(item):
                    raise AssertionError(f"{what}: it arrived: {_describe(item, recipient)}")
            self._check_crashes()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await arrived.wait()
            except TimeoutError:
                pass

    def _inbox_report(self) -> str:
        if not self.received:
            return "Nothing else arrived either."
        pairs = list(zip(self.received, self._recipients_in_step(), strict=True))[-20:]
        lines = [_describe(item, to) for item, to in pairs]
        more = len(self.received) - len(lines)
        head = f"Arrived and not consumed ({len(self.received)}"
        head += ", the last 20 shown):" if more else "):"
        return head + "\n  " + "\n  ".join(lines)

    def _build_channel(
        self,
        sock: Socket,
        channel_cls: type[Channel],
        topic: str,
        join_ref: Any,
        assigns: dict[str, Any] | None,
    ) -> Channel:
        """Each test socket's ``channel_factory``: build the channel, and watch it."""
        channel = channel_cls(sock, topic, join_ref, assigns)
        owner = next(s for s in self._sockets if s.socket is sock)
        joined = TestChannel(self, owner, channel)
        self._channels.append(joined)
        self._joins[str(channel.join_ref)] = joined
        channel.observer = _Watch(self, joined)

        def ended(_channel: Channel) -> None:
            joined._ended.set()
            self._wake()

        channel.on_stop(ended)
        return channel

    def _acknowledge(self, joined: TestChannel) -> None:
        if joined in self._crashes:
            self._crashes.remove(joined)

    def _check_crashes(self) -> None:
        if self._crashes:
            joined = self._crashes.pop(0)
            crash = joined._crash
            raise ChannelCrashed(
                f"{type(joined.channel).__name__} on {joined.topic!r} crashed: {crash!r} "
                "(expect it with `await channel.assert_crashed()`)"
            ) from crash


def _call(kind: str, *args: Any, verb: str = "assert") -> str:
    shown = ", ".join("ANY" if a is ANY else repr(a) for a in args)
    return f"{verb}_{kind}({shown})"


def _check_endpoint(value: Any) -> Endpoint:
    if not isinstance(value, Endpoint):
        raise ConfigurationError(
            f"phoenix_endpoint must return a phoenix_channels.Endpoint, got {value!r}"
        )
    return value
