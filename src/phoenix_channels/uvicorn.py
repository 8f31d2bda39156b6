"""The fast path under your own ``uvicorn`` command: one setting, by import path.

::

    uvicorn main:app --http phoenix_channels.uvicorn:HttpProtocol

:class:`HttpProtocol` is uvicorn's HTTP protocol class on the fast path
(what ``phoenix-channels serve`` installs): it sees each connection first,
serves WebSocket upgrades to the endpoint's sockets with our own protocol
(:mod:`phoenix_channels.transports.websocket`), and hands every other
request, with the bytes read so far, to uvicorn's own HTTP protocol, so the
rest of the app is served as before. ``--ws phoenix_channels.uvicorn:WebSocketProtocol``
alone is the smaller step: uvicorn parses the upgrade request, then our
protocol takes the connection over.

Which endpoint: the one the app is, or the first one reachable from it:
wrapped by middleware, given an ``app=`` of its own, or mounted in a
Starlette/FastAPI app (``app.mount("/", endpoint)``). Mount it at the root
for the fast path: a socket mounted under a prefix is served, but through
ASGI. If no endpoint is found, uvicorn serves everything itself and an
error is logged once.

Gunicorn: ``-k phoenix_channels.gunicorn.Worker`` (:mod:`phoenix_channels.gunicorn`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .transports.websocket import WebSocketProtocol as _FastPathProtocol

if TYPE_CHECKING:
    from .endpoint import Endpoint

__all__ = ["HttpProtocol", "WebSocketProtocol", "find_endpoint"]

log = logging.getLogger("phoenix_channels.uvicorn")

_MAX_DEPTH = 8
_LINKS = ("app", "_app", "application", "router", "routes", "_base_app", "middleware_stack")
_bound: dict[tuple[int, bool], type[_FastPathProtocol] | None] = {}


def find_endpoint(app: Any) -> Endpoint | None:
    """The Endpoint ``app`` is, wraps, or mounts (breadth first), or ``None``."""
    from .endpoint import Endpoint

    seen: set[int] = set()
    level: list[Any] = [app]
    for _ in range(_MAX_DEPTH):
        following: list[Any] = []
        for obj in level:
            if obj is None or id(obj) in seen or isinstance(obj, str | bytes | int | float):
                continue
            seen.add(id(obj))
            if isinstance(obj, Endpoint):
                return obj
            if isinstance(obj, list | tuple):
                following.extend(obj)
                continue
            for name in _LINKS:
                try:
                    following.append(getattr(obj, name, None))
                except Exception:  # a property that cannot answer yet
                    continue
        if not following:
            break
        level = following
    return None


def _protocol_class(config: Any, front: bool) -> type[_FastPathProtocol] | None:
    """The fast-path class bound to the endpoint of ``config``'s app (cached per config)."""
    key = (id(config), front)
    if key in _bound:
        return _bound[key]
    endpoint = find_endpoint(getattr(config, "loaded_app", None))
    cls: type[_FastPathProtocol] | None = None
    if endpoint is None:
        log.error(
            "phoenix_channels.uvicorn: no phoenix_channels.Endpoint found in the app %r; "
            "serve the endpoint (Endpoint(..., app=your_app)) or mount it at the root of your "
            "Starlette/FastAPI app. Uvicorn serves every connection itself meanwhile.",
            getattr(config, "app", None),
        )
    else:
        from .transports.websocket import front_protocol_for, protocol_for

        cls = front_protocol_for(endpoint) if front else protocol_for(endpoint)
    _bound[key] = cls
    return cls


class HttpProtocol(_FastPathProtocol):
    """Uvicorn's ``--http`` class on the fast path (built per connection, bound on first use)."""

    __slots__ = ()
    front = True

    def __new__(
        cls,
        config: Any = None,
        server_state: Any = None,
        app_state: Any = None,
        _loop: Any = None,
    ) -> Any:
        bound = _protocol_class(config, front=True)
        if bound is None:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

            return HttpToolsProtocol(
                config=config, server_state=server_state, app_state=app_state, _loop=_loop
            )
        return _build(bound, config, server_state, app_state)


class WebSocketProtocol(_FastPathProtocol):
    """Uvicorn's ``--ws`` class: takes over upgrades uvicorn's HTTP protocol has parsed."""

    __slots__ = ()

    def __new__(
        cls,
        config: Any = None,
        server_state: Any = None,
        app_state: Any = None,
        _loop: Any = None,
    ) -> Any:
        bound = _protocol_class(config, front=False)
        if bound is None:
            from uvicorn.protocols.websockets.websockets_sansio_impl import (
                WebSocketsSansIOProtocol,
            )

            return WebSocketsSansIOProtocol(
                config=config, server_state=server_state, app_state=app_state
            )
        return _build(bound, config, server_state, app_state)


def _build(cls: type[_FastPathProtocol], config: Any, server_state: Any, app_state: Any) -> Any:
    # Not an instance of the class uvicorn named, so Python does not call __init__ itself.
    protocol = object.__new__(cls)
    protocol.__init__(config, server_state, app_state)  # type: ignore[misc]
    return protocol
