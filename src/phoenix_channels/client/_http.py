"""Just enough HTTP/1.1 for long polling: keep-alive requests to one origin, over h11.

Long polling needs two requests at a time at most (a GET waiting for frames
and a POST delivering them), bodies that are small JSON documents, and a
timeout per request. h11 (already installed with uvicorn) does the parsing;
this module only moves bytes. An idle connection the server closed meanwhile
is noticed when it answers with nothing, and the request is then sent once
more on a new connection, as browsers do.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Sequence

import h11

__all__ = ["HTTPClient", "HTTPError"]

_MAX_IDLE = 2
_READ = 65536


class HTTPError(OSError):
    """The request failed on the way (connection lost, malformed response, body too large)."""


class _Stale(Exception):
    """A reused connection was closed before it answered anything."""


class _Connection:
    __slots__ = ("h11", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.writer.close()


class HTTPClient:
    """Requests to ``scheme://host:port``; at most two idle connections are kept."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        ssl_context: ssl_module.SSLContext | None = None,
        max_body: int = 64 * 1024 * 1024,
        user_agent: str = "phoenix-channels",
    ) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"long polling needs an http or https URL, got {scheme!r}")
        self._scheme = scheme
        self._host = host
        self._port = port
        self._ssl: ssl_module.SSLContext | None = None
        if scheme == "https":
            self._ssl = ssl_context or ssl_module.create_default_context()
        default = 443 if scheme == "https" else 80
        name = f"[{host}]" if ":" in host else host
        self._authority = name if port == default else f"{name}:{port}"
        self._max_body = max_body
        self._user_agent = user_agent
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        """Send one request; the status and the whole body. Raises HTTPError or TimeoutError."""
        async with asyncio.timeout(timeout):
            while self._idle:
                conn = self._idle.pop()
                try:
                    return await self._exchange(conn, method, target, headers, body)
                except _Stale:
                    continue  # closed by the server while idle: try another connection
            conn = await self._connect()
            try:
                return await self._exchange(conn, method, target, headers, body)
            except _Stale:
                raise HTTPError("the server closed the connection without answering") from None

    def close(self) -> None:
        """Close every connection, including those of requests still running."""
        for conn in [*self._idle, *self._busy]:
            conn.close()
        self._idle.clear()
        self._busy.clear()

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                self._host, self._port, ssl=self._ssl, limit=_READ
            )
        except OSError as exc:
            raise HTTPError(f"cannot connect to {self._scheme}://{self._authority}: {exc}") from exc
        return _Connection(reader, writer)

    async def _exchange(
        self,
        conn: _Connection,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> tuple[int, bytes]:
        self._busy.add(conn)
        reusable = False
        try:
            status, data, reusable = await self._roundtrip(conn, method, target, headers, body)
            return status, data
        finally:
            self._busy.discard(conn)
            if reusable and len(self._idle) < _MAX_IDLE:
                self._idle.append(conn)
            else:
                conn.close()

    async def _roundtrip(
        self,
        conn: _Connection,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> tuple[int, bytes, bool]:
        h = conn.h11
        # A connection that already carried a request may have been closed while idle.
        reused = h.their_http_version is not None
        all_headers = [
            ("Host", self._authority),
            ("User-Agent", self._user_agent),
            ("Content-Length", str(len(body))),
            *headers,
        ]
        try:
            out = h.send(h11.Request(method=method, target=target, headers=all_headers)) or b""
            if body:
                out += h.send(h11.Data(data=body)) or b""
            out += h.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:
            raise HTTPError(f"cannot send the request: {exc}") from None
        received = 0
        try:
            conn.writer.write(out)
            await conn.writer.drain()
            status = 0
            chunks: list[bytes] = []
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    data = await conn.reader.read(_READ)
                    if not data and received == 0 and reused:
                        raise _Stale()
                    received += len(data)
                    h.receive_data(data)
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    size = sum(map(len, chunks)) + len(event.data)
                    if size > self._max_body:
                        raise HTTPError(f"response body over {self._max_body} bytes")
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise HTTPError("connection closed before the response ended")
        except (ConnectionError, h11.RemoteProtocolError) as exc:
            if received == 0 and reused:
                raise _Stale() from None
            raise HTTPError(f"the request failed: {exc}") from exc
        reusable = h.our_state is h11.DONE and h.their_state is h11.DONE
        if reusable:
            h.start_next_cycle()
        return status, b"".join(chunks), reusable
