"""Baseline: a plain Starlette WebSocket endpoint under uvicorn's ASGI path.

Speaks the same mini Phoenix V2 protocol as ``floor_server.py``: ``phx_join``
and ``heartbeat`` get an ok reply with ``{}``, ``echo`` gets its payload back
in an ok reply, ``shout`` builds one broadcast string
``[null,null,topic,"shout",payload]`` and awaits ``send_text`` of it on every
joined WebSocket in turn (the sender included).

Run: ``python -m uvicorn benchmarks.baselines.starlette_app:app --ws websockets
--loop uvloop --http httptools --log-level warning`` (cwd = repository root).
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

SUBSCRIBERS: dict[str, set[WebSocket]] = {}
OK_EMPTY = {"status": "ok", "response": {}}


async def socket_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    joined: list[str] = []
    try:
        while True:
            join_ref, ref, topic, event, payload = orjson.loads(await websocket.receive_text())[:5]
            if event == "shout":
                out = orjson.dumps([None, None, topic, "shout", payload]).decode()
                for sub in list(SUBSCRIBERS.get(topic, ())):
                    try:
                        await sub.send_text(out)
                    except (WebSocketDisconnect, RuntimeError, OSError):  # peer went away
                        pass
                continue
            if event == "echo":
                reply = {"status": "ok", "response": payload}
            else:
                reply = OK_EMPTY
                if event == "phx_join":
                    SUBSCRIBERS.setdefault(topic, set()).add(websocket)
                    joined.append(topic)
            await websocket.send_text(
                orjson.dumps([join_ref, ref, topic, "phx_reply", reply]).decode()
            )
    except WebSocketDisconnect:
        pass
    finally:
        for topic in joined:
            SUBSCRIBERS.get(topic, set()).discard(websocket)


app = Starlette(routes=[WebSocketRoute("/socket/websocket", socket_endpoint)])
