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

Every transport goes through :meth:`Endpoint.handshake`, which runs
:mod:`phoenix_channels.handshake` (the checks in Phoenix's order: method,
origin, auth token, sub-protocol, serializer, ``connect``, ``id``, upgrade
headers) and says accept or refuse. Open connections are kept by
``endpoint.registry`` (:mod:`phoenix_channels.registry`), which the
transports and sockets report to.
Requests for other paths go to ``app`` when one is given, else get a 404.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Hashable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

from . import handshake as _handshake
from ._asgi_types import ASGIApp, ASGIReceive, ASGISend, Scope
from ._awaitable import must_await
from ._secret import missing_shared_secret
from .errors import ConfigurationError
from .handshake import Accepted, Refused
from .handshake import parse_params as parse_params  # its old home
from .history import Position
from .history.recovery import history_routes
from .origin import CheckOrigin, OriginPolicy
from .protocol import Broadcast
from .protocol.checks import check_payload
from .protocol.close_codes import CloseCode
from .pubsub import PubSub
from .raw import RawSocket
from .registry import Connection, ConnectionRegistry
from .socket import Socket
from .telemetry import ENDPOINT_DRAIN, SOCKET_CONNECT, connect_done, now
from .transports.asgi import serve_asgi_websocket
from .transports.longpoll import LongPoll, LongPollSession, longpoll_options, serve_longpoll

if TYPE_CHECKING:
    from .dashboard import Dashboard

SocketClass = type[Socket] | type[RawSocket]

__all__ = ["Accepted", "Endpoint", "Refused"]

log = logging.getLogger("phoenix_channels.endpoint")

_NOT_FOUND = b'{"errors":{"detail":"Not Found"}}'


