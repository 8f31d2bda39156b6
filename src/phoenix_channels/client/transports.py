"""How the client reaches a server: WebSocket, or HTTP long polling, behind one small API.

A transport is one connection attempt. The socket creates one per
(re)connect with the full URL (``.../socket/websocket?...&vsn=2.0.0`` or
``.../socket/longpoll?...``) and drives it:

* ``await connect()``: open it, or raise :class:`ConnectError`
  (:class:`ConnectionRefused` when the server said no);
* ``send(data, binary)``: queue one encoded frame (never blocks);
* ``await recv()``: the next frame as ``(data, binary)``, or
  :class:`TransportClosed` with a close code once it is over;
* ``await close(code, reason)``: end it (the socket ignores it from then on).

Frames waiting to be written are bounded by
``TransportOptions.max_outbound_bytes``: past it the server is not reading
and the connection is closed as dead (code 1008), which makes the socket
reconnect.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl as ssl_module
from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import orjson
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from ._http import HTTPClient, HTTPError
from ._wakeup import Wakeup
from .errors import ConnectError, ConnectionRefused

__all__ = [
    "AUTH_TOKEN_PREFIX",
    "LongPollTransport",
    "Transport",
    "TransportClosed",
    "TransportOptions",
    "WebSocketTransport",
]

log = logging.getLogger("phoenix_channels.client")

AUTH_TOKEN_PREFIX = "base64url.bearer.phx."
_CLOSE_TIMEOUT = 2.0
_MAX_BATCH = 100  # messages per long-poll POST, as the JS client and the server agree


class TransportClosed(Exception):
    """The connection is over: ``code`` and ``reason`` as in a WebSocket close."""

    def __init__(self, code: int, reason: str, error: BaseException | None = None) -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason
        self.error = error


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """What every transport is given; the socket fills it from its own options."""

    auth_token: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    connect_timeout: float = 10.0
    longpoll_timeout: float = 20.0
    max_frame_size: int = 10_000_000
    max_outbound_bytes: int = 16 * 1024 * 1024
    compress: bool = False
    ssl: ssl_module.SSLContext | None = None
    vsn: str = "2.0.0"
    user_agent: str = "phoenix-channels"


class Transport(Protocol):
    """One connection to a server. ``path`` is the sub-path the socket appends."""

    path: ClassVar[str]
    skip_heartbeat: ClassVar[bool]

    def __init__(self, url: str, options: TransportOptions) -> None: ...

    async def connect(self) -> None: ...

    def send(self, data: bytes, binary: bool) -> None: ...

    async def recv(self) -> tuple[bytes | str, bool]: ...

    async def close(self, code: int, reason: str) -> None: ...


def _with_scheme(url: str, mapping: dict[str, str]) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=mapping.get(parts.scheme, parts.scheme)))


def public_url(url: str) -> str:
    """The URL without its query string: query params often carry tokens."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="", fragment=""))


def _subprotocols(auth_token: str | None) -> list[Subprotocol] | None:
    if auth_token is None:
        return None
    # What the JS client sends: btoa(token) without padding, despite "base64url" in the name.
    encoded = base64.b64encode(auth_token.encode()).decode().rstrip("=")
    return [Subprotocol("phoenix"), Subprotocol(AUTH_TOKEN_PREFIX + encoded)]


