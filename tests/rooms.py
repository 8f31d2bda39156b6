"""The app the in-process rule tests share (test_channel.py, test_socket.py, test_endpoint.py).

A room channel that does a bit of everything, its socket, and helpers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from phoenix_channels import (
    Broadcast,
    Channel,
    Endpoint,
    JoinError,
    Socket,
    reply,
    stop,
)

from .support import connect

EVENTS: list[tuple[str, Any]] = []


class RoomChannel(Channel):
    intercept = ["censored"]

    async def join(self, topic: str, payload: Any) -> Any:
        if topic == "room:secret":
            raise JoinError({"reason": "unauthorized"})
        if topic == "room:crash":
            raise RuntimeError("join blew up")
        if topic == "room:push-in-join":
            await self.push("early", {})
        if topic == "room:slow":
            await asyncio.sleep(0.05)
        if payload.get("after_join"):
            self.send("after_join")
        self.socket.assigns["nick"] = payload.get("nick")
        return {"welcome": topic} if payload.get("welcome") else None

    async def handle_in(self, event: str, payload: Any) -> Any:
        match event:
            case "echo":
                return reply("ok", payload)
            case "error_reply":
                return reply("error", payload)
            case "noreply":
                return None
            case "shout":
                await self.broadcast("shout", payload)
            case "shout_from":
                await self.broadcast_from("shout", payload)
            case "censored":
                await self.broadcast("censored", payload)
            case "stop":
                return stop(payload.get("reason", "normal"))
            case "stop_reply":
                return stop("normal", reply("ok", {"bye": True}))
            case "later":
                ref = self.socket_ref()
                asyncio.get_running_loop().call_later(
                    0.01, lambda: asyncio.ensure_future(ref.reply("ok", {"late": True}))
                )
            case "sleep":
                await asyncio.sleep(payload["seconds"])
                return reply("ok", {"slept": True})
            case "garbage":
                return 42
            case "subscribe":
                self.subscribe(payload["topic"])
            case "timer":
                self.send_after(0.01, {"timer": True})
            case "assigns":
                return reply(
                    "ok", {"channel": dict(self.assigns), "socket": dict(self.socket.assigns)}
                )
        return None

    async def handle_out(self, event: str, payload: Any) -> None:
        await self.push(event, {"censored": True, "for": self.join_ref})

    async def handle_info(self, message: Any) -> None:
        if message == "after_join":
            await self.push("after_join", {"nick": self.socket.assigns["nick"]})
        elif isinstance(message, Broadcast):
            await self.push("relayed", {"topic": message.topic, "event": message.event})
        else:
            await self.push("info", message)

    async def terminate(self, reason: Any) -> None:
        EVENTS.append((self.topic, reason if isinstance(reason, str) else type(reason).__name__))


class UserSocket(Socket):
    channels = {"room:*": RoomChannel, "static:*": (RoomChannel, {"role": "admin"})}
    max_channels = 3

    async def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> bool:
        if params.get("user"):
            self.assigns["user"] = params["user"]
        return params.get("token") != "reject"

    def id(self) -> str | None:
        user = self.assigns.get("user")
        return f"user_socket:{user}" if user else None


def make_endpoint() -> Endpoint:
    """A fresh endpoint for one test (and a cleared EVENTS log)."""
    EVENTS.clear()
    return Endpoint(sockets={"/socket": UserSocket}, check_origin=False)


async def joined(
    endpoint: Endpoint, topic: str = "room:1", query: str = "vsn=2.0.0", **payload: Any
):  # type: ignore[no-untyped-def]
    client = await connect(endpoint, UserSocket, query)
    client.send("1", "1", topic, "phx_join", payload)
    frames = await client.frames(1)
    assert frames[0][4]["status"] == "ok", frames
    return client
