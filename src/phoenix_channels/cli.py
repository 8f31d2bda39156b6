"""``phoenix-channels serve module:endpoint``: serve an endpoint on the fast path.

Uvicorn (httptools, uvloop) serves HTTP and the ASGI app; WebSocket upgrades
for the endpoint's sockets are taken over by our own protocol
(:mod:`phoenix_channels.transports.websocket`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any

from ._secret import missing_shared_secret

__all__ = ["CommandError", "import_attribute", "load_app", "load_endpoint", "main", "serve"]


class CommandError(Exception):
    """A mistake on the command line: printed as one line, exit status 2."""


def import_attribute(spec: str, app_dir: str | None = ".") -> tuple[str, Any]:
    """``(spec with the attribute spelled out, value)`` for ``module:attribute``.

    ``module`` alone means ``module:endpoint``. ``app_dir`` is put first on
    ``sys.path`` (uvicorn's ``--app-dir``). A module that cannot be found or a
    missing attribute raise :class:`CommandError` with one line that says so;
    an error raised while the module itself imports propagates with its traceback.
    """
    module_name, _, attr = spec.partition(":")
    attr = attr or "endpoint"
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise CommandError(f"{spec!r} is not module:attribute (e.g. myapp:endpoint)")
    if app_dir is not None:
        path = os.path.abspath(app_dir)
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        # Only the module named on the command line (or a package above it) is our
        # business; a missing import inside the app keeps its traceback.
        if missing != module_name and not module_name.startswith(missing + "."):
            raise
        raise CommandError(
            f"could not import module {module_name!r}: no module named {missing!r} in "
            f"{os.path.abspath(app_dir or '.')} or on sys.path (run from the directory that "
            "holds it, or give --app-dir)"
        ) from None
    try:
        value = getattr(module, attr)
    except AttributeError:
        raise CommandError(
            f"module {module_name!r} has no attribute {attr!r} (found in "
            f"{getattr(module, '__file__', module_name)}); name the Endpoint as "
            f"{module_name}:<attribute>"
        ) from None
    return f"{module_name}:{attr}", value


def load_app(spec: str, app_dir: str | None = ".") -> tuple[Any, Any]:
    """``(app, endpoint)`` for ``module:attribute``: an Endpoint, or an ASGI app holding one.

    An app that wraps or mounts an endpoint (a Starlette/FastAPI app with
    ``app.mount("/", endpoint)``) is served whole, its sockets on the fast path.
    :class:`CommandError` if there is no endpoint in it (see :func:`import_attribute`).
    """
    from .endpoint import Endpoint
    from .uvicorn import find_endpoint

    name, app = import_attribute(spec, app_dir)
    endpoint = app if isinstance(app, Endpoint) else find_endpoint(app)
    if endpoint is None:
        raise CommandError(
            f"{name} is a {type(app).__name__}, not a phoenix_channels.Endpoint nor an app "
            "mounting one; name the Endpoint, or mount it in your app (app.mount('/', endpoint))"
        )
    return app, endpoint


def load_endpoint(spec: str, app_dir: str | None = ".") -> Any:
    """The :class:`~phoenix_channels.Endpoint` named by ``module:attribute``, or held by
    the app it names (see :func:`load_app`)."""
    return load_app(spec, app_dir)[1]


def serve(
    endpoint: Any,
    host: str = "127.0.0.1",
    port: int = 4000,
    log_level: str = "info",
    *,
    reuse_port: bool = False,
    app: Any = None,
) -> None:
    """Run ``endpoint`` under uvicorn with the fast WebSocket path, until stopped.

    ``reuse_port``: bind with ``SO_REUSEPORT``, so that several processes
    serve one port (what ``--workers`` does; also usable with a supervisor
    of your own, e.g. one systemd unit per worker). ``app``: the ASGI app to
    serve when it is not the endpoint itself but holds it (see :func:`load_app`).
    """
    import uvicorn

    from .transports.websocket import front_protocol_for, protocol_for

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        loop = "asyncio"
    config = uvicorn.Config(
        endpoint if app is None else app,
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
    run = commands.add_parser(
        "serve",
        help="serve an Endpoint on the fast path",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run.add_argument(
        "endpoint",
        help="module:attribute of a phoenix_channels.Endpoint or of an app mounting one "
        "(module alone: :endpoint)",
    )
    run.add_argument("--host", default="127.0.0.1", help="address to bind")
    run.add_argument("--port", type=int, default=4000, help="port to bind (0: any free port)")
    run.add_argument(
        "--app-dir",
        default=".",
        help="directory to import the module from (put first on sys.path)",
    )
    run.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="logging level",
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
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        app, endpoint = load_app(args.endpoint, args.app_dir)
    except CommandError as exc:
        parser.exit(2, f"phoenix-channels: error: {exc}\n")
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
    problem = missing_shared_secret(endpoint, workers=args.workers)
    if problem:
        parser.exit(2, f"phoenix-channels: error: {problem}\n")
    if args.workers > 1:
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
                app_dir=os.path.abspath(args.app_dir),
                on_exit=metrics_dir.worker_exited if metrics_dir is not None else None,
            )
        finally:
            if metrics_dir is not None:
                metrics_dir.close()
        raise SystemExit(status)
    serve(endpoint, args.host, args.port, args.log_level, reuse_port=args.reuse_port, app=app)


if __name__ == "__main__":
    main()