class WebSocketTransport:
    """A WebSocket connection (the ``websockets`` library); Phoenix's heartbeat keeps it alive."""

    path: ClassVar[str] = "websocket"
    skip_heartbeat: ClassVar[bool] = False

    def __init__(self, url: str, options: TransportOptions) -> None:
        self.url = _with_scheme(url, {"http": "ws", "https": "wss"})
        self._options = options
        self._ws: ClientConnection | None = None
        self._queue: deque[tuple[bytes, bool]] = deque()
        self._queued_bytes = 0
        self._wakeup = Wakeup()
        self._writer: asyncio.Task[None] | None = None
        self._failure: TransportClosed | None = None

    @property
    def queued_bytes(self) -> int:
        """Bytes of frames waiting to be written."""
        return self._queued_bytes

    async def connect(self) -> None:
        options = self._options
        extra: dict[str, object] = {}
        if options.ssl is not None and self.url.startswith("wss:"):
            extra["ssl"] = options.ssl
        try:
            self._ws = await websockets.connect(
                self.url,
                subprotocols=_subprotocols(options.auth_token),
                additional_headers=list(options.headers) or None,
                compression="deflate" if options.compress else None,
                open_timeout=options.connect_timeout,
                ping_interval=None,  # Phoenix's heartbeat does this job
                ping_timeout=None,
                close_timeout=_CLOSE_TIMEOUT,
                max_size=options.max_frame_size,
                user_agent_header=options.user_agent,
                **extra,  # type: ignore[arg-type]
            )
        except InvalidStatus as exc:
            raise ConnectionRefused(public_url(self.url), exc.response.status_code) from None
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise ConnectError(f"cannot connect to {public_url(self.url)}: {exc}") from exc
        self._writer = asyncio.get_running_loop().create_task(self._write())

    def send(self, data: bytes, binary: bool) -> None:
        if self._failure is not None or self._ws is None:
            return
        self._queue.append((data, binary))
        self._queued_bytes += len(data)
        if self._queued_bytes > self._options.max_outbound_bytes:
            self._fail(
                TransportClosed(
                    1008, f"over {self._options.max_outbound_bytes} bytes waiting to be written"
                )
            )
        self._wakeup.set()

    async def _write(self) -> None:
        ws = self._ws
        assert ws is not None
        queue = self._queue
        try:
            while True:
                while not queue:
                    await self._wakeup.wait()
                data, binary = queue.popleft()
                self._queued_bytes -= len(data)
                await ws.send(data, text=not binary)
        except ConnectionClosed:
            pass  # recv() reports how it closed
        except Exception as exc:  # a bug or an OS error: the connection cannot go on
            self._fail(TransportClosed(1011, f"writing failed: {exc!r}", exc))

    def _fail(self, failure: TransportClosed) -> None:
        log.warning("closing %s: %s", public_url(self.url), failure.reason)
        self._failure = failure
        self._queue.clear()
        self._queued_bytes = 0
        if self._ws is not None:
            self._ws.transport.abort()

    async def recv(self) -> tuple[bytes | str, bool]:
        ws = self._ws
        assert ws is not None, "connect() first"
        try:
            data = await ws.recv()
        except ConnectionClosed as exc:
            if self._failure is not None:
                raise self._failure from None
            if exc.rcvd is not None:  # the server closed it
                raise TransportClosed(exc.rcvd.code, exc.rcvd.reason) from None
            if exc.sent is not None:  # we closed it (a frame over max_frame_size, say)
                raise TransportClosed(exc.sent.code, exc.sent.reason, exc) from None
            raise TransportClosed(1006, "connection lost", exc) from None
        return data, type(data) is not str

    async def close(self, code: int, reason: str) -> None:
        ws = self._ws
        if ws is None:
            return
        try:
            # Let queued frames (a leave, say) go out first, within the close timeout.
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                while self._queue and self._failure is None and self._writer is not None:
                    if self._writer.done():
                        break
                    await asyncio.sleep(0.01)
        except TimeoutError:
            pass
        if self._writer is not None:
            self._writer.cancel()
        await ws.close(code, reason)


