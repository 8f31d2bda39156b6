"""HTTP long polling: the JS client's fallback transport.

A long-poll *session* plays the part of a WebSocket connection: it carries
one :class:`~phoenix_channels.Socket`, keeps an outbox of encoded frames,
and is reached by independent HTTP requests that carry its signed token:

* ``GET`` without a live session creates one (body status 410 and the token);
* ``GET`` with one returns the frames waiting in the outbox (200), or waits
  up to ``window`` seconds for some (204 if none came);
* ``POST`` delivers the client's frames (``application/x-ndjson``: one frame
  a line, at most 100, base64 lines being binary frames; anything else: the
  whole body is one frame).

Every response is HTTP 200 with the real status in the JSON body, as the JS
client expects. A session lives in the process whose endpoint created it;
a request that lands on another endpoint of the cluster reaches it through
PubSub on the session's private topic (the token says which), so no sticky
routing is needed. A session nobody polled for ``1.5 * window`` seconds is
closed and its channels end with ``"shutdown:inactive"``.

Server-to-client binary frames cannot travel here (the JS client decodes
every long-poll message as JSON text). Rather than fail the whole poll as
Phoenix does, a binary *reply* becomes an error reply saying so, a binary
*push* raises :class:`~phoenix_channels.errors.EncodeError` in the pushing
code, and a binary *broadcast* skips long-poll subscribers with a warning.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import EncodeError, PhoenixChannelsError
from ..protocol import V1, V2, Broadcast, Ref
from .base import FrameEncoder

if TYPE_CHECKING:
    from ..endpoint import ASGIReceive, ASGISend, Endpoint, Scope, SocketClass
    from .base import SocketHandler

__all__ = ["LongPoll", "LongPollSession", "serve_longpoll"]

from ..telemetry import SOCKET_LIMIT, limit_hit

log = logging.getLogger("phoenix_channels.longpoll")

_SALT = "phoenix_channels longpoll session"
_MAX_BATCH = 100
_MAX_LINE = 10_000_000
_BINARY_REPLY = {"reason": "binary payloads cannot be sent over long polling"}
_JSON_HEADERS = [
    (b"content-type", b"application/json; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"access-control-allow-origin", b"*"),
]


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
        from ..errors import ConfigurationError

        if self.window <= 0 or self.pubsub_timeout <= 0 or self.max_age <= 0:
            raise ConfigurationError("LongPoll window, pubsub_timeout and max_age must be > 0")
        if self.max_outbox < 1 or self.max_body < 1024:
            raise ConfigurationError("LongPoll max_outbox >= 1 and max_body >= 1024 required")


# -- frames: text only ----------------------------------------------------------------


def _text(data: bytes, binary: bool) -> str:
    if binary:
        raise EncodeError(
            "binary payloads cannot be sent over long polling; send JSON to "
            "long-poll clients (socket.transport.name == 'longpoll')"
        )
    return data.decode()


class _LongPollEncoder(FrameEncoder):
    """Frames as JSON text; binary payloads handled as the module docstring says."""

    __slots__ = ()

    def reply(self, join_ref: Ref, ref: Ref, topic: str, status: str, response: Any) -> Any:
        if type(response) is bytes:
            log.warning("binary reply on %r turned into an error reply: the client polls", topic)
            status, response = "error", _BINARY_REPLY
        return super().reply(join_ref, ref, topic, status, response)

    def broadcast(self, broadcast: Broadcast) -> Any:
        if type(broadcast.payload) is bytes:
            log.warning(
                "binary broadcast %r on %r not sent to long-poll clients",
                broadcast.event,
                broadcast.topic,
            )
            return None
        return super().broadcast(broadcast)


_ENCODERS = {s.vsn: _LongPollEncoder("longpoll", s, _text) for s in (V1, V2)}


# -- the session --------------------------------------------------------------------


class LongPollSession:
    """The Transport of one long-poll client: an outbox between polls."""

    name = "longpoll"

    def __init__(self, endpoint: Endpoint, socket: SocketHandler, options: LongPoll) -> None:
        self.endpoint = endpoint
        self.socket: SocketHandler | None = socket
        self.options = options
        self.encoder: FrameEncoder = _ENCODERS[socket.serializer.vsn]
        self.id = secrets.token_urlsafe(12)
        self.topic = f"phx:lp:{secrets.token_urlsafe(16)}{int(time.time() * 1000)}"
        self.timeout = 1.5 * options.window
        self.last_seen = time.monotonic()
        self.token = ""
        self.closed = False
        self._outbox: deque[str] = deque()
        self._waiter: asyncio.Future[list[str]] | None = None
        self._wake_scheduled = False
        self._remote_waiter: str | None = None  # ref of a poll waiting on another node

    # -- the Transport API -----------------------------------------------------------

    def send(self, item: str | None) -> None:
        if item is None or self.closed:
            return
        self._outbox.append(item)
        if len(self._outbox) > self.options.max_outbox:
            log.warning(
                "closing a long-poll session whose client stopped polling (%d frames waiting)",
                len(self._outbox),
            )
            sock = self.socket
            if SOCKET_LIMIT.on:
                limit_hit(sock, "slow_consumer", True, self.name)
            if sock is not None:
                sock.close(1013, "slow consumer")
            return
        if (self._waiter is not None or self._remote_waiter) and not self._wake_scheduled:
            # Wake the poller on the next turn, so frames sent together leave together.
            self._wake_scheduled = True
            asyncio.get_running_loop().call_soon(self._wake)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """End the session; frames still waiting go to a poll in progress, if any."""
        if self.closed:
            return
        self.closed = True
        self.endpoint.connections.discard(self)
        self.endpoint.longpoll_sessions.pop(self.id, None)
        self.endpoint.pubsub.unsubscribe(self.topic, self._on_command)
        sock, self.socket = self.socket, None
        if sock is not None:
            sock.closed("shutdown:closed")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._take())

    def pause_reading(self) -> None:
        """Requests are read one at a time already."""

    def resume_reading(self) -> None:
        """See :meth:`pause_reading`."""

    # -- the endpoint's hooks ------------------------------------------------------------

    def idle_close(self) -> None:
        log.debug("long-poll session %s inactive: closing", self.id)
        self._end(1001, "inactive", "shutdown:inactive")

    def drain(self) -> None:
        self._end(1012, "server restart", "shutdown:draining")

    def _end(self, code: int, reason: str, channel_reason: Any) -> None:
        sock = self.socket
        if sock is not None:
            sock.close(code, reason, channel_reason)
        else:
            self.close(code, reason)

    # -- polling (on this node) --------------------------------------------------------------

    def _take(self) -> list[str]:
        frames = list(self._outbox)
        self._outbox.clear()
        return frames

    def _wake(self) -> None:
        self._wake_scheduled = False
        waiter = self._waiter
        if waiter is not None and not waiter.done() and self._outbox:
            self._waiter = None
            waiter.set_result(self._take())
        if self._remote_waiter and self._outbox:
            ref, self._remote_waiter = self._remote_waiter, None
            self._answer({"lp": "now_available", "ref": ref})

    async def poll(self, window: float) -> list[str]:
        """Frames waiting now, or the first ones to come within ``window`` seconds."""
        self.last_seen = time.monotonic()
        if self._outbox or self.closed:
            return self._take()
        previous = self._waiter
        if previous is not None and not previous.done():
            previous.set_result([])  # a newer poll replaces it
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), window)
        except TimeoutError:
            # frames handed over just as the window closed are not dropped
            return waiter.result() if waiter.done() and not waiter.cancelled() else []
        except asyncio.CancelledError:
            # the client went away: frames handed to this poll go back for the next one
            if waiter.done() and not waiter.cancelled():
                self._outbox.extendleft(reversed(waiter.result()))
            raise
        finally:
            if self._waiter is waiter:
                self._waiter = None
            if not waiter.done():
                waiter.cancel()

    def dispatch(self, frames: list[tuple[bytes, bool]]) -> None:
        """Hand the client's frames to the socket, in order."""
        sock = self.socket
        for data, binary in frames:
            if sock is None or self.closed:
                return
            sock.receive(data, binary)

    # -- requests from other nodes, through PubSub ----------------------------------------------

    def _answer(self, message: dict[str, Any]) -> None:
        asyncio.get_running_loop().create_task(
            self.endpoint.pubsub.broadcast(self.topic, message, from_=self._on_command)
        )

    def _on_command(self, message: Any) -> None:
        if not isinstance(message, dict) or "cmd" not in message:
            return
        command, ref = message["cmd"], message.get("ref")
        if command == "ping":
            self._answer({"lp": "pong", "ref": ref})
        elif command == "flush":
            self.last_seen = time.monotonic()
            if self._outbox:
                self._answer({"lp": "messages", "ref": ref, "messages": self._take()})
            else:
                self._remote_waiter = ref
        elif command == "expired":
            if self._remote_waiter == ref:
                self._remote_waiter = None
        elif command == "dispatch":
            frames = [
                (base64.b64decode(f), True) if b else (f.encode(), False)
                for f, b in message.get("frames", [])
            ]
            self.dispatch(frames)
            self._answer({"lp": "ok", "ref": ref})