class Service(Protocol):
    """Something that runs with the endpoint (see :meth:`Endpoint.add_service`)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


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
      given: fine for one process (a restart invalidates its tokens and
      long-poll sessions), refused at start with a Redis or NATS adapter.
    * ``max_outbound_buffer``: bytes a connection may have waiting to be sent
      (beyond what the kernel holds) before it is closed as a slow consumer
      with code 1013 (8 MiB).
    * ``max_connections_per_client``: open connections allowed from one peer
      address (off: ``None``); more get HTTP 429. It counts the TCP peer, so
      behind a proxy every client shares the proxy's address.
    * ``drain_batch_size``, ``drain_interval``, ``drain_timeout``: how shutdown
      closes connections (code 1012): in batches, a pause between batches,
      and a bound on the whole drain.
    * ``metrics_path``: serve Prometheus metrics at this path, e.g.
      ``"/metrics"`` (off: ``None``; needs ``phoenix-channels[prometheus]``;
      see docs/telemetry.md). ``endpoint.metrics`` is the
      :class:`~phoenix_channels.metrics.PrometheusMetrics`.
    * ``dashboard``: a :class:`~phoenix_channels.dashboard.Dashboard` (off:
      ``None``): the live dashboard page, behind the guard it is given.
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
        metrics_path: str | None = None,
        dashboard: Dashboard | None = None,
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
        self.history_routes = history_routes(self._websocket_paths.values())
        """(pattern, History or None) of every channel route, in route order."""
        self.pubsub.add_history_routes(self.history_routes)
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
        self.registry = ConnectionRegistry(self.pubsub, max_connections_per_client)
        """Open connections, long-poll sessions and per-address counts (transports report here)."""
        self.instance_id = secrets.token_urlsafe(12)  # tells this endpoint's sessions apart
        self._started = False
        self._draining: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._inner_lifespan: _Lifespan | None = None
        self._services: list[Service] = []
        self.metrics_path = metrics_path
        self.metrics: Any = None
        if metrics_path is not None:
            from .metrics import install

            self.metrics = install(self, metrics_path)
        self.dashboard = dashboard
        if dashboard is not None:
            self._websocket_paths[dashboard.path + "/live/websocket"] = dashboard.bind(self)

    def add_service(self, service: Service) -> None:
        """Run ``service.start()`` when the endpoint starts (after PubSub), and
        ``service.stop()`` when it stops (after the drain, before PubSub), in reverse order.

        Presence registers its tracker this way, so it is in the cluster
        before the first connection and sends its last changes after the last.
        """
        self._services.append(service)

    @property
    def connections(self) -> set[Connection]:
        """Open connections of every transport (``registry.connections``)."""
        return self.registry.connections

    @property
    def longpoll_sessions(self) -> dict[str, LongPollSession]:
        """Live long-poll sessions of this endpoint by id (``registry.sessions``)."""
        return self.registry.sessions

    @property
    def _clients(self) -> dict[str, int]:
        return self.registry.addresses

    # -- broadcasting -------------------------------------------------------------

    @must_await
    async def broadcast(self, topic: str, event: str, payload: Any) -> None:
        """Send ``event`` to every subscriber of ``topic`` on every node."""
        check_payload(payload)
        await self.pubsub.broadcast(topic, Broadcast(topic, event, payload))

    @must_await
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
        problem = missing_shared_secret(self)
        if problem:
            raise ConfigurationError(problem)
        self._started = True
        self._draining = None  # a restarted endpoint drains again on its next stop
        await self.pubsub.start()
        for service in self._services:
            await service.start()
        self._sweeper = asyncio.get_running_loop().create_task(self.registry.sweep_idle())

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
        started, count = now(), len(self.connections)
        deadline = loop.time() + self.drain_timeout
        while self.registry.connections and loop.time() < deadline:
            for conn in self.registry.take(self.drain_batch_size):
                conn.drain()
            if self.connections and self.drain_interval:
                await asyncio.sleep(min(self.drain_interval, max(0.0, deadline - loop.time())))
        # Let channel tasks run their terminate callbacks.
        for _ in range(3):
            await asyncio.sleep(0)
        if ENDPOINT_DRAIN.on:
            ENDPOINT_DRAIN.emit(
                {"duration": now() - started, "connections": count - len(self.connections)},
                {"endpoint": self},
            )

    # -- the handshake ---------------------------------------------------------------------

    def websocket_socket(self, path: str) -> SocketClass | None:
        """The Socket class serving WebSocket upgrades at ``path``, if any."""
        return self._websocket_paths.get(path.rstrip("/") or "/")

    async def handshake(
        self,
        socket_cls: _handshake.SocketClass,
        *,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[bytes, bytes]],
        scheme: str,
        peer: tuple[str, int] | None,
        websocket: bool = True,
    ) -> Accepted | Refused:
        """Decide whether a connection request becomes a socket (:mod:`.handshake`)."""
        if method == "GET" and not self._started:  # mounted in an app whose lifespan skips us
            await self.start()
        start = now() if SOCKET_CONNECT.on else 0.0
        outcome = await _handshake.handshake(
            self,
            socket_cls,
            method=method,
            path=path,
            query=query,
            headers=headers,
            scheme=scheme,
            peer=peer,
            websocket=websocket,
        )
        if start:
            connect_done(self, socket_cls, path, headers, websocket, outcome, start)
        return outcome

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        kind = scope["type"]
        path = _route_path(scope) if kind != "lifespan" else ""
        if kind == "websocket":
            socket_cls = self.websocket_socket(path)
            if socket_cls is not None:
                await serve_asgi_websocket(self, socket_cls, scope, receive, send)
                return
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        elif kind == "http" and (longpoll := self._longpoll_paths.get(path.rstrip("/"))):
            await serve_longpoll(self, longpoll[0], longpoll[1], scope, receive, send)
            return
        elif kind == "http" and self.dashboard is not None and self.dashboard.handles(path):
            await self.dashboard.serve(scope, receive, send)
            return
        elif kind == "http" and path == self.metrics_path and self.metrics is not None:
            await self.metrics.serve(scope, receive, send)
            return
        elif kind == "http" and path.rstrip("/") in self._websocket_paths:
            await _plain_response(send, 400, b"'connection' header must contain 'upgrade'")
            return
        if self.app is not None:
            await self.app(scope, receive, send)
        elif kind == "http":
            await _plain_response(send, 404, _NOT_FOUND, b"application/json")
        else:
            await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})

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