class LongPollTransport:
    """HTTP long polling, as the JS client's ``LongPoll`` does it.

    A GET without a session token opens a session (the server answers with
    status 410 and the token); GETs then wait for frames (200, or 204 after
    the server's window). Frames to the server are batched: everything sent
    in the same event-loop turn goes in one POST (``application/x-ndjson``,
    100 lines at most, binary frames as base64 lines), and while a POST is in
    flight later frames wait for it, so the server sees them in order. V1
    frames are posted one per request. No heartbeats: the polling is the
    liveness signal. Close codes, as the JS client reports them: 1005 when a
    request times out, 3410 when the session is gone, 1008 when the server
    refuses, 1011 on any other failure.
    """

    path: ClassVar[str] = "longpoll"
    skip_heartbeat: ClassVar[bool] = True

    def __init__(self, url: str, options: TransportOptions) -> None:
        self.url = _with_scheme(url, {"ws": "http", "wss": "https"})
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectError(f"long polling needs an http(s) or ws(s) URL, got {self.url!r}")
        self._options = options
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._http = HTTPClient(
            parts.scheme,
            parts.hostname,
            port,
            ssl_context=options.ssl,
            user_agent=options.user_agent,
        )
        self._base = parts.path + ("?" + parts.query if parts.query else "")
        self._ndjson = options.vsn.startswith("2.")
        self._token: str | None = None
        self._inbound: deque[str] = deque()
        self._arrived = Wakeup()
        self._closed: TransportClosed | None = None
        self._poller: asyncio.Task[None] | None = None
        self._poster: asyncio.Task[None] | None = None
        self._batch: list[str] | None = None
        self._waiting: list[str] = []
        self._waiting_bytes = 0
        self._awaiting_ack = False

    def _target(self) -> str:
        if self._token is None:
            return self._base
        return f"{self._base}{'&' if '?' in self._base else '?'}token={quote(self._token, safe='')}"

    def _headers(self, get: bool) -> list[tuple[str, str]]:
        headers = list(self._options.headers)
        if self._token is not None:
            # Phoenix 1.8 reads the query parameter, Phoenix main this header: send both.
            headers.append(("X-Phoenix-LongPoll-Token", self._token))
        if get:
            headers.append(("Accept", "application/json"))
            if self._options.auth_token is not None:
                headers.append(("X-Phoenix-AuthToken", self._options.auth_token))
        return headers

    async def _request(
        self, method: str, body: bytes = b"", content_type: str | None = None
    ) -> dict[str, object] | None:
        headers = self._headers(method == "GET")
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        status, data = await self._http.request(
            method, self._target(), headers, body, timeout=self._options.longpoll_timeout
        )
        if status != 200:
            return None
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        return value if type(value) is dict else None

    async def connect(self) -> None:
        try:
            body = await self._request("GET")
        except (HTTPError, TimeoutError) as exc:
            raise ConnectError(f"cannot connect to {public_url(self.url)}: {exc!r}") from exc
        status = body.get("status") if body is not None else None
        token = body.get("token") if body is not None else None
        if status == 410 and type(token) is str:
            self._token = token
            self._poller = asyncio.get_running_loop().create_task(self._poll())
            return
        if status == 403:
            raise ConnectionRefused(public_url(self.url), 403)
        raise ConnectError(
            f"{public_url(self.url)} did not open a long-poll session (answered {body!r})"
        )

    async def _poll(self) -> None:
        while self._closed is None:
            try:
                body = await self._request("GET")
            except TimeoutError:
                return self._fail(1005, "timeout")
            except HTTPError as exc:
                return self._fail(1011, "internal server error", exc)
            status = body.get("status") if body is not None else 0
            if status == 410:
                return self._fail(3410, "session_gone")
            if status == 200:
                messages = body.get("messages") if body is not None else None
                if type(messages) is not list or not all(type(m) is str for m in messages):
                    return self._fail(1011, "malformed poll response")
                self._inbound.extend(messages)
                self._arrived.set()
            elif status == 403:
                return self._fail(1008, "forbidden")
            elif status != 204:
                return self._fail(1011, "internal server error")

    def send(self, data: bytes, binary: bool) -> None:
        if self._closed is not None:
            return
        line = base64.b64encode(data).decode() if binary else data.decode()
        if not self._ndjson:
            self._queue_waiting(line)
            if not self._awaiting_ack:
                self._start_posting()
        elif self._batch is not None:
            self._batch.append(line)
        elif self._awaiting_ack:
            self._queue_waiting(line)
        else:
            # Frames sent in this event-loop turn travel together in one POST.
            self._batch = [line]
            asyncio.get_running_loop().call_soon(self._flush_batch)

    def _queue_waiting(self, line: str) -> None:
        self._waiting.append(line)
        self._waiting_bytes += len(line)
        if self._waiting_bytes > self._options.max_outbound_bytes:
            self._fail(1008, f"over {self._options.max_outbound_bytes} bytes waiting to be posted")

    def _flush_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch and self._closed is None:
            self._waiting[:0] = batch
            self._waiting_bytes += sum(map(len, batch))
            self._start_posting()

    def _start_posting(self) -> None:
        self._awaiting_ack = True
        self._poster = asyncio.get_running_loop().create_task(self._post())

    async def _post(self) -> None:
        try:
            while self._waiting and self._closed is None:
                size = _MAX_BATCH if self._ndjson else 1
                chunk, self._waiting = self._waiting[:size], self._waiting[size:]
                self._waiting_bytes -= sum(map(len, chunk))
                if self._ndjson:
                    body = await self._request(
                        "POST", "\n".join(chunk).encode(), "application/x-ndjson"
                    )
                else:
                    body = await self._request("POST", chunk[0].encode(), "application/json")
                if body is None or body.get("status") != 200:
                    return self._fail(1011, "internal server error")
        except TimeoutError:
            return self._fail(1005, "timeout")
        except HTTPError as exc:
            return self._fail(1011, "internal server error", exc)
        finally:
            self._awaiting_ack = False

    def _fail(self, code: int, reason: str, error: BaseException | None = None) -> None:
        # Every way a session fails is an error, as in the JS LongPoll (onerror, then onclose).
        if self._closed is None:
            if error is None:
                error = ConnectionError(f"{public_url(self.url)}: {reason} ({code})")
            self._closed = TransportClosed(code, reason, error)
            self._stop()
            self._arrived.set()

    def _stop(self) -> None:
        current = asyncio.current_task()
        for task in (self._poller, self._poster):
            if task is not None and task is not current:
                task.cancel()
        self._batch = None
        self._waiting.clear()
        self._waiting_bytes = 0
        self._http.close()

    async def recv(self) -> tuple[bytes | str, bool]:
        while not self._inbound:
            if self._closed is not None:
                raise self._closed
            await self._arrived.wait()
        return self._inbound.popleft(), False

    async def close(self, code: int, reason: str) -> None:
        # A session has no close message: the server ends it when nobody polls.
        if self._closed is None:
            self._closed = TransportClosed(code, reason)
            self._stop()
            self._arrived.set()
