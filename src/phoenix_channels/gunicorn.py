"""Gunicorn on the fast path: ``gunicorn main:app -k phoenix_channels.gunicorn.Worker``.

:class:`Worker` is uvicorn's gunicorn worker (from the ``uvicorn-worker``
package when it is installed, else ``uvicorn.workers``) with uvicorn's
HTTP protocol set to :class:`phoenix_channels.uvicorn.HttpProtocol`, so
WebSocket connections to the endpoint's sockets take the fast path in
every worker. Several workers need a cluster PubSub (``PubSub.redis`` or
``PubSub.nats``) so that a broadcast in one worker reaches the clients of
the others.
"""

from __future__ import annotations

import warnings
from typing import Any

try:
    from uvicorn_worker import UvicornWorker
except ImportError:  # pragma: no cover - the fallback is deprecated upstream, still works
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from uvicorn.workers import UvicornWorker

__all__ = ["Worker"]


class Worker(UvicornWorker):  # type: ignore[misc]
    """A uvicorn worker for gunicorn whose HTTP protocol is the fast path's."""

    CONFIG_KWARGS: dict[str, Any] = {
        **UvicornWorker.CONFIG_KWARGS,
        "http": "phoenix_channels.uvicorn:HttpProtocol",
        "ws": "phoenix_channels.uvicorn:WebSocketProtocol",
        "lifespan": "on",
    }
