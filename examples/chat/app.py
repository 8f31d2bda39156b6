"""The chat demo: a page using the official Phoenix JS client, served by the app.

Run it with ``make demo`` and open http://127.0.0.1:4000 in two tabs. It shows:

* Presence: who is online, every tab and device of a nick;
* history from the framework (``history = History(...)``): the last
  messages when a tab joins, read with ``endpoint.history``;
* recovery: a tab that loses its connection for a few seconds gets every
  message it missed, once and in order, when it rejoins (the page uses
  ``phoenix_channels/static/recovery.mjs``), or a visible note when that was
  not possible and the last messages are loaded again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import phoenix_channels
from phoenix_channels import Channel, Endpoint, History, JoinError, Socket, reply
from phoenix_channels.presence import Presence

HERE = Path(__file__).parent
STATIC = {
    "/": (HERE / "index.html", b"text/html; charset=utf-8"),
    "/js/phoenix.mjs": (
        HERE / "node_modules/phoenix/priv/static/phoenix.mjs",
        b"text/javascript; charset=utf-8",
    ),
    "/js/recovery.mjs": (
        Path(phoenix_channels.__file__).parent / "static/recovery.mjs",
        b"text/javascript; charset=utf-8",
    ),
}


class RoomChannel(Channel):
    history = History(size=50, ttl=3600.0)

    async def join(self, topic: str, payload: Any) -> Any:
        nick = str(payload.get("nick") or "").strip()[:32]
        if not nick:
            raise JoinError({"reason": "a nick is required"})
        self.assigns["nick"] = nick
        self.send("after_join")
        return {"room": topic}

    async def handle_info(self, message: Any) -> None:
        if message == "after_join":
            # A rejoin that recovered got what it missed already; anyone else
            # (a first join, or a rejoin that could not recover) gets the last messages.
            if self.recovered is None or not self.recovered.recovered:
                stored = await self.endpoint.history(self.topic)
                await self.push(
                    "history",
                    {
                        "messages": [
                            {**m.payload, "event": m.event, "position": m.ref}
                            for m in stored
                            if m.event == "new_msg"
                        ]
                    },
                )
            await presence.track(self, self.assigns["nick"], {"online_at": int(time.time())})
            await self.push("presence_state", await presence.list(self.topic))
            await self.broadcast("joined", {"nick": self.assigns["nick"]})

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "new_msg":
            body = str(payload.get("body", "")).strip()[:2000]
            if not body:
                return reply("error", {"reason": "empty message"})
            await self.broadcast("new_msg", {"nick": self.assigns["nick"], "body": body})
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
    status, body, kind = (
        (200, found[0].read_bytes(), found[1]) if found else (404, b"not found", b"text/plain")
    )
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", kind), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


endpoint = Endpoint(
    sockets={"/socket": ChatSocket},
    app=pages,
    check_origin=["//127.0.0.1", "//localhost"],
)
presence = Presence(endpoint)
