"""The server the client tests talk to, in process or as ``phoenix-channels serve``.

Served in a subprocess (``tests.client.app:endpoint``) for the restart and
pause tests, so everything the tests check must be visible on the wire: the
join reply says what the server saw (``params``, ``serial``: a counter of
joins in this server process, ``pid``).

Topics ``room:*``. Join params: ``deny`` refuses, ``slow`` (seconds) sleeps
in ``join``, ``after_join`` pushes ``welcome``, ``presence`` (a key) tracks
the channel with the server's Presence (``presence_state`` pushed after the
join, ``presence_diff`` broadcast as people come and go), for the client's
Presence helper.

Events: ``echo`` (ok reply with the payload, bytes included), ``error_reply``,
``noreply``, ``shout`` (broadcast, JSON or bytes), ``push_binary``, ``crash``
(raise: phx_error), ``stop_normal`` (phx_close), ``disconnect_me``
(socket id), ``slow_echo`` (sleeps ``seconds`` then replies).

Connect params: ``token=reject`` refuses (403); ``user_id`` names the socket.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

from phoenix_channels import Channel, Endpoint, JoinError, Socket, reply, stop
from phoenix_channels.presence import Presence
from phoenix_channels.transports.longpoll import LongPoll

_SERIAL = itertools.count(1)
SEEN: list[tuple[str, str, Any]] = []  # (topic, event, payload) as received, for in-process tests


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        params = payload if isinstance(payload, dict) else {}
        SEEN.append((topic, "phx_join", params))
        if params.get("deny"):
            raise JoinError({"reason": "denied"})
        if params.get("slow"):
            await asyncio.sleep(float(params["slow"]))
        if params.get("after_join") or params.get("presence"):
            self.send(("after_join", params))
        return {
            "params": params,
            "serial": next(_SERIAL),
            "pid": os.getpid(),
            "user_id": self.socket.assigns.get("user_id"),
            "auth_token": self.socket.assigns.get("auth_token"),
        }

    async def handle_info(self, message: Any) -> None:
        kind, params = message
        if kind == "after_join" and params.get("after_join"):
            await self.push("welcome", {"topic": self.topic})
        if kind == "after_join" and params.get("presence"):
            key = str(params["presence"])
            await presence.track(self, key, {"name": key})
            await self.push("presence_state", await presence.list(self.topic))

    async def handle_in(self, event: str, payload: Any) -> Any:
        SEEN.append((self.topic, event, payload))
        if event == "echo":
            return reply("ok", payload)
        if event == "error_reply":
            return reply("error", payload)
        if event == "noreply":
            return None
        if event == "shout":
            await self.broadcast("shout", payload)
            return reply("ok")
        if event == "push_binary":
            await self.push("binary", bytes(range(256)))
            return reply("ok")
        if event == "slow_echo":
            await asyncio.sleep(float(payload.get("seconds", 0.1)))
            return reply("ok", payload)
        if event == "crash":
            raise RuntimeError("crash on purpose (client test)")
        if event == "stop_normal":
            return stop("normal")
        if event == "disconnect_me":
            socket_id = f"user:{self.socket.assigns['user_id']}"
            await self.endpoint.broadcast(socket_id, "disconnect", {})
            return None
        return reply("error", {"reason": f"unknown event {event}"})


class ClientTestSocket(Socket):
    channels = {"room:*": RoomChannel}
    auth_token = True
    longpoll = LongPoll(window=1.0)

    async def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> bool:
        if params.get("token") == "reject":
            return False
        self.assigns["user_id"] = params.get("user_id")
        token = connect_info.get("auth_token")
        self.assigns["auth_token"] = token.decode() if isinstance(token, bytes) else token
        return True

    def id(self) -> str | None:
        user_id = self.assigns.get("user_id")
        return f"user:{user_id}" if user_id else None


endpoint = Endpoint(sockets={"/socket": ClientTestSocket}, check_origin=False)
presence = Presence(endpoint)
