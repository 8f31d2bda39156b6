"""The Redis adapter: broadcasts between nodes over Redis pub/sub.

``PubSub.redis("redis://127.0.0.1:6379/0")`` builds it. Each node holds two
connections to Redis:

* a **subscriber** connection, subscribed to ``<prefix>:n:<node name>`` (direct
  broadcasts to this node) and to ``<prefix>:t:<topic>`` for every topic
  this node has subscribers for (or ``<prefix>:s:<shard>`` with
  ``shards=N``); messages are dispatched as they are parsed, straight from
  the protocol's ``data_received``;
* a **publisher** connection on which PUBLISH commands are pipelined: many
  broadcasts in flight share it, each waits for its own reply, and the
  order of broadcasts from one task is the order Redis sees.

Pub/sub needs five Redis commands (AUTH, CLIENT SETNAME, SUBSCRIBE,
UNSUBSCRIBE, PUBLISH, plus PING for health), so this module speaks RESP2
itself (:class:`RespConnection`): no hidden retries or reconnects inside a
client library, one parse per message, and failures mapped to one place.
URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS,
``unix:///path/to/socket``. Redis pub/sub channels are not per database:
the ``/db`` part is accepted and ignored; ``prefix`` is what keeps two
applications on one Redis apart.

Redis Cluster has its own adapter, on this module's connection code
(:mod:`.redis_cluster`); Sentinel is not supported.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, Unpack
from urllib.parse import unquote, urlsplit

from ..errors import ConfigurationError
from ._cluster import EngineAdapter, EngineRefused, within
from .options import EngineArgs, EngineOptions

__all__ = [
    "RedisAdapter",
    "RedisConnectionError",
    "RedisError",
    "RespConnection",
    "parse_redis_url",
]

log = logging.getLogger("phoenix_channels.pubsub.redis")

_CRLF = b"\r\n"
_NAME_RE = re.compile(r"[^A-Za-z0-9_.:\-]")


class RedisError(Exception):
    """An error reply from Redis (``-ERR ...``)."""


class RedisConnectionError(RedisError):
    """The connection to Redis broke (or was never made); pending commands fail with it."""


class _Incomplete(Exception):
    pass


_INCOMPLETE = _Incomplete()


def _parse(buf: bytearray | bytes, pos: int) -> tuple[Any, int]:
    """One RESP2 value at ``pos``: (value, next position); raises _Incomplete."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _INCOMPLETE
    kind = buf[pos]
    if kind == 0x24:  # $ bulk string
        size = int(buf[pos + 1 : end])
        if size < 0:
            return None, end + 2
        start = end + 2
        stop = start + size
        if len(buf) < stop + 2:
            raise _INCOMPLETE
        return bytes(buf[start:stop]), stop + 2
    if kind == 0x2A:  # * array
        count = int(buf[pos + 1 : end])
        if count < 0:
            return None, end + 2
        items = []
        pos = end + 2
        for _ in range(count):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 0x2B:  # + simple string
        return bytes(buf[pos + 1 : end]), end + 2
    if kind == 0x3A:  # : integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 0x2D:  # - error
        return RedisError(buf[pos + 1 : end].decode("utf-8", "replace")), end + 2
    raise RedisError(f"unexpected RESP type byte {chr(kind)!r} from the server")


