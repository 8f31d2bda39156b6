"""The Endpoint: an ASGI application that serves sockets, and the node's broadcast API.

``Endpoint(sockets={"/socket": UserSocket})`` serves WebSocket connections at
``/socket/websocket`` (the official JS client appends ``/websocket`` to the
URL it is given). Two ways to run it:

* as a plain ASGI app (``uvicorn app:endpoint``, or mounted in Starlette or
  FastAPI): portable, and what any ASGI server can run;
* on the fast path (``phoenix-channels serve app:endpoint``): uvicorn serves
  HTTP, and WebSocket upgrades are taken over by our own protocol
  (:mod:`phoenix_channels.transports.websocket`), which parses frames
  itself, holds no task for an idle connection and writes ready frames.

Every transport goes through :meth:`Endpoint.handshake`, which applies the
checks in Phoenix's order (method, origin, auth token, sub-protocol,
serializer, ``connect``, ``id``, upgrade headers) and says accept or refuse.
Requests for other paths go to ``app`` when one is given, else get a 404.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

from .channel import check_payload
from .errors import ConfigurationError
from .history import Position
from .history.recovery import history_routes
from .origin import CheckOrigin, OriginPolicy
from .protocol import Broadcast
from .pubsub import PubSub
from .raw import RawSocket
from .socket import Socket
from .transports.longpoll import LongPoll, LongPollSession, longpoll_options, serve_longpoll
from .transports.rfc6455 import Deflate, negotiate_deflate

SocketClass = type[Socket] | type[RawSocket]

__all__ = ["Accepted", "Endpoint", "Refused"]

log = logging.getLogger("phoenix_channels.endpoint")

Scope = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, ASGIReceive, ASGISend], Awaitable[None]]

_TOKEN_PREFIX = "base64url.bearer.phx."
_NOT_FOUND = b'{"errors":{"detail":"Not Found"}}'


class Service(Protocol):
    """Something that runs with the endpoint (see :meth:`Endpoint.add_service`)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Connection(Protocol):
    """What the endpoint keeps of each open connection, whatever its transport."""

    last_seen: float
    timeout: float

    def idle_close(self) -> None: ...

    def drain(self) -> None: ...


@dataclass(slots=True)
class Accepted:
    socket: Socket | RawSocket
    subprotocol: str | None
    deflate: Deflate | None


@dataclass(slots=True)
class Refused:
    status: int
    body: bytes = b""


def parse_params(query: str) -> dict[str, Any]:
    """Query string to connect params: the last value of a key wins, ``a[b]=1`` nests."""
    params: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if "[" in key and key.endswith("]"):
            head, _, rest = key.partition("[")
            parts = [head, *rest[:-1].split("][")]
            node = params
            for part in parts[:-1]:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
            node[parts[-1]] = value
        else:
            params[key] = value
    return params


