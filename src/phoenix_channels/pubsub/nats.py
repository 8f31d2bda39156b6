"""The NATS adapter: broadcasts between nodes over core NATS subjects.

``PubSub.nats("nats://127.0.0.1:4222")`` builds it, on the ``nats-py``
client (``pip install 'phoenix-channels[nats]'``). Each node holds one NATS
connection, subscribed to ``<prefix>.n.<node>`` (direct broadcasts to this
node) and to one subject per topic it has subscribers for (or one per
shard with ``shards=N``). Topics become subject tokens: a topic made of
letters, digits, ``_``, ``-`` and ``:`` is used as is (``phx.t.room:lobby``);
any other topic is base64url-encoded (``phx.xt.b<...>``), and one too long
for a subject is hashed (``phx.ht.<sha256>``; the topic travels inside the
message, so a hash shared by two topics only costs a dropped message on a
node that has one of them). The connection is made with ``no_echo``, so
NATS does not send a node its own broadcasts back.

Reconnection is this package's own (``allow_reconnect=False`` on the
client): on a lost connection the adapter logs once, reconnects with
exponential backoff and resubscribes, exactly like the Redis adapter,
instead of letting the client buffer publishes while it reconnects (a
broadcast during an outage must fail, not wait).

Credentials, TLS and server lists go in the URL (``nats://user:pass@host``,
``tls://host:4222``, ``nats://a:4222,nats://b:4222``); other ``nats.connect``
options can be passed in ``connect_options``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
import re
from typing import TYPE_CHECKING, Any, ClassVar, Unpack

from ..errors import ConfigurationError
from ._cluster import EngineAdapter
from .options import NatsArgs, NatsOptions

__all__ = ["NatsAdapter", "subject_token"]

log = logging.getLogger("phoenix_channels.pubsub.nats")

_PLAIN = re.compile(r"[A-Za-z0-9_\-:]+\Z")
_MAX_TOKEN = 200

try:
    import nats as _nats
except ImportError:  # pragma: no cover - exercised only without the extra installed
    _nats = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from nats.aio.client import Client as _NatsClient
    from nats.aio.msg import Msg as _NatsMsg


def subject_token(kind: str, name: str) -> str:
    """``name`` (a topic or node name) as subject tokens, one-to-one except for hashed ones."""
    if _PLAIN.match(name) and len(name) <= _MAX_TOKEN:
        return f"{kind}.{name}"
    encoded = base64.urlsafe_b64encode(name.encode("utf-8", "surrogatepass")).rstrip(b"=")
    if len(encoded) <= _MAX_TOKEN:
        return f"x{kind}.b{encoded.decode()}"  # "b": never an empty token
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    return f"h{kind}.{digest}"


class NatsAdapter(EngineAdapter):
    """Carries broadcasts between nodes over NATS (see the module docstring).

    Its options are declared, with their defaults and meanings, in
    :class:`~phoenix_channels.pubsub.options.NatsOptions`: those of every
    engine plus ``connect_options`` (extra keyword arguments for
    ``nats.connect``). The node name must be unique in the cluster; NATS
    cannot check that for us.
    """

    engine = "nats"
    log: ClassVar[logging.Logger] = log

    def __init__(self, url: str = "nats://127.0.0.1:4222", **options: Unpack[NatsArgs]) -> None:
        if _nats is None:
            raise ConfigurationError(
                "the NATS adapter needs the nats-py package: pip install 'phoenix-channels[nats]'"
            )
        nats_options = NatsOptions(**options)
        servers = [part.strip() for part in url.split(",")] if type(url) is str else []
        if not servers or not all(
            s.split("://", 1)[0] in ("nats", "tls", "ws", "wss") and "://" in s for s in servers
        ):
            raise ConfigurationError(
                f"unsupported NATS URL {url!r}: use nats://host:4222 (tls:// for TLS; "
                "several servers separated by commas)"
            )
        super().__init__(url, nats_options)
        self._servers = servers
        self._flush_timeout = max(1, math.ceil(self.timeout))  # the client takes whole seconds
        self._options = dict(nats_options.connect_options or {})
        self._nc: _NatsClient | None = None
        self._subs: dict[str, Any] = {}

    def _topic_channel(self, topic: str) -> str:
        return f"{self.prefix}.{subject_token('t', topic)}"

    def _shard_channel(self, shard: int) -> str:
        return f"{self.prefix}.s.{shard}"

    def _node_channel(self, node_name: str) -> str:
        return f"{self.prefix}.{subject_token('n', node_name)}"

    async def _open(self) -> None:
        assert _nats is not None
        holder: list[_NatsClient] = []

        async def closed() -> None:
            if holder and holder[0] is self._nc:
                self._connection_lost(holder[0].last_error)

        async def error(exc: Exception) -> None:
            if isinstance(exc, _nats.errors.SlowConsumerError):
                # This node reads slower than messages arrive: NATS-side drops.
                self._malformed_or_dropped("nats dropped messages for a slow subscriber", exc)
            else:
                log.debug("nats client error: %s", exc)

        options: dict[str, Any] = {
            "name": f"phx {self.node_name}",
            "connect_timeout": self.timeout,
            "ping_interval": max(1, round(self.health_interval)),
            "max_outstanding_pings": 2,
            "error_cb": error,
            **self._options,
        }
        # One quick pass over the servers per attempt: the backoff between
        # attempts is ours (the client would otherwise wait 2 s between tries).
        options["reconnect_time_wait"] = 0
        options["max_reconnect_attempts"] = 1
        nc = await _nats.connect(
            servers=self._servers,
            allow_reconnect=False,
            no_echo=True,
            closed_cb=closed,
            **options,
        )
        holder.append(nc)
        self._nc = nc
        self._subs = {}
        await nc.subscribe(self._node_channel(self.node_name), cb=self._on_msg)
        await self._confirm(nc)

    async def _confirm(self, nc: _NatsClient) -> None:
        """Return once the server has processed every SUB sent so far.

        One ``flush()`` is not enough: nats-py writes its PING straight to the
        socket while the SUBs wait in its buffer for the flusher task, so the
        first PONG can come back before the server has seen them. By the time
        that PONG is here the flusher has written them, so the second PING
        follows them on the socket, and its PONG proves them.
        """
        await nc.flush(self._flush_timeout)
        await nc.flush(self._flush_timeout)

    async def _on_msg(self, msg: _NatsMsg) -> None:
        self._deliver(msg.data)

    async def _close(self) -> None:
        nc, self._nc = self._nc, None
        self._subs = {}
        if nc is not None and not nc.is_closed:
            try:
                async with asyncio.timeout(self.timeout):
                    await nc.close()
            except Exception as exc:  # closing a broken link: nothing left to save
                log.debug("closing the NATS connection: %s", exc)

    async def _subscribe(self, channels: list[str]) -> None:
        nc = self._nc
        assert nc is not None
        for channel in channels:
            if channel not in self._subs:
                self._subs[channel] = await nc.subscribe(channel, cb=self._on_msg)
        await self._confirm(nc)

    async def _unsubscribe(self, channels: list[str]) -> None:
        for channel in channels:
            sub = self._subs.pop(channel, None)
            if sub is not None:
                await sub.unsubscribe()

    async def _publish(self, channel: str, data: bytes) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise ConnectionError("not connected to NATS")
        await nc.publish(channel, data)

    def history_store(self) -> Any:
        """The store of topics with history: JetStream (PubSub calls it when a route has one)."""
        from ..history.nats import NatsHistory

        return NatsHistory(self)

    def history_subject(self, topic: str) -> str:
        """The JetStream subject that stores ``topic``'s history."""
        return f"{self.prefix}.h.{subject_token('t', topic)}"

    async def _ping(self) -> None:
        nc = self._nc
        assert nc is not None
        await nc.flush(self._flush_timeout)
