"""The chat demo: a page using the official Phoenix JS client, served by the app.

Run it with ``make demo`` and open http://127.0.0.1:4000 in two tabs.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from phoenix_channels import Channel, Endpoint, JoinError, Socket, reply

HERE = Path(__file__).parent
STATIC = {
    "/": (HERE / "index.html", b"text/html; charset=utf-8"),
    "/js/phoenix.mjs": (HERE / "node_modules/phoenix/priv/static/phoenix.mjs",
                        b"text/javascript; charset=utf-8"),
}
HISTORY: dict[str, deque[dict[str, Any]]] = {}


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        nick = str(payload.get("nick") or "").strip()[:32]
        if not nick:
            raise JoinError({"reason": "a nick is required"})
        self.assigns["nick"] = nick
        self.send("after_join")
        return {"room": topic}

    async def handle_info(self, message: Any) -> None:
        if message == "after_join":
            await self.push("history", {"messages": list(HISTORY.get(self.topic, ()))})
            await self.broadcast("joined", {"nick": self.assigns["nick"]})

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "new_msg":
            body = str(payload.get("body", "")).strip()[:2000]
            if not body:
                return reply("error", {"reason": "empty message"})
            message = {"nick": self.assigns["nick"], "body": body}
            HISTORY.setdefault(self.topic, deque(maxlen=50)).append(message)
            await self.broadcast("new_msg", message)
            return reply("ok")
        return reply("error", {"reason": f"unknown event {event}"})

    async def terminate(self, reason: Any) -> None:
        if self.joined or reason == "shutdown:left":
            await self.endpoint.broadcast(self.topic, "left", {"nick": self.assigns.get("nick")})


class ChatSocket(Socket):
    channels = {"room:*": RoomChannel}
    longpoll = True  # the JS client's fallback where WebSockets are blocked


async def pages(scope: Any, receive: Any, send: Any) -> None:
    """A tiny static file server for the page and the JS client."""
    if scope["type"] != "http":
        return
    found = STATIC.get(scope["path"])
    status, body, kind = (200, found[0].read_bytes(), found[1]) if found else (
        404, b"not found", b"text/plain")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


endpoint = Endpoint(
    sockets={"/socket": ChatSocket},
    app=pages,
    check_origin=["//127.0.0.1", "//localhost"],
)
