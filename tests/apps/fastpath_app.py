"""The app of the fast-path tests, served by plain ``uvicorn`` and by ``gunicorn``.

The join reply says which process answered and which transport carries the
socket (``fast_path``: our own WebSocket protocol below ASGI, as opposed to
uvicorn's ASGI WebSocket). ``GET /broadcast?topic=T`` broadcasts ``ping`` on
``T`` from whichever worker takes the request; ``GET /`` is an ordinary page.
``PHX_APPS_ENGINE=redis`` with ``PHX_APPS_URL``/``PHX_APPS_PREFIX`` makes
the workers a cluster.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from phoenix_channels import Channel, Endpoint, PubSub, Socket
from phoenix_channels.transports.websocket import WebSocketProtocol


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        transport = self.socket.transport
        return {
            "pid": os.getpid(),
            "fast_path": isinstance(transport, WebSocketProtocol),
            "transport": type(transport).__name__,
        }


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}

    async def connect(self, params: dict[str, Any], connect_info: Any) -> bool:
        return True


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("an ordinary page")


async def broadcast(request: Request) -> JSONResponse:
    await endpoint.broadcast(request.query_params["topic"], "ping", {"pid": os.getpid()})
    return JSONResponse({"pid": os.getpid()})


def _pubsub() -> PubSub:
    if os.environ.get("PHX_APPS_ENGINE") == "redis":
        return PubSub.redis(os.environ["PHX_APPS_URL"], prefix=os.environ["PHX_APPS_PREFIX"])
    return PubSub()


web = Starlette(routes=[Route("/", home), Route("/broadcast", broadcast)])
endpoint = Endpoint(
    sockets={"/socket": UserSocket},
    app=web,
    pubsub=_pubsub(),
    check_origin=False,
    secret_key_base="fastpath-test-" + "s" * 40,  # one secret for every worker
)
