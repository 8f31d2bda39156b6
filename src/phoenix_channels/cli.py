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
    endpoint: Any, host: str = "127.0.0.1", port: int = 4000, log_level: str = "info"
) -> None:
    """Run ``endpoint`` under uvicorn with the fast WebSocket path, until stopped."""
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
    uvicorn.Server(config).run()


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    serve(load_endpoint(args.endpoint), args.host, args.port, args.log_level)


if __name__ == "__main__":
    main()
