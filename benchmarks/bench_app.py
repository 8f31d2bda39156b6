"""The benchmark application served by phoenix-channels (``ours`` and ``ours-asgi``).

Same mini protocol as the floor: joins to ``bench:*`` are accepted with ``{}``,
``echo`` replies ok with its payload, ``shout`` broadcasts its payload to every
subscriber of the topic (the sender included).

Fast path: ``python -m phoenix_channels serve benchmarks.bench_app:endpoint``;
ASGI path: ``python -m uvicorn benchmarks.bench_app:endpoint ...``.

Observability variants (the ``ours-telemetry`` and ``ours-prometheus``
servers of ``run.py``), built only when asked for:
``bench_app:endpoint_telemetry`` has a no-op handler attached to every
telemetry event; ``bench_app:endpoint_prometheus`` serves Prometheus
metrics at ``/metrics``; ``bench_app:endpoint_dashboard`` has the live dashboard
on, with a viewer subscribed to its updates (what an open page costs the server,
less one WebSocket at one message a second).
"""

from __future__ import annotations

from typing import Any

from phoenix_channels import Channel, Endpoint, Socket, reply


class BenchChannel(Channel):
    async def join(self, topic: str, payload: Any) -> None:
        return None  # ok reply with {}

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "echo":
            return reply("ok", payload)
        if event == "shout":
            await self.broadcast("shout", payload)
        return None


class BenchSocket(Socket):
    channels = {"bench:*": BenchChannel}

    async def connect(self, params: Any, connect_info: Any) -> bool:
        return True


endpoint = Endpoint(sockets={"/socket": BenchSocket}, check_origin=False)


def _noop(name: Any, measurements: Any, metadata: Any) -> None:
    return None


def __getattr__(name: str) -> Endpoint:
    if name == "endpoint_telemetry":
        from phoenix_channels import telemetry

        telemetry.attach("bench-noop", telemetry.EVENTS, _noop)
        return Endpoint(sockets={"/socket": BenchSocket}, check_origin=False)
    if name == "endpoint_dashboard":
        return _with_dashboard()
    if name == "endpoint_prometheus":
        return Endpoint(
            sockets={"/socket": BenchSocket}, check_origin=False, metrics_path="/metrics"
        )
    raise AttributeError(name)


def _with_dashboard() -> Endpoint:
    from phoenix_channels.dashboard import Dashboard

    endpoint = Endpoint(
        sockets={"/socket": BenchSocket},
        check_origin=False,
        dashboard=Dashboard(guard=lambda request: True),
    )

    class Viewer:
        async def start(self) -> None:
            endpoint.pubsub.subscribe("dashboard:live", _viewer)

        async def stop(self) -> None:
            endpoint.pubsub.unsubscribe("dashboard:live", _viewer)

    endpoint.add_service(Viewer())
    return endpoint


def _viewer(message: Any) -> None:
    return None