class Endpoint:
    """Serves sockets over ASGI or the fast path, and broadcasts from anywhere.

    Options (all keyword-only, with Phoenix's defaults):

    * ``app``: an ASGI app for every other request (pages, APIs); else 404.
    * ``pubsub``: a :class:`~phoenix_channels.pubsub.PubSub`; the default is local.
    * ``check_origin``: see :mod:`phoenix_channels.origin`; on by default.
    * ``host``: this endpoint's host name, used by ``check_origin=True``.
    * ``max_frame_size``: largest inbound message in bytes (10,000,000); larger closes 1009.
    * ``compress``: offer permessage-deflate (off).
    * ``secret_key_base``: the secret for tokens (:mod:`phoenix_channels.token`)
      and long-poll sessions; at least 20 bytes. Random per process if not
      given, which is fine for one process but not for a cluster.
    * ``max_outbound_buffer``: bytes a connection may have waiting to be sent
      (beyond what the kernel holds) before it is closed as a slow consumer
      with code 1013 (8 MiB).
    * ``max_connections_per_client``: open connections allowed from one peer
      address (off: ``None``); more get HTTP 429. It counts the TCP peer, so
      behind a proxy every client shares the proxy's address.
    * ``drain_batch_size``, ``drain_interval``, ``drain_timeout``: how shutdown
      closes connections (code 1012): in batches, a pause between batches,
      and a bound on the whole drain.
    """

    def __init__(
        self,
        sockets: dict[str, SocketClass],
        *,
        app: ASGIApp | None = None,
        pubsub: PubSub | None = None,
        check_origin: CheckOrigin = True,
        host: str = "localhost",
        max_frame_size: int = 10_000_000,
        compress: bool = False,
        max_outbound_buffer: int = 8 * 1024 * 1024,
        max_connections_per_client: int | None = None,
        secret_key_base: str | bytes | None = None,
        drain_batch_size: int = 10_000,
        drain_interval: float = 2.0,
        drain_timeout: float = 30.0,
    ) -> None:
        if not sockets:
            raise ConfigurationError(
                "Endpoint(sockets=...) needs at least one socket, e.g. {'/socket': UserSocket}"
            )
        self._websocket_paths: dict[str, SocketClass] = {}
        self._longpoll_paths: dict[str, tuple[SocketClass, LongPoll]] = {}
        for path, socket_cls in sockets.items():
            if not (isinstance(socket_cls, type) and issubclass(socket_cls, Socket | RawSocket)):
                raise ConfigurationError(
                    f"sockets[{path!r}] must be a Socket (or RawSocket) subclass"
                )
            if not path.startswith("/"):
                raise ConfigurationError(f"socket path {path!r} must start with '/'")
            self._websocket_paths[path.rstrip("/") + "/websocket"] = socket_cls
            options = longpoll_options(socket_cls)
            if options is not None:
                self._longpoll_paths[path.rstrip("/") + "/longpoll"] = (socket_cls, options)
        if type(max_frame_size) is not int or max_frame_size < 1:
            raise ConfigurationError("max_frame_size must be a positive number of bytes")
        if drain_batch_size < 1 or drain_interval < 0 or drain_timeout <= 0:
            raise ConfigurationError(
                "drain_batch_size >= 1, drain_interval >= 0 and drain_timeout > 0 are required"
            )
        self.app = app
        self.pubsub = pubsub if pubsub is not None else PubSub()
        self.pubsub.add_history_routes(history_routes(self._websocket_paths.values()))
        self.origin_policy = OriginPolicy(check_origin, host)
        self.max_frame_size = max_frame_size
        self.compress = compress
        if type(max_outbound_buffer) is not int or max_outbound_buffer < 65536:
            raise ConfigurationError("max_outbound_buffer must be an int of at least 65536 bytes")
        self.max_outbound_buffer = max_outbound_buffer
        if max_connections_per_client is not None and (
            type(max_connections_per_client) is not int or max_connections_per_client < 1
        ):
            raise ConfigurationError(
                "max_connections_per_client must be a positive int, or None for no limit"
            )
        self.max_connections_per_client = max_connections_per_client
        self._clients: dict[str, int] = {}  # peer address -> open connections
        if secret_key_base is None:
            # Fine for one process; a cluster must share one (long-poll sessions,
            # tokens signed on one node and verified on another).
            secret_key_base = secrets.token_urlsafe(48)
            self._generated_secret = True
        else:
            self._generated_secret = False
            if len(secret_key_base) < 20:
                raise ConfigurationError(
                    "secret_key_base must be at least 20 bytes long "
                    "(generate one with `python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))'`)"
                )
        self.secret_key_base = secret_key_base
        self.drain_batch_size = drain_batch_size
        self.drain_interval = drain_interval
        self.drain_timeout = drain_timeout
        self.connections: set[Connection] = set()
        self.longpoll_sessions: dict[str, LongPollSession] = {}
        self.instance_id = secrets.token_urlsafe(12)  # tells this endpoint's sessions apart
        self._started = False
        self._draining: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._inner_lifespan: _Lifespan | None = None
        self._services: list[Service] = []

    def add_service(self, service: Service) -> None:
        """Run ``service.start()`` when the endpoint starts (after PubSub), and
        ``service.stop()`` when it stops (after the drain, before PubSub), in reverse order.

        Presence registers its tracker this way, so it is in the cluster
        before the first connection and sends its last changes after the last.
        """
        self._services.append(service)

    # -- broadcasting -------------------------------------------------------------

    async def broadcast(self, topic: str, event: str, payload: Any) -> None:
        """Send ``event`` to every subscriber of ``topic`` on every node."""
        check_payload(payload)
        await self.pubsub.broadcast(topic, Broadcast(topic, event, payload))

    async def broadcast_from(self, from_: Hashable, topic: str, event: str, payload: Any) -> None:
        """Like :meth:`broadcast`, skipping the subscriber ``from_`` (e.g. a channel)."""
        check_payload(payload)
        await self.pubsub.broadcast(topic, Broadcast(topic, event, payload), from_=from_)

    async def history(self, topic: str, after: Position | str | None = None) -> list[Broadcast]:
        """The stored broadcasts of a topic with history, oldest first (see docs/recovery.md).

        Each has its position in ``ref``; ``after`` keeps only later ones.
        """
        return await self.pubsub.history(topic, after)

    def local_broadcast(self, topic: str, event: str, payload: Any) -> None:
        """Send ``event`` to the subscribers of ``topic`` on this node only."""
        check_payload(payload)
        self.pubsub.local_broadcast(topic, Broadcast(topic, event, payload))

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start PubSub and the idle sweeper (the ASGI lifespan does this for you)."""
        if self._started:
            return
        self._started = True
        await self.pubsub.start()
        for service in self._services:
            await service.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle())

    async def stop(self) -> None:
        """Drain every connection (close 1012, channels end "shutdown:draining"), stop PubSub."""
        if not self._started:
            return
        await self.drain()
        self._started = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for service in reversed(self._services):
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %r failed", service)
        await self.pubsub.stop()

    def begin_drain(self) -> asyncio.Task[None]:
        """Start draining (once); transports call it when their server shuts down."""
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain())
        return self._draining

    async def drain(self) -> None:
        await self.begin_drain()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        while self.connections and loop.time() < deadline:
            batch = list(self.connections)[: self.drain_batch_size]
            for conn in batch:
                conn.drain()
                self.connections.discard(conn)
            if self.connections and self.drain_interval:
                await asyncio.sleep(min(self.drain_interval, max(0.0, deadline - loop.time())))
        # Let channel tasks run their terminate callbacks.
        for _ in range(3):
            await asyncio.sleep(0)

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for conn in [c for c in self.connections if now - c.last_seen > c.timeout]:
                conn.idle_close()

    # -- the handshake ---------------------------------------------------------------------

    def websocket_socket(self, path: str) -> SocketClass | None:
        """The Socket class serving WebSocket upgrades at ``path``, if any."""
        return self._websocket_paths.get(path.rstrip("/") or "/")

    async def handshake(
        self,
        socket_cls: SocketClass,
        *,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[bytes, bytes]],
        scheme: str,
        peer: tuple[str, int] | None,
        websocket: bool = True,
    ) -> Accepted | Refused:
        """Decide whether a connection request becomes a socket, in Phoenix's order of checks."""
        if method != "GET":
            return Refused(400)
        if not self._started:  # mounted in another app, whose lifespan does not reach us
            await self.start()
        params = parse_params(query) if query else {}
        # One pass over the headers: the last value of a name wins.
        named: dict[bytes, bytes] = {}
        x_headers, trace_headers, ws_headers = [], [], []
        for key, value in headers:
            named[key] = value
            if key.startswith(b"x-"):
                x_headers.append((key.decode("latin-1"), value.decode("latin-1")))
            elif key.startswith(b"sec-websocket-"):
                ws_headers.append((key.decode("latin-1"), value.decode("latin-1")))
            elif key in (b"traceparent", b"tracestate"):
                trace_headers.append((key.decode("latin-1"), value.decode("latin-1")))
        host_header = named.get(b"host", b"").decode("latin-1")
        host, colon, port_text = host_header.rpartition(":")
        if not colon or not port_text.isdigit():
            host, port_text = host_header, ""
        port = int(port_text) if port_text else None
        origin = named.get(b"origin")
        limit = self.max_connections_per_client
        if limit is not None and peer is not None and self._clients.get(peer[0], 0) >= limit:
            log.warning(
                "refused a connection from %s: %d connections from that address are open "
                "(max_connections_per_client)",
                peer[0],
                limit,
            )
            return Refused(429, b"too many connections from this address")
        if origin is not None and not self.origin_policy.allows(
            origin.decode("latin-1"), scheme, host, port
        ):
            log.error(
                "refused a connection from origin %r: not allowed by check_origin "
                "(set Endpoint(check_origin=[...]) to allow it)",
                origin.decode("latin-1"),
            )
            return Refused(403)
        auth_token: str | None = None
        protocols_header = named.get(b"sec-websocket-protocol")
        offered = (
            [p.strip() for p in protocols_header.decode("latin-1").split(",")]
            if protocols_header
            else []
        )
        subprotocol = None
        if socket_cls.auth_token:
            tokens = [p for p in offered if p.startswith(_TOKEN_PREFIX)]
            if len(tokens) == 1:
                encoded = tokens[0][len(_TOKEN_PREFIX) :]
                try:
                    raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
                    auth_token = raw.decode()
                except (binascii.Error, ValueError):
                    log.warning(
                        "refused a connection: malformed auth token in Sec-WebSocket-Protocol"
                    )
                    return Refused(400, b"malformed auth token")
                offered = [p for p in offered if p is not tokens[0]]
            if offered:
                if "phoenix" not in offered:
                    return Refused(403)
                subprotocol = "phoenix"
        user_agent = named.get(b"user-agent")
        connect_info = {
            "peer_data": {"address": peer[0], "port": peer[1]} if peer else None,
            "uri": {"scheme": scheme, "host": host, "port": port, "path": path, "query": query},
            "x_headers": x_headers,
            "trace_context_headers": trace_headers,
            "sec_websocket_headers": ws_headers,
            "user_agent": user_agent.decode("latin-1") if user_agent is not None else None,
            "auth_token": auth_token,
        }
        serializer = socket_cls.negotiate(params)
        if serializer is None:
            log.warning(
                "refused a connection: unsupported vsn %r (1.0.x and 2.0.x are served)",
                params.get("vsn"),
            )
            return Refused(403)
        sock = socket_cls(self, params, serializer)
        try:
            accepted = await sock.connect(params, connect_info)
        except Exception:
            log.exception("%s.connect raised", socket_cls.__name__)
            return Refused(500)
        if accepted is not True:
            if accepted is not False:
                log.warning(
                    "%s.connect returned %r; return True to accept, False to refuse",
                    socket_cls.__name__,
                    accepted,
                )
            return Refused(403)
        try:
            sid = sock.id()
        except Exception:
            log.exception("%s.id raised", socket_cls.__name__)
            return Refused(500)
        if sid is not None and type(sid) is not str:
            log.error("%s.id returned %r; it must return a str or None", socket_cls.__name__, sid)
            return Refused(403)
        sock._id = sid
        deflate = None
        if websocket:
            problem = _upgrade_problem(named)
            if problem:
                return Refused(400, problem.encode())
            if self.compress:
                offer = named.get(b"sec-websocket-extensions")
                deflate = negotiate_deflate(offer.decode("latin-1") if offer else None)
        if sid is not None:  # a disconnect broadcast from any node must reach this socket
            await self.pubsub.prepare(sid)
        if limit is not None and peer is not None:
            sock._client = peer[0]  # counted from attach() to closed()
        return Accepted(sock, subprotocol, deflate)

    def _socket_opened(self, sock: Socket | RawSocket) -> None:
        """A socket went live: subscribe it to its id, count it against its address."""
        if sock._id is not None:
            self.pubsub.subscribe(sock._id, sock._on_id_message)
        if sock._client is not None:
            self._clients[sock._client] = self._clients.get(sock._client, 0) + 1

    def _socket_closed(self, sock: Socket | RawSocket) -> None:
        """The other half of :meth:`_socket_opened`; safe to call once per opened socket."""
        if sock._id is not None:
            self.pubsub.unsubscribe(sock._id, sock._on_id_message)
        address, sock._client = sock._client, None
        if address is not None:
            left = self._clients.get(address, 0) - 1
            if left > 0:
                self._clients[address] = left
            else:
                self._clients.pop(address, None)

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        kind = scope["type"]
        path = _route_path(scope) if kind != "lifespan" else ""
        if kind == "websocket":
            socket_cls = self.websocket_socket(path)
            if socket_cls is not None:
                from .transports.asgi import serve_asgi_websocket

                await serve_asgi_websocket(self, socket_cls, scope, receive, send)
                return
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        elif kind == "http" and (longpoll := self._longpoll_paths.get(path.rstrip("/"))):
            await serve_longpoll(self, longpoll[0], longpoll[1], scope, receive, send)
            return
        elif kind == "http" and path.rstrip("/") in self._websocket_paths:
            await _plain_response(send, 400, b"'connection' header must contain 'upgrade'")
            return
        if self.app is not None:
            await self.app(scope, receive, send)
        elif kind == "http":
            await _plain_response(send, 404, _NOT_FOUND, b"application/json")
        else:
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                    if self.app is not None:
                        self._inner_lifespan = _Lifespan(self.app, scope)
                        await self._inner_lifespan.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                if self._inner_lifespan is not None:
                    await self._inner_lifespan.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette's Mount keeps ``path`` whole)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _upgrade_problem(named: dict[bytes, bytes]) -> str | None:
    connection = named.get(b"connection", b"").lower()
    if b"upgrade" not in [part.strip() for part in connection.split(b",")]:
        return "'connection' header must contain 'upgrade'"
    if named.get(b"upgrade", b"").lower() != b"websocket":
        return "'upgrade' header must contain 'websocket'"
    if not named.get(b"sec-websocket-key"):
        return "'sec-websocket-key' header is missing"
    if named.get(b"sec-websocket-version") != b"13":
        return "'sec-websocket-version' header must be '13'"
    return None


async def _plain_response(
    send: ASGISend, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8"
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Lifespan:
    """Runs the lifespan protocol of a wrapped ASGI app (if it has one)."""

    def __init__(self, app: ASGIApp, scope: Scope) -> None:
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()

        async def run() -> None:
            await app(dict(scope), self._to_app.get, self._from_app.put)

        self._task: asyncio.Task[None] = asyncio.get_running_loop().create_task(run())

    async def _exchange(self, message: str) -> None:
        await self._to_app.put({"type": message})
        getter = asyncio.ensure_future(self._from_app.get())
        await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():  # the app returned or raised: it has no lifespan support
            getter.cancel()
            return
        reply = getter.result()
        if reply["type"].endswith(".failed"):
            raise RuntimeError(reply.get("message") or f"{message} failed in the wrapped app")

    async def startup(self) -> None:
        await self._exchange("lifespan.startup")

    async def shutdown(self) -> None:
        if not self._task.done():
            await self._exchange("lifespan.shutdown")