def _command(args: tuple[bytes | str | int, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8", "surrogatepass")
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(_CRLF)
    return b"".join(parts)


class RespConnection(asyncio.Protocol):
    """One RESP2 connection: pipelined commands with replies in order, plus pub/sub pushes.

    ``command(*args, replies=n)`` writes a command and returns a future for
    its replies (``n`` of them for SUBSCRIBE/UNSUBSCRIBE of ``n`` channels,
    which Redis acknowledges one by one). ``["message", channel, data]``
    arrays are pushes, given to ``on_message(channel, data)`` as they are
    parsed. When the connection breaks, every pending future fails with
    :class:`RedisError` and ``on_lost(exc)`` is called once.
    """

    def __init__(
        self,
        on_message: Callable[[bytes, bytes], None] | None = None,
        on_lost: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._buf = bytearray()
        self._pending: deque[tuple[asyncio.Future[Any], int, list[Any]]] = deque()
        self._transport: asyncio.Transport | None = None
        self._closed: BaseException | None = None
        self._drained: asyncio.Future[None] | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        name: str | None = None,
        on_message: Callable[[bytes, bytes], None] | None = None,
        on_lost: Callable[[BaseException | None], None] | None = None,
    ) -> RespConnection:
        """Connect to ``url``, authenticate and name the connection."""
        target = parse_redis_url(url)
        loop = asyncio.get_running_loop()
        conn = cls(on_message, on_lost)
        if target["path"] is not None:
            await loop.create_unix_connection(lambda: conn, target["path"])
        else:
            await loop.create_connection(
                lambda: conn,
                target["host"],
                target["port"],
                ssl=target["ssl"],
                server_hostname=target["host"] if target["ssl"] else None,
            )
        try:
            if target["password"] is not None:
                if target["username"]:
                    await conn.command("AUTH", target["username"], target["password"])
                else:
                    await conn.command("AUTH", target["password"])
            if name:
                try:
                    await conn.command("CLIENT", "SETNAME", _NAME_RE.sub("_", name)[:200])
                except RedisError as exc:
                    if conn.closed:
                        raise
                    log.debug("CLIENT SETNAME refused: %s", exc)
        except BaseException:
            conn.close()
            raise
        return conn

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        size = len(buf)
        try:
            while pos < size:
                try:
                    value, pos = _parse(buf, pos)
                except _Incomplete:
                    break
                self._dispatch(value)
        except (RedisError, ValueError, IndexError) as exc:
            log.error("closing the Redis connection: unreadable data from the server (%s)", exc)
            self._fail(RedisConnectionError(f"protocol error: {exc}"))
            if self._transport is not None:
                self._transport.close()
            return
        if pos:
            del buf[:pos]

    def _dispatch(self, value: Any) -> None:
        if type(value) is list and len(value) == 3 and value[0] == b"message":
            if self._on_message is not None:
                self._on_message(value[1], value[2])
            return
        if not self._pending:
            log.warning("unexpected reply from Redis: %r", value)
            return
        future, expected, replies = self._pending[0]
        if isinstance(value, RedisError):
            self._pending.popleft()
            if not future.done():
                future.set_exception(value)
            return
        replies.append(value)
        if len(replies) >= expected:
            self._pending.popleft()
            if not future.done():
                future.set_result(replies[0] if expected == 1 else replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or RedisConnectionError("the server closed the connection"))

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._closed is not None:
            return
        self._closed = exc
        error = (
            exc
            if isinstance(exc, RedisConnectionError)
            else RedisConnectionError(f"connection lost: {exc}")
        )
        pending, self._pending = self._pending, deque()
        for future, _n, _r in pending:
            if not future.done():
                future.set_exception(error)
        self.resume_writing()
        if self._on_lost is not None:
            self._on_lost(exc)

    # -- commands ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def command(self, *args: bytes | str | int, replies: int = 1) -> asyncio.Future[Any]:
        """Write one command; the future resolves to its reply (or list of ``replies``)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        transport = self._transport
        if self._closed is not None or transport is None:
            future.set_exception(RedisConnectionError(f"connection closed ({self._closed})"))
            return future
        self._pending.append((future, replies, []))
        transport.write(_command(args))
        return future

    async def drained(self, timeout: float) -> None:
        """Wait (at most ``timeout``) while the server reads slower than we write."""
        if self._drained is not None:
            await within(self._drained, timeout)
        if self._closed is not None:
            raise RedisConnectionError(f"connection closed ({self._closed})")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._fail(RedisConnectionError("connection closed by this node"))


def parse_redis_url(url: str) -> dict[str, Any]:
    """``host``, ``port``, ``path`` (unix socket), ``ssl``, ``username``, ``password`` of a URL."""
    if type(url) is not str:
        raise ConfigurationError(f"the Redis URL must be a str, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(
            f"unsupported Redis URL {url!r}: use redis://host:port/db, rediss:// (TLS) "
            "or unix:///path/to/redis.sock"
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"invalid port in Redis URL {url!r}") from None
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigurationError(f"the Redis URL {url!r} names no socket path")
        host, path = None, parts.path
    else:
        host, path = parts.hostname or "127.0.0.1", None
    return {
        "host": host,
        "port": port or 6379,
        "path": path,
        "ssl": ssl.create_default_context() if parts.scheme == "rediss" else None,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password is not None else None,
    }


class RedisAdapter(EngineAdapter):
    """Carries broadcasts between nodes over Redis pub/sub (see the module docstring).

    Its options (``node_name``, ``prefix``, ``shards``, ``timeout``,
    ``max_backoff``, ``health_interval``) are declared, with their defaults
    and meanings, in :class:`~phoenix_channels.pubsub.options.EngineOptions`.
    """

    engine = "redis"
    log: ClassVar[logging.Logger] = log

    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", **options: Unpack[EngineArgs]
    ) -> None:
        engine_options = EngineOptions(**options)
        parse_redis_url(url)  # fail at construction on a bad URL
        super().__init__(url, engine_options)
        self._sub: RespConnection | None = None
        self._pub: RespConnection | None = None
        self._checked_name = False

    def _topic_channel(self, topic: str) -> str:
        return f"{self.prefix}:t:{topic}"

    def _shard_channel(self, shard: int) -> str:
        return f"{self.prefix}:s:{shard}"

    def _node_channel(self, node_name: str) -> str:
        return f"{self.prefix}:n:{node_name}"

    async def _open(self) -> None:
        pub = self._pub = await RespConnection.open(
            self.url, name=f"phx-pub-{self.node_name}", on_lost=self._lost_link
        )
        node_channel = self._node_channel(self.node_name)
        if not self._checked_name:
            # Two live nodes with one name would each drop the other's messages as their own.
            _, count = await pub.command("PUBSUB", "NUMSUB", node_channel)
            if count:
                raise ConfigurationError(
                    f"node name {self.node_name!r} is already used by another node on this "
                    f"Redis ({count} subscriber(s) on {node_channel!r}); every node needs a "
                    "unique node_name"
                )
            self._checked_name = True
        sub = self._sub = await RespConnection.open(
            self.url,
            name=f"phx-sub-{self.node_name}",
            on_message=self._on_message,
            on_lost=self._lost_link,
        )
        await sub.command("SUBSCRIBE", node_channel)

    def _lost_link(self, exc: BaseException | None) -> None:
        self._connection_lost(exc)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        self._deliver(data)

    async def _close(self) -> None:
        for conn in (self._sub, self._pub):
            if conn is not None:
                conn._on_lost = None  # an old link's end is not news
                conn.close()
        self._sub = self._pub = None

    async def _subscribe(self, channels: list[str]) -> None:
        assert self._sub is not None
        try:
            await self._sub.command("SUBSCRIBE", *channels, replies=len(channels))
        except RedisConnectionError:
            raise
        except RedisError as exc:
            raise EngineRefused(str(exc)) from None

    async def _unsubscribe(self, channels: list[str]) -> None:
        assert self._sub is not None
        await self._sub.command("UNSUBSCRIBE", *channels, replies=len(channels))

    async def _publish(self, channel: str, data: bytes) -> None:
        pub = self._pub
        if pub is None:
            raise RedisConnectionError("not connected")
        await pub.drained(self.timeout)
        await within(pub.command("PUBLISH", channel, data), self.timeout)

    async def _ping(self) -> None:
        assert self._sub is not None and self._pub is not None
        await asyncio.gather(self._sub.command("PING"), self._pub.command("PING"))
