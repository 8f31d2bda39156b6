"""A live dashboard page served by the endpoint, built on its own channels.

Off by default; turn it on with a guard that says who may see it::

    def allowed(request: DashboardRequest) -> bool:
        return request.params.get("token") == os.environ["DASHBOARD_TOKEN"]

    endpoint = Endpoint(sockets=..., dashboard=Dashboard(guard=allowed))

``GET /dashboard?token=...`` serves the page (403 without the guard's
approval); the page connects with the official JS client (served from the
package, no CDN, no build step) to ``/dashboard/live`` with the same query
parameters, and the guard runs again for that socket. It joins
``dashboard:live`` and gets the whole cluster's figures once a
``interval``.

Each node with a dashboard keeps its own figures from the telemetry events
(connections, messages per second in and out, broadcasts per topic, clients
closed by a limit, the engine link) and publishes them on PubSub once an
interval; every node hears the others, so the page shows every node of the
cluster whichever one it is connected to. The page can close one socket,
or drain one node: the request goes to the node that holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from . import telemetry
from .channel import Channel, reply
from .errors import BroadcastError, ConfigurationError
from .handshake import parse_params
from .socket import Socket

__all__ = ["Dashboard", "DashboardRequest"]

log = logging.getLogger("phoenix_channels.dashboard")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_NODES = "phx:dashboard:nodes"  # every node's figures, cluster-wide
_LIVE = "dashboard:live"  # what the pages join
_STATIC = {
    "": ("dashboard.html", b"text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", b"text/javascript; charset=utf-8"),
    "/phoenix.mjs": ("phoenix.mjs", b"text/javascript; charset=utf-8"),
}


@dataclass(frozen=True, slots=True)
class DashboardRequest:
    """What the guard sees of a request for the page or for the dashboard's socket.

    ``params``: the query parameters; ``headers``: for the page, every
    request header (lower-case names); for the socket, the ``x-`` headers
    and ``user-agent`` (what ``connect_info`` carries); ``peer``: the
    client's address; ``kind``: ``"page"`` or ``"socket"``.
    """

    kind: str
    params: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    peer: str | None = None


Guard = Callable[[DashboardRequest], "bool | Awaitable[bool]"]


class Dashboard:
    """The dashboard's options; give it to ``Endpoint(dashboard=...)``.

    * ``guard`` (required): ``guard(request) -> bool`` (or an awaitable
      bool); only True lets the page or its socket through.
    * ``path``: where the page is served (``"/dashboard"``); its socket is
      at ``path + "/live"``.
    * ``interval``: seconds between two updates (1.0).
    * ``max_sockets``: how many sockets each node lists (the newest; 50).
    """

    def __init__(
        self,
        *,
        guard: Guard,
        path: str = "/dashboard",
        interval: float = 1.0,
        max_sockets: int = 50,
    ) -> None:
        if not callable(guard):
            raise ConfigurationError("Dashboard(guard=...) needs a callable: request -> bool")
        if not path.startswith("/") or path.endswith("/"):
            raise ConfigurationError(f"dashboard path {path!r} must start, not end, with '/'")
        if interval <= 0 or max_sockets < 1:
            raise ConfigurationError("interval > 0 and max_sockets >= 1 are required")
        self.guard = guard
        self.path = path
        self.interval = interval
        self.max_sockets = max_sockets
        self.endpoint: Any = None
        self.collector: Collector | None = None

    def bind(self, endpoint: Any) -> type[Socket]:
        """Attach to ``endpoint`` (it calls this); returns the socket class for ``path/live``."""
        if self.endpoint is not None:
            raise ConfigurationError("a Dashboard serves one endpoint")
        self.endpoint = endpoint
        self.collector = Collector(self, endpoint)
        endpoint.add_service(self.collector)
        dashboard = self

        class DashboardChannel(Channel):
            async def join(self, topic: str, payload: Any) -> Any:
                return {"node": endpoint.pubsub.node_name}

            async def handle_in(self, event: str, payload: Any) -> Any:
                assert dashboard.collector is not None
                node = payload.get("node") if isinstance(payload, dict) else None
                if event == "disconnect" and isinstance(node, str):
                    return await dashboard.collector.command(node, "disconnect", payload)
                if event == "drain" and isinstance(node, str):
                    return await dashboard.collector.command(node, "drain", payload)
                return reply("error", {"reason": f"unknown action {event!r}"})

        class DashboardSocket(Socket):
            channels = {_LIVE: DashboardChannel}

            async def connect(self, params: dict[str, Any], connect_info: Any) -> bool:
                headers = dict(connect_info.get("x_headers") or ())
                if connect_info.get("user_agent"):
                    headers["user-agent"] = connect_info["user_agent"]
                peer = (connect_info.get("peer_data") or {}).get("address")
                return await dashboard.allows(DashboardRequest("socket", params, headers, peer))

        return DashboardSocket

    async def allows(self, request: DashboardRequest) -> bool:
        try:
            verdict = self.guard(request)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception:
            log.exception("the dashboard guard raised; refusing")
            return False
        if verdict is not True:
            log.warning("dashboard %s refused by the guard (peer %s)", request.kind, request.peer)
            return False
        return True

    def handles(self, path: str) -> bool:
        return path == self.path or (path.startswith(self.path + "/") and "/live" not in path)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the page and its scripts (the endpoint routes ``path`` here)."""
        rest = scope["path"][len(scope.get("root_path", "")) :][len(self.path) :].rstrip("/")
        static = _STATIC.get(rest)
        if static is None:
            await _respond(send, 404, b"not found")
            return
        query = scope.get("query_string", b"").decode("latin-1")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        client = scope.get("client")
        request = DashboardRequest("page", parse_params(query), headers, client and client[0])
        # The scripts are public (the JS client, the page's code); the page and its
        # socket, which carries every figure, are behind the guard.
        if not rest and not await self.allows(request):
            await _respond(send, 403, b"forbidden")
            return
        body = resources.files("phoenix_channels").joinpath("static", static[0]).read_bytes()
        if not rest:
            body = body.replace(b"DASHBOARD_BASE", self.path.encode())
        await _respond(send, 200, body, static[1])


