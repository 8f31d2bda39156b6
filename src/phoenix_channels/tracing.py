"""OpenTelemetry spans for connect, join and ``handle_in`` (needs ``[otel]``).

:class:`OpenTelemetryTracing` listens to the telemetry events and records
one span per event, with the event's duration, as the events fire:

* ``socket.connect`` (``phoenix_channels.connect``): its parent is the trace
  context the client sent with its connection request (``traceparent`` /
  ``tracestate``: ``connect_info["trace_context_headers"]``), extracted with
  the globally configured propagator (W3C Trace Context by default);
* ``channel.join`` (``phoenix_channels.join <route>``) and
  ``channel.handle_in`` (``phoenix_channels.handle_in <route> <event>``): children of
  their connection's connect span, so a whole connection is one trace that
  continues the client's.

Spans are recorded when the work is done (start time = end - duration), so
they are not the *current* span while ``join`` or ``handle_in`` runs: spans
your callbacks start are not nested under them.

    tracing = OpenTelemetryTracing()          # the global TracerProvider
    endpoint.add_service(tracing)             # attached while the endpoint runs
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from . import telemetry
from .errors import ConfigurationError

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ConfigurationError(
        "OpenTelemetry tracing needs opentelemetry-api: pip install 'phoenix-channels[otel]'"
    ) from exc

__all__ = ["OpenTelemetryTracing"]

_CONTEXT = "_otel_context"  # kept in the socket's __dict__: its connect span's context


class OpenTelemetryTracing:
    """Spans from the telemetry events; a service of the endpoint (start/stop with it).

    ``tracer_provider``: where spans go (the global provider by default).
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        self.tracer = trace.get_tracer("phoenix_channels", tracer_provider=tracer_provider)
        self._handler_id = f"phoenix_channels.tracing.{id(self):x}"
        self._attached = False

    def attach(self) -> None:
        if not self._attached:
            self._attached = True
            telemetry.attach(
                self._handler_id,
                [telemetry.SOCKET_CONNECT, telemetry.CHANNEL_JOIN, telemetry.CHANNEL_HANDLE_IN],
                self._on_event,
            )

    def detach(self) -> None:
        if self._attached:
            self._attached = False
            telemetry.detach(self._handler_id)

    async def start(self) -> None:
        self.attach()

    async def stop(self) -> None:
        self.detach()

    def _on_event(
        self, name: telemetry.EventName, m: Mapping[str, Any], meta: Mapping[str, Any]
    ) -> None:
        end = time.time_ns()
        start = end - int(m["duration"] * 1e9)
        if name == telemetry.SOCKET_CONNECT.name:
            self._connect(meta, start, end)
        elif name == telemetry.CHANNEL_JOIN.name:
            span = self._child(f"phoenix_channels.join {meta['route']}", meta, start)
            span.set_attribute("phoenix_channels.result", meta["result"])
            if meta["result"] != "ok":
                span.set_status(Status(StatusCode.ERROR, f"join {meta['result']}"))
            span.end(end)
        else:
            span = self._child(
                f"phoenix_channels.handle_in {meta['route']} {meta['event']}", meta, start
            )
            span.set_attribute("phoenix_channels.event", meta["event"])
            span.set_attribute("phoenix_channels.outcome", meta["outcome"])
            if meta["status"] is not None:
                span.set_attribute("phoenix_channels.reply_status", meta["status"])
            if meta["outcome"] == "crash":
                span.set_status(Status(StatusCode.ERROR, "handle_in crashed"))
            span.end(end)

    def _connect(self, meta: Mapping[str, Any], start: int, end: int) -> None:
        carrier = dict(meta["trace_context_headers"])
        parent = propagate.extract(carrier) if carrier else None
        span = self.tracer.start_span(
            "phoenix_channels.connect",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=start,
            attributes={
                "phoenix_channels.socket": meta["socket_cls"].__name__,
                "phoenix_channels.transport": meta["transport"],
                "phoenix_channels.result": meta["result"],
                "url.path": meta["path"] or "",
            },
        )
        if meta["status"] is not None:
            span.set_attribute("http.response.status_code", meta["status"])
            span.set_status(Status(StatusCode.ERROR, f"refused with {meta['status']}"))
        sock = meta["socket"]
        if sock is not None:
            sock.__dict__[_CONTEXT] = trace.set_span_in_context(span)
        span.end(end)

    def _child(self, name: str, meta: Mapping[str, Any], start: int) -> Any:
        context = meta["socket"].__dict__.get(_CONTEXT)
        return self.tracer.start_span(
            name,
            context=context,
            kind=SpanKind.SERVER,
            start_time=start,
            attributes={
                "phoenix_channels.topic": meta["topic"],
                "phoenix_channels.route": meta["route"] or "",
            },
        )
