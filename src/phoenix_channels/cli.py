"""``phoenix-channels serve module:endpoint``: serve an endpoint on the fast path.

Uvicorn (httptools, uvloop) serves HTTP and the ASGI app; WebSocket upgrades
for the endpoint's sockets are taken over by our own protocol
(:mod:`phoenix_channels.transports.websocket`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any

__all__ = ["load_endpoint", "main", "serve"]


def load_endpoint(spec: str) -> Any:
    """Import ``module:attribute`` (``module`` alone means ``module:endpoint``)."""
    from .endpoint import Endpoint

    module_name, _, attr = spec.partition(":")
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, "")
    module = importlib.import_module(module_name)
    try:
        endpoint = getattr(module, attr or "endpoint")
    except AttributeError:
        raise SystemExit(f"{module_name} has no attribute {attr or 'endpoint'!r}") from None
    if not isinstance(endpoint, Endpoint):
        raise SystemExit(f"{spec} is a {type(endpoint).__name__}, not a phoenix_channels.Endpoint")
    return endpoint


def serve(
    endpoint: Any,
    host: str = "127.0.0.1",
    port: int = 4000,
    log_level: str = "info",
    *,
    reuse_port: bool = False,
) -> None:
    """Run ``endpoint`` under uvicorn with the fast WebSocket path, until stopped.

    ``reuse_port``: bind with ``SO_REUSEPORT``, so that several processes
    serve one port (what ``--workers`` does; also usable with a supervisor
    of your own, e.g. one systemd unit per worker).
    """
    import uvicorn

    from .transports.websocket import front_protocol_for, protocol_for

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        loop = "asyncio"
    config = uvicorn.Config(
        endpoint,
        host=host,
        port=port,
        loop=loop,
        http=front_protocol_for(endpoint),
        ws=protocol_for(endpoint),
        lifespan="on",
        log_level=log_level,
        timeout_graceful_shutdown=endpoint.drain_timeout + 5,
    )
    if reuse_port:
        from ._workers import bind_socket

        draining_server(config, endpoint).run(sockets=[bind_socket(host, port, reuse_port=True)])
        return
    draining_server(config, endpoint).run()


def draining_server(config: Any, endpoint: Any) -> Any:
    """A uvicorn Server that starts the endpoint's drain as soon as it is told to stop.

    Uvicorn waits for requests in flight before the lifespan shutdown; a
    long poll in flight would hold the exit for up to its window. Draining
    first closes WebSockets (1012) and long-poll sessions, which answers the
    polls waiting on them at once.
    """
    import uvicorn

    class DrainingServer(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            endpoint.begin_drain()
            await super().shutdown(sockets=sockets)

    return DrainingServer(config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="phoenix-channels", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve an Endpoint on the fast path")
    run.add_argument("endpoint", help="module:attribute of a phoenix_channels.Endpoint")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=4000)
    run.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N processes on one port (needs a cluster PubSub: Redis or NATS)",
    )
    run.add_argument(
        "--reuse-port",
        action="store_true",
        help="bind with SO_REUSEPORT so that several processes can serve the port",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    endpoint = load_endpoint(args.endpoint)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1:
        from ._workers import serve_workers
        from .pubsub import LocalAdapter

        if isinstance(endpoint.pubsub.adapter, LocalAdapter):
            parser.exit(
                2,
                f"phoenix-channels: --workers {args.workers} needs a cluster PubSub adapter. "
                f"{args.endpoint} uses the local one, so each worker would be an island: a "
                "broadcast in one process would never reach the clients connected to the "
                "others. Give the Endpoint pubsub=PubSub.redis(url) or PubSub.nats(url), or "
                "run one worker.\n",
            )
        metrics_dir = None
        if getattr(endpoint, "metrics", None) is not None:
            from .metrics import MultiprocessDir

            metrics_dir = MultiprocessDir()  # the workers' values, summed at each scrape
        try:
            status = serve_workers(
                args.endpoint,
                args.workers,
                args.host,
                args.port,
                args.log_level,
                grace=endpoint.drain_timeout + 10,
                on_exit=metrics_dir.worker_exited if metrics_dir is not None else None,
            )
        finally:
            if metrics_dir is not None:
                metrics_dir.close()
        raise SystemExit(status)
    serve(endpoint, args.host, args.port, args.log_level, reuse_port=args.reuse_port)


if __name__ == "__main__":
    main()