class Collector:
    """This node's figures, from the telemetry events; publishes them once an interval."""

    def __init__(self, dashboard: Dashboard, endpoint: Any) -> None:
        self.dashboard = dashboard
        self.endpoint = endpoint
        self.node = endpoint.pubsub.node_name
        # socket -> (its id on the page, transport, opened at); newest last
        self.sockets: dict[Any, tuple[str, str | None, float]] = {}
        self.ids = itertools.count(1)
        self.delivered = 0  # broadcast deliveries (the sockets count the rest themselves)
        self.topic_messages: dict[str, int] = {}
        self.limited: deque[dict[str, Any]] = deque(maxlen=20)
        self.engine: dict[str, Any] = {}
        self.others: dict[str, tuple[float, dict[str, Any]]] = {}
        self._last: tuple[float, int, int, dict[str, int]] = (
            time.monotonic(),
            self.messages_in,
            self.messages_out,
            {},
        )
        self._task: asyncio.Task[None] | None = None
        self._handler_id = f"phoenix_channels.dashboard.{id(self):x}"

    # -- service ---------------------------------------------------------------------------

    async def start(self) -> None:
        handlers = {
            telemetry.SOCKET_OPEN: self._on_open,
            telemetry.SOCKET_CLOSE: self._on_close,
            telemetry.SOCKET_LIMIT: self._on_limit,
            telemetry.PUBSUB_BROADCAST: self._on_broadcast,
            telemetry.PUBSUB_LINK_DOWN: self._on_link,
            telemetry.PUBSUB_LINK_UP: self._on_link,
        }
        for event, handler in handlers.items():
            telemetry.attach(f"{self._handler_id}.{'.'.join(event.name)}", [event], handler)
        self._events = list(handlers)
        pubsub = self.endpoint.pubsub
        pubsub.subscribe(_NODES, self._on_node)
        pubsub.subscribe(f"{_NODES}:{self.node}", self._on_command)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for event in self._events:
            telemetry.detach(f"{self._handler_id}.{'.'.join(event.name)}")
        pubsub = self.endpoint.pubsub
        pubsub.unsubscribe(_NODES, self._on_node)
        pubsub.unsubscribe(f"{_NODES}:{self.node}", self._on_command)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.dashboard.interval)
            try:
                await self.tick()
            except Exception:
                log.exception("the dashboard's update failed")

    async def tick(self) -> None:
        """Publish this node's figures, and push the cluster's to the open pages."""
        mine = self.snapshot()
        try:
            await self.endpoint.pubsub.broadcast(_NODES, mine)
        except BroadcastError:
            self.endpoint.pubsub.local_broadcast(_NODES, mine)  # the engine is down: this node
        now = time.monotonic()
        stale = 5 * self.dashboard.interval
        self.others = {n: v for n, v in self.others.items() if now - v[0] < stale}
        nodes = sorted((v[1] for v in self.others.values()), key=lambda s: str(s["node"]))
        if self.endpoint.pubsub.subscribers(_LIVE):
            self.endpoint.local_broadcast(_LIVE, "stats", {"nodes": nodes, "at": time.time()})

    # -- figures ---------------------------------------------------------------------------

    @property
    def messages_in(self) -> int:
        """Messages received from clients by this process's sockets, so far."""
        return sum(c.messages_in for c in telemetry.TRANSPORTS.values())

    @property
    def messages_out(self) -> int:
        """Messages sent by this process's sockets, broadcast deliveries included, so far."""
        return self.delivered + sum(c.messages_out for c in telemetry.TRANSPORTS.values())

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        then, was_in, was_out, was_topics = self._last
        span = max(now - then, 1e-6)
        topics = dict(self.topic_messages)
        rates = {t: (n - was_topics.get(t, 0)) / span for t, n in topics.items()}
        self._last = (now, self.messages_in, self.messages_out, topics)
        # Forget topics without traffic, so the table of counts stays bounded.
        self.topic_messages = {t: n for t, n in topics.items() if rates[t] > 0}
        pubsub = self.endpoint.pubsub
        # Channel subscriptions only (the fast lane's entries have an encoder):
        # socket ids, presence replication and the like are not topics to show.
        channel_topics = ((t, pubsub.channel_subscribers(t)) for t in list(pubsub._topics))
        by_subscribers = sorted(((t, n) for t, n in channel_topics if n), key=lambda p: -p[1])[:10]
        by_rate = sorted(((t, r) for t, r in rates.items() if r > 0), key=lambda p: -p[1])[:10]
        transports = {c.transport: c.sockets for c in telemetry.TRANSPORTS.values() if c.sockets}
        newest = itertools.islice(reversed(self.sockets.items()), self.dashboard.max_sockets)
        adapter = pubsub.adapter
        engine = {
            "engine": getattr(adapter, "engine", "local"),
            "up": getattr(adapter, "connected", True),
            **{k: v for k, v in self.engine.items() if k in ("gap", "reconnects")},
        }
        return {
            "node": self.node,
            "connections": len(self.sockets),
            "transports": transports,
            "in_per_s": (self.messages_in - was_in) / span,
            "out_per_s": (self.messages_out - was_out) / span,
            "topics_by_subscribers": [list(p) for p in by_subscribers],
            "topics_by_rate": [[t, round(r, 1)] for t, r in by_rate],
            "limited": list(self.limited),
            "presence": self._presence(),
            "engine": engine,
            "sockets": [
                {
                    "id": sid,
                    "transport": transport,
                    "channels": getattr(sock, "channel_count", 0),
                    "age": round(now - opened, 1),
                    "name": sock._id,
                }
                for sock, (sid, transport, opened) in newest
            ],
        }

    def _presence(self) -> list[list[Any]]:
        counts: dict[str, int] = {}
        for service in self.endpoint._services:
            tracker = getattr(service, "tracker", None)
            if tracker is None or not getattr(tracker, "started", False):
                continue
            for topic in tracker.topics():
                counts[topic] = counts.get(topic, 0) + tracker.count(topic)
        return [list(p) for p in sorted(counts.items(), key=lambda p: -p[1])[:10]]

    # -- actions ---------------------------------------------------------------------------

    async def command(self, node: str, action: str, payload: dict[str, Any]) -> Any:
        if node == self.node:
            return reply(*self.run_command(action, payload))
        if node not in self.others:
            return reply("error", {"reason": f"no node {node!r} in the cluster"})
        try:
            await self.endpoint.pubsub.direct_broadcast(
                node, f"{_NODES}:{node}", {"action": action, **payload}
            )
        except BroadcastError as exc:
            return reply("error", {"reason": str(exc)})
        return reply("ok", {"sent": node})

    def run_command(self, action: str, payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        if action == "disconnect":
            wanted = str(payload.get("socket"))
            found = next((sock for sock, entry in self.sockets.items() if entry[0] == wanted), None)
            if found is None:
                return "error", {"reason": f"no socket {payload.get('socket')!r} on this node"}
            log.info("dashboard: disconnecting socket %s", wanted)
            found.close(1000, "disconnected from the dashboard", "shutdown:disconnected")
            return "ok", {}
        if action == "drain":
            log.warning("dashboard: draining node %s", self.node)
            self.endpoint.begin_drain()
            return "ok", {}
        return "error", {"reason": f"unknown action {action!r}"}

    def _on_command(self, message: Any) -> None:
        if isinstance(message, dict):
            self.run_command(str(message.get("action")), message)

    def _on_node(self, message: Any) -> None:
        if isinstance(message, dict) and "node" in message:
            self.others[str(message["node"])] = (time.monotonic(), message)

    # -- telemetry handlers ----------------------------------------------------------------

    def _on_open(self, _: Any, m: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self.sockets[meta["socket"]] = (f"s{next(self.ids)}", meta["transport"], time.monotonic())

    def _on_close(self, _: Any, m: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self.sockets.pop(meta["socket"], None)

    def _on_broadcast(self, _: Any, m: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self.delivered += m["deliveries"]
        topic = meta["topic"]
        self.topic_messages[topic] = self.topic_messages.get(topic, 0) + 1

    def _on_limit(self, _: Any, m: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        entry = self.sockets.get(meta["socket"])
        self.limited.appendleft(
            {
                "socket": entry[0] if entry is not None else None,
                "limit": meta["limit"],
                "closed": meta["closed"],
                "at": time.time(),
            }
        )

    def _on_link(self, name: Any, m: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        if name == telemetry.PUBSUB_LINK_UP.name and meta["reconnect"]:
            self.engine["gap"] = round(m["gap"], 2)
            self.engine["reconnects"] = self.engine.get("reconnects", 0) + 1


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8"
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
