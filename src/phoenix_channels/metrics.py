"""Prometheus metrics, kept by listening to the telemetry events (needs ``[prometheus]``).

:class:`PrometheusMetrics` attaches to :mod:`phoenix_channels.telemetry`
when the endpoint starts and detaches when it stops; the hot path never
calls ``prometheus_client`` itself. Every change (counts, gauge moves,
histogram observations by bucket) is added up in plain numbers and moved
into the Prometheus metrics before each scrape of the endpoint's
``/metrics`` and once a second, so an event costs a dict update, not the
microsecond and the lock of a ``prometheus_client`` call.

Labels are bounded: transports, route patterns (``"room:*"``, never
topics), outcomes, limits and engines. Under ``phoenix-channels serve
--workers N`` the supervisor gives the workers a ``PROMETHEUS_MULTIPROC_DIR``
and every worker's values reach the scrape, summed (gauges of live workers
only: a dead worker's gauges are removed).

Two ways to expose them (see docs/telemetry.md):

* ``Endpoint(..., metrics_path="/metrics")``: the endpoint serves the
  exposition at that path (plain HTTP, no auth: keep it off the public
  side of the proxy);
* ``PrometheusMetrics`` attached to the endpoint by hand, and the app mounts
  ``prometheus_client.make_asgi_app(metrics.scrape_registry())`` wherever
  it likes, behind its own auth.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from . import telemetry
from .errors import ConfigurationError

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ConfigurationError(
        "Prometheus metrics need prometheus_client: pip install 'phoenix-channels[prometheus]'"
    ) from exc

__all__ = [
    "LATENCY_BUCKETS",
    "MultiprocessDir",
    "PrometheusMetrics",
    "install",
    "multiprocess_dir",
]

log = logging.getLogger("phoenix_channels.metrics")

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
"""Histogram buckets (seconds) for ``handle_in`` and engine publish latency."""

_FLUSH_INTERVAL = 1.0

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def multiprocess_dir() -> str | None:
    """The ``PROMETHEUS_MULTIPROC_DIR`` of this process, if metrics are multiprocess."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class PrometheusMetrics:
    """The server's Prometheus metrics; a service of the endpoint (start/stop with it).

    ``registry``: where the metrics are registered (a fresh
    ``CollectorRegistry`` by default; pass ``prometheus_client.REGISTRY`` to
    share the default one). ``namespace`` prefixes every name. Every metric
    and its labels are listed in docs/telemetry.md.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "phoenix_channels"
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.namespace = namespace
        reg, ns = self.registry, namespace
        self.connections = Gauge(
            "connections", "Open connections", ["transport"],
            namespace=ns, registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.connects = Counter(
            "connects", "Connection requests by result (ok, or the HTTP status of a refusal)",
            ["transport", "result", "status"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.channels_joined = Gauge(
            "channels_joined", "Joined channels by route pattern", ["route"],
            namespace=ns, registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.joins = Counter(
            "joins", "Channel joins by route pattern and result (ok, error, crash)",
            ["route", "result"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.handle_in = Counter(
            "handle_in", "handle_in calls by route and outcome (reply, noreply, stop, crash)",
            ["route", "outcome"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.handle_in_duration = Histogram(
            "handle_in_duration_seconds", "handle_in latency", ["route"],
            namespace=ns, registry=reg, buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.messages_in = Counter(
            "messages_in", "Messages received from clients", ["transport"],
            namespace=ns, registry=reg,
        )  # fmt: skip
        self.bytes_in = Counter(
            "bytes_in", "Bytes of the messages received from clients", ["transport"],
            namespace=ns, registry=reg,
        )  # fmt: skip
        self.messages_out = Counter(
            "messages_out", "Messages sent to clients (replies, pushes, broadcasts)",
            ["transport"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.bytes_out = Counter(
            "bytes_out", "Bytes sent to clients (WebSocket frames, long-poll messages)",
            ["transport"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.broadcasts = Counter(
            "broadcasts", "Broadcasts delivered on this node (once per node)",
            namespace=ns, registry=reg,
        )  # fmt: skip
        self.deliveries = Counter(
            "deliveries", "Broadcast deliveries to local subscribers (the fan-out)",
            namespace=ns, registry=reg,
        )  # fmt: skip
        self.limited = Counter(
            "limited", "Clients hit by a limit: slow_consumer (closed), rate or depth (refused)",
            ["limit", "action"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.engine_up = Gauge(
            "engine_link_up", "1 while the PubSub engine link is up, 0 while down", ["engine"],
            namespace=ns, registry=reg, multiprocess_mode="liveall",
        )  # fmt: skip
        self.engine_reconnects = Counter(
            "engine_reconnects", "PubSub engine links re-established after an outage",
            ["engine"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.engine_downtime = Counter(
            "engine_downtime_seconds", "Seconds the PubSub engine link was down",
            ["engine"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.engine_publish = Histogram(
            "engine_publish_duration_seconds", "Latency of publishing to the PubSub engine",
            ["engine"], namespace=ns, registry=reg, buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.presence_entries = Gauge(
            "presence_entries", "Presence entries (key, meta) tracked in the cluster",
            namespace=ns, registry=reg, multiprocess_mode="max",
        )  # fmt: skip
        # Broadcast deliveries wait here, by transport: [messages, bytes]. What sockets
        # receive and send themselves is read from telemetry.TRANSPORTS at each flush
        # (running totals the sockets keep anyway): `_seen` is what was moved so far.
        self._out: dict[str | None, list[int]] = {}
        self._seen: dict[str, tuple[int, int, int, int]] = {}
        self._broadcasts = 0
        self._deliveries = 0
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # Counter and gauge changes wait here until the next flush (prometheus_client
        # takes about a microsecond per call): one dict per metric, from its label
        # values to the change. The handlers on the connect and join path keep their
        # metric's dict at hand, so counting is one dict update.
        self._deltas: dict[Any, dict[tuple[str, ...], float]] = {
            metric: {}
            for metric in (
                self.connects, self.channels_joined, self.joins, self.handle_in, self.limited,
                self.engine_reconnects, self.engine_downtime, self.presence_entries,
            )
        }  # fmt: skip
        self._n_connects = self._deltas[self.connects]
        self._n_joins = self._deltas[self.joins]
        self._n_joined = self._deltas[self.channels_joined]
        # Histogram observations by bucket (the last two: +Inf, then the sum).
        self._observed: dict[tuple[Any, tuple[str, ...]], list[float]] = {}
        self._handler_id = f"phoenix_channels.metrics.{id(self):x}"
        self._attached = False
        self._flusher: asyncio.Task[None] | None = None

    # -- lifecycle (an endpoint service) --------------------------------------------------

    def attach(self) -> None:
        """Start listening to the telemetry events (``start`` does it)."""
        if self._attached:
            return
        self._attached = True
        self._seen = {name: _totals(c) for name, c in telemetry.TRANSPORTS.items()}
        for event, handler in self._handlers().items():
            telemetry.attach(f"{self._handler_id}.{'.'.join(event.name)}", [event], handler)

    def detach(self) -> None:
        """Stop listening (``stop`` does it), after moving the pending counts."""
        if not self._attached:
            return
        for event in self._handlers():
            telemetry.detach(f"{self._handler_id}.{'.'.join(event.name)}")
        self.flush()
        self._attached = False

    async def start(self) -> None:
        self.attach()
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_often())

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        self.detach()

    async def _flush_often(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_INTERVAL)
            self.flush()

    def flush(self) -> None:
        """Move the counts kept since the last flush into the Prometheus metrics."""
        for metric, pending in self._deltas.items():
            if not pending:
                continue
            changes = list(pending.items())
            pending.clear()
            for labels, delta in changes:
                if delta:
                    child = self._child(metric, *labels) if labels else metric
                    child.inc(delta)
        observed, self._observed = self._observed, {}
        for (metric, labels), counts in observed.items():
            _apply_histogram(self._child(metric, *labels), counts)
        if self._attached:
            self._flush_transports()
        delivered, self._out = self._out, {}
        for transport, (messages, size) in delivered.items():
            label = transport or "unknown"
            self.messages_out.labels(label).inc(messages)
            self.bytes_out.labels(label).inc(size)
        if self._broadcasts:
            broadcasts, self._broadcasts = self._broadcasts, 0
            self.broadcasts.inc(broadcasts)
        if self._deliveries:
            deliveries, self._deliveries = self._deliveries, 0
            self.deliveries.inc(deliveries)

    def _flush_transports(self) -> None:
        """Move what the sockets counted since the last flush; set the connection gauge."""
        seen = self._seen
        for name, counts in list(telemetry.TRANSPORTS.items()):
            now = _totals(counts)
            before = seen.get(name, (0, 0, 0, 0))
            if now != before:
                seen[name] = now
                for metric, value, old in zip(
                    (self.messages_in, self.bytes_in, self.messages_out, self.bytes_out),
                    now,
                    before,
                    strict=True,
                ):
                    if value > old:
                        self._child(metric, name).inc(value - old)
            self._child(self.connections, name).set(counts.sockets)

    # -- exposition -------------------------------------------------------------------------

    def scrape_registry(self) -> CollectorRegistry:
        """The registry to expose: every worker's values when multiprocess, else our own."""
        if multiprocess_dir() is None:
            return self.registry
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry

    def exposition(self) -> bytes:
        """The text exposition format of every metric (flushes first)."""
        self.flush()
        return prometheus_client.generate_latest(self.scrape_registry())

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request with the exposition (the endpoint's ``metrics_path``)."""
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            status, body = 405, b"method not allowed\n"
            content_type = "text/plain; charset=utf-8"
        else:
            status, body = 200, self.exposition()
            content_type = prometheus_client.CONTENT_TYPE_LATEST
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    # -- the handlers -------------------------------------------------------------------------

    def _add(self, metric: Any, labels: tuple[str, ...], amount: float = 1) -> None:
        pending = self._deltas[metric]
        pending[labels] = pending.get(labels, 0) + amount

    def _observe(self, metric: Any, labels: tuple[str, ...], value: float) -> None:
        key = (metric, labels)
        counts = self._observed.get(key)
        if counts is None:
            # one count per bucket (the last is +Inf), then the sum
            counts = self._observed[key] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        counts[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        counts[-1] += value

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: labels() takes a lock and builds a tuple."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _handlers(self) -> dict[telemetry.Event, telemetry.Handler]:
        return {
            telemetry.SOCKET_CONNECT: self._on_connect,
            telemetry.SOCKET_LIMIT: self._on_limit,
            telemetry.CHANNEL_JOIN: self._on_join,
            telemetry.CHANNEL_LEAVE: self._on_leave,
            telemetry.CHANNEL_HANDLE_IN: self._on_handle_in,
            telemetry.PUBSUB_BROADCAST: self._on_broadcast,
            telemetry.PUBSUB_PUBLISH: self._on_publish,
            telemetry.PUBSUB_LINK_DOWN: self._on_link_down,
            telemetry.PUBSUB_LINK_UP: self._on_link_up,
            telemetry.PRESENCE_DIFF: self._on_presence,
        }

    # The handlers of events on the connect and join path count in their metric's
    # pending dict directly: each is a few dict operations per connection.

    def _on_connect(self, _: Any, m: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        status = meta["status"]
        labels = (meta["transport"], meta["result"], "" if status is None else str(status))
        pending = self._n_connects
        pending[labels] = pending.get(labels, 0) + 1

    def _on_limit(self, _: Any, m: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self._add(self.limited, (meta["limit"], "closed" if meta["closed"] else "refused"))

    def _on_join(self, _: Any, m: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        route = meta["route"] or "unmatched"
        result = meta["result"]
        labels = (route, result)
        pending = self._n_joins
        pending[labels] = pending.get(labels, 0) + 1
        if result == "ok":
            joined, key = self._n_joined, (route,)
            joined[key] = joined.get(key, 0) + 1

    def _on_leave(self, _: Any, m: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        joined, key = self._n_joined, (meta["route"] or "unmatched",)
        joined[key] = joined.get(key, 0) - 1

    def _on_handle_in(self, _: Any, m: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        route = meta["route"] or "unmatched"
        self._add(self.handle_in, (route, meta["outcome"]))
        self._observe(self.handle_in_duration, (route,), m["duration"])

    def _on_broadcast(self, _: Any, m: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self._broadcasts += 1
        self._deliveries += m["subscribers"]
        out = self._out
        for transport, (messages, size) in meta["by_transport"].items():
            counts = out.get(transport)
            if counts is None:
                counts = out[transport] = [0, 0]
            counts[0] += messages
            counts[1] += size

    def _on_publish(self, _: Any, m: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self._observe(self.engine_publish, (meta["engine"],), m["duration"])

    def _on_link_down(self, _: Any, m: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self._child(self.engine_up, meta["engine"]).set(0)

    def _on_link_up(self, _: Any, m: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        engine = meta["engine"]
        self._child(self.engine_up, engine).set(1)
        if meta["reconnect"]:
            self._add(self.engine_reconnects, (engine,))
            self._add(self.engine_downtime, (engine,), m["gap"])

    def _on_presence(self, _: Any, m: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self._add(self.presence_entries, (), m["joins"] - m["leaves"])

    def __repr__(self) -> str:
        where = "multiprocess" if multiprocess_dir() else "in-process"
        return f"<PrometheusMetrics {self.namespace} {where} attached={self._attached}>"


def _totals(counts: telemetry.TransportCounts) -> tuple[int, int, int, int]:
    return (counts.messages_in, counts.bytes_in, counts.messages_out, counts.bytes_out)


def _apply_histogram(child: Any, counts: list[float]) -> None:
    """Add bucket counts and a sum to a histogram child in one go."""
    buckets, total = getattr(child, "_buckets", None), getattr(child, "_sum", None)
    if buckets is not None and total is not None and len(buckets) == len(counts) - 1:
        for bucket, count in zip(buckets, counts, strict=False):
            if count:
                bucket.inc(count)
        total.inc(counts[-1])
        return
    # Another prometheus_client layout: replay each observation at its bucket's bound.
    bounds = (*LATENCY_BUCKETS, float("inf"))
    for bound, count in zip(bounds, counts, strict=False):
        for _ in range(int(count)):
            child.observe(bound if bound != float("inf") else LATENCY_BUCKETS[-1])


def install(endpoint: Any, path: str | None = None) -> PrometheusMetrics:
    """Make the metrics of ``endpoint`` (``Endpoint(metrics_path=...)`` calls it).

    They start and stop with the endpoint. ``path`` is only checked here:
    the endpoint serves it.
    """
    if path is not None and (type(path) is not str or not path.startswith("/")):
        raise ConfigurationError(f"metrics_path must be a path starting with '/', got {path!r}")
    metrics = PrometheusMetrics()
    endpoint.add_service(metrics)
    return metrics


class MultiprocessDir:
    """The ``PROMETHEUS_MULTIPROC_DIR`` of ``serve --workers``, made by the supervisor.

    Sets the variable (inherited by the workers, which must not have
    imported ``prometheus_client`` before: they are fresh processes) to a
    new temporary directory, or empties the one already set (files of an
    earlier run would add their counts). ``worker_exited(pid)`` removes a
    dead worker's live gauges; ``close()`` removes a directory it made.
    """

    def __init__(self) -> None:
        existing = multiprocess_dir()
        self.created = existing is None
        if existing is None:
            self.path = tempfile.mkdtemp(prefix="phoenix-channels-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.path
        else:
            self.path = existing
            os.makedirs(existing, exist_ok=True)
            for name in os.listdir(existing):
                if name.endswith(".db"):
                    os.remove(os.path.join(existing, name))
        log.info("metrics of the workers are kept in %s", self.path)

    def worker_exited(self, pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