# -- finding a session -----------------------------------------------------------------------


class _Remote:
    """A session on another node, driven through PubSub on its private topic."""

    def __init__(self, endpoint: Endpoint, topic: str, options: LongPoll) -> None:
        self.endpoint = endpoint
        self.topic = topic
        self.options = options
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._notices: asyncio.Queue[str] = asyncio.Queue()

    def _on_answer(self, message: Any) -> None:
        if not isinstance(message, dict) or "lp" not in message:
            return
        ref = message.get("ref")
        if message["lp"] == "now_available" and isinstance(ref, str):
            self._notices.put_nowait(ref)
            return
        future = self._answers.get(ref) if isinstance(ref, str) else None
        if future is not None and not future.done():
            future.set_result(message)

    async def __aenter__(self) -> _Remote:
        self.endpoint.pubsub.subscribe(self.topic, self._on_answer)
        # on a cluster adapter: be subscribed on the engine before asking anything
        await self.endpoint.pubsub.prepare(self.topic)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.endpoint.pubsub.unsubscribe(self.topic, self._on_answer)

    async def call(self, command: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        ref = secrets.token_hex(8)
        future = self._answers[ref] = asyncio.get_running_loop().create_future()
        try:
            await self.endpoint.pubsub.broadcast(
                self.topic, {**command, "ref": ref}, from_=self._on_answer
            )
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self._answers.pop(ref, None)

    async def alive(self) -> bool:
        return await self.call({"cmd": "ping"}, self.options.pubsub_timeout) is not None

    async def poll(self, window: float) -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        ref = secrets.token_hex(8)
        future = self._answers[ref] = loop.create_future()
        try:
            await self.endpoint.pubsub.broadcast(
                self.topic, {"cmd": "flush", "ref": ref}, from_=self._on_answer
            )
            while True:
                notice = asyncio.ensure_future(self._notices.get())
                done, _ = await asyncio.wait(
                    {future, notice},
                    timeout=deadline - loop.time(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if future in done:
                    notice.cancel()
                    return list(future.result().get("messages", []))
                if notice in done and notice.result() == ref:
                    # frames arrived meanwhile: ask for them (a fresh window)
                    answer = await self.call({"cmd": "flush"}, window)
                    return list(answer.get("messages", [])) if answer else []
                if not done:
                    notice.cancel()
                    await self.endpoint.pubsub.broadcast(
                        self.topic, {"cmd": "expired", "ref": ref}, from_=self._on_answer
                    )
                    return []
        finally:
            self._answers.pop(ref, None)

    async def dispatch(self, frames: list[tuple[bytes, bool]], timeout: float) -> bool:
        wire = [
            [base64.b64encode(d).decode(), True] if b else [d.decode(), False] for d, b in frames
        ]
        return await self.call({"cmd": "dispatch", "frames": wire}, timeout) is not None


def _session_token(endpoint: Endpoint, session: LongPollSession, options: LongPoll) -> str:
    from .. import token

    return token.sign(
        endpoint,
        _SALT,
        {"v": 1, "e": endpoint.instance_id, "s": session.id, "t": session.topic},
        max_age=options.max_age,
    )


def _read_token(endpoint: Endpoint, value: str | None, options: LongPoll) -> dict[str, Any] | None:
    from .. import token

    if not value:
        return None
    try:
        data = token.verify(endpoint, _SALT, value, max_age=options.max_age)
    except PhoenixChannelsError:
        return None
    if not isinstance(data, dict) or data.get("v") != 1 or not isinstance(data.get("t"), str):
        return None
    return data


# -- HTTP ------------------------------------------------------------------------------------


async def _respond(
    send: ASGISend, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    all_headers = list(headers if headers is not None else _JSON_HEADERS)
    all_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: ASGISend, body: dict[str, Any]) -> None:
    await _respond(send, 200, orjson.dumps(body))


async def _read_body(receive: ASGIReceive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _frames(body: bytes, content_type: str) -> list[tuple[bytes, bool]] | None:
    """The client's frames in a POST body; None if a line is unreadable."""
    if content_type.split(";")[0].strip().lower() != "application/x-ndjson":
        return [(body, False)]
    frames: list[tuple[bytes, bool]] = []
    for line in body.replace(b"\r\n", b"\n").split(b"\n")[:_MAX_BATCH]:
        if not line:
            continue
        if line[:1] == b"[":
            frames.append((line, False))
            continue
        if len(line) > _MAX_LINE:
            return None
        try:
            frames.append((base64.b64decode(line, validate=True), True))
        except (binascii.Error, ValueError):
            return None
    return frames


async def _unless_disconnected(
    poll: Awaitable[list[str]], receive: ASGIReceive
) -> list[str] | None:
    """The poll's frames, or None if the client disconnected first (the poll is cancelled)."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    polling = asyncio.ensure_future(poll)
    watching = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({polling, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
    if polling.done():
        return polling.result()
    polling.cancel()
    try:
        await polling
    except asyncio.CancelledError:
        pass
    return None


async def serve_longpoll(
    endpoint: Endpoint,
    socket_cls: SocketClass,
    options: LongPoll,
    scope: Scope,
    receive: ASGIReceive,
    send: ASGISend,
) -> None:
    """Answer one long-poll HTTP request (an ASGI ``http`` scope)."""
    from ..endpoint import Refused, parse_params

    method = scope["method"]
    headers: list[tuple[bytes, bytes]] = list(scope["headers"])
    named = dict(headers)
    if method == "OPTIONS":
        allow = b", ".join(v for k, v in headers if k == b"access-control-request-headers")
        await _respond(
            send,
            200,
            b"",
            [
                (b"access-control-allow-origin", b"*"),
                (b"access-control-allow-headers", allow),
                (b"access-control-allow-methods", b"get, post, options"),
                (b"access-control-max-age", b"3600"),
            ],
        )
        return
    if method not in ("GET", "POST"):
        await _respond(send, 400, b"", [(b"access-control-allow-origin", b"*")])
        return
    query = scope.get("query_string", b"").decode("latin-1")
    params = parse_params(query) if query else {}
    origin = named.get(b"origin")
    if origin is not None:
        host_header = named.get(b"host", b"").decode("latin-1")
        host, _, port = host_header.partition(":")
        if not endpoint.origin_policy.allows(
            origin.decode("latin-1"),
            scope.get("scheme", "http"),
            host,
            int(port) if port.isdigit() else None,
        ):
            log.error("refused a long-poll request from origin %r", origin.decode("latin-1"))
            await _json(send, {"status": 403})
            return
    header_token = named.get(b"x-phoenix-longpoll-token")
    raw_token = header_token.decode("latin-1") if header_token else params.get("token")
    found = _read_token(endpoint, raw_token if isinstance(raw_token, str) else None, options)
    session: LongPollSession | None = None
    remote: _Remote | None = None
    if found is not None:
        session = endpoint.longpoll_sessions.get(found["s"])
        if session is None and found.get("e") != endpoint.instance_id:
            remote = _Remote(endpoint, found["t"], options)

    if method == "POST":
        body = await _read_body(receive, options.max_body)
        frames = (
            None
            if body is None
            else _frames(body, named.get(b"content-type", b"").decode("latin-1"))
        )
        if frames is None:
            await _respond(send, 400, b"", [(b"access-control-allow-origin", b"*")])
            return
        if session is not None:
            session.dispatch(frames)
            await _json(send, {"status": 200})
            return
        if remote is not None:
            async with remote:
                if await remote.alive():
                    ok = await remote.dispatch(frames, options.window)
                    await _json(send, {"status": 200 if ok else 408})
                    return
        await _json(send, {"status": 410})
        return

    # GET
    if session is not None:
        messages = await _unless_disconnected(session.poll(options.window), receive)
        if messages is None:
            return
        await _json(
            send, {"status": 200 if messages else 204, "token": raw_token, "messages": messages}
        )
        return
    if remote is not None:
        async with remote:
            if await remote.alive():
                messages = await remote.poll(options.window)
                await _json(
                    send,
                    {"status": 200 if messages else 204, "token": raw_token, "messages": messages},
                )
                return
    # No live session: open one.
    if socket_cls.auth_token and b"x-phoenix-authtoken" in named:
        headers = [(k, v) for k, v in headers if k != b"sec-websocket-protocol"]
        encoded = base64.b64encode(named[b"x-phoenix-authtoken"]).decode().rstrip("=")
        headers.append(
            (b"sec-websocket-protocol", f"phoenix, base64url.bearer.phx.{encoded}".encode())
        )
    client = scope.get("client")
    outcome = await endpoint.handshake(
        socket_cls,
        method="GET",
        path=scope["path"],
        query=query,
        headers=headers,
        scheme=scope.get("scheme", "http"),
        peer=(client[0], client[1]) if client else None,
        websocket=False,
    )
    if isinstance(outcome, Refused):
        await _json(send, {"status": 403})
        return
    new = LongPollSession(endpoint, outcome.socket, options)
    new.token = _session_token(endpoint, new, options)
    endpoint.longpoll_sessions[new.id] = new
    endpoint.connections.add(new)
    endpoint.pubsub.subscribe(new.topic, new._on_command)
    await endpoint.pubsub.prepare(new.topic)  # reachable from other nodes before the client knows
    outcome.socket.attach(new)
    await _json(send, {"status": 410, "token": new.token, "messages": []})


def longpoll_options(socket_cls: SocketClass) -> LongPoll | None:
    """The long-poll options of a socket class (its ``longpoll`` attribute), or None."""
    value = getattr(socket_cls, "longpoll", False)
    if value is True:
        return LongPoll()
    if isinstance(value, LongPoll):
        return value
    return None
