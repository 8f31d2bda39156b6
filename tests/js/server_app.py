"""The application the JS wire suite (``tests/js/*.test.mjs``) runs.

Started by ``tests/js/helpers.mjs`` as::

    python -m phoenix_channels serve tests.js.server_app:endpoint --host 127.0.0.1 --port P

Every event below exists for one or more tests; the test files name the event
they exercise. Topics are ``room:<anything>``; ``room:private`` refuses joins.

Join params (all optional):
    ``deny``        refuse the join with ``{"reason": "unauthorized"}``
    ``crash_join``  raise inside ``join`` (client gets ``{"reason": "join crashed"}``)
    ``after_join``  push ``welcome`` from ``handle_info`` right after the join

Connect params: ``token=reject`` refuses the connection (HTTP 403; over long
poll a ``{"status": 403}`` body); ``user_id=X`` gives the socket the id
``user_socket:X``.

The socket serves WebSocket at ``/socket/websocket`` and HTTP long polling at
``/socket/longpoll`` (the suite picks one with ``PHX_TRANSPORT``). The poll
window is 2 s instead of Phoenix's 10 s so that sessions the tests abandon
(a long-poll client never says goodbye) end after a few seconds; everything
else is the default.
"""

from __future__ import annotations

import asyncio
from typing import Any

from phoenix_channels import Channel, Endpoint, JoinError, LongPoll, Socket, reply, stop

# Tasks started for asynchronous replies; kept so they are not garbage collected.
_background: set[asyncio.Task[Any]] = set()


def _spawn(coro: Any) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _censor(text: Any) -> Any:
    return text.replace("darn", "****") if isinstance(text, str) else text


class RoomChannel(Channel):
    intercept = ["censored"]

    async def join(self, topic: str, payload: Any) -> Any:
        params = payload if isinstance(payload, dict) else {}
        if topic == "room:private" or params.get("deny"):
            raise JoinError({"reason": "unauthorized"})
        if params.get("crash_join"):
            raise RuntimeError("join crashed on purpose (test)")
        self.pending_ref: Any = None
        if params.get("after_join"):
            self.send(("after_join", params))
        return {"topic": topic, "user_id": self.assigns.get("user_id"), "params": params}

    async def handle_in(self, event: str, payload: Any) -> Any:
        # -- replies -------------------------------------------------------
        if event == "echo":  # JSON payload -> ok reply with it; bytes -> binary reply
            return reply("ok", payload)
        if event == "error_reply":
            return reply("error", payload)
        if event == "ok_bare":
            return reply("ok")
        if event == "noreply":
            return None
        if event == "inspect":  # what arrived, as JSON (binary pushes over long poll)
            if isinstance(payload, bytes):
                return reply("ok", {"binary": True, "bytes": list(payload)})
            return reply("ok", {"binary": False, "payload": payload})

        # -- broadcasts ----------------------------------------------------
        if event == "shout":  # to every subscriber, the sender included (JSON or bytes)
            await self.broadcast("shout", payload)
            return reply("ok")
        if event == "shout_from":  # to every subscriber except the sender
            await self.broadcast_from("shout", payload)
            return reply("ok")
        if event == "say_censored":  # intercepted: goes through handle_out per subscriber
            await self.broadcast("censored", payload)
            return reply("ok")
        if event == "announce":  # Endpoint.broadcast from outside any channel API
            await endpoint.broadcast(self.topic, "announcement", payload)
            return reply("ok")

        # -- server pushes -------------------------------------------------
        if event == "push_binary":  # server -> client binary push (kind 0)
            await self.push("bin_push", bytes(range(256)) * int(payload.get("repeat", 1)))
            return reply("ok")
        if event == "later":  # send_after -> handle_info -> push
            self.send_after(float(payload.get("seconds", 0.05)), ("later", payload))
            return reply("ok", {"scheduled": True})

        # -- asynchronous replies ------------------------------------------
        if event == "async_hold":  # keep the ref, reply only when "async_release" comes
            self.pending_ref = self.socket_ref()
            return None
        if event == "async_release":
            ref = self.pending_ref
            self.pending_ref = None
            if ref is None:
                return reply("error", {"reason": "nothing pending"})

            async def answer() -> None:
                await ref.reply("ok", {"async": True, "released_with": payload})

            _spawn(answer())
            return reply("ok", {"released": True})

        # -- ending the channel --------------------------------------------
        if event == "crash":
            raise RuntimeError("channel crashed on purpose (test)")
        if event == "stop_normal":
            return stop("normal")
        if event == "stop_with_reply":
            return stop("normal", reply("ok", {"bye": True}))
        if event == "stop_boom":
            return stop("boom")
        if event == "disconnect_me":
            socket_id = self.socket.id()
            if socket_id is None:
                return reply("error", {"reason": "anonymous socket"})
            await endpoint.broadcast(socket_id, "disconnect", {})
            return None

        return reply("error", {"reason": "unknown event", "event": event})

    async def handle_out(self, event: str, payload: Any) -> None:
        if event == "censored":
            modified = dict(payload)
            modified["body"] = _censor(modified.get("body"))
            modified["seen_by"] = self.assigns.get("user_id")
            await self.push(event, modified)

    async def handle_info(self, message: Any) -> None:
        kind, data = message
        if kind == "after_join":
            await self.push(
                "welcome", {"topic": self.topic, "user_id": self.assigns.get("user_id")}
            )
        elif kind == "later":
            await self.push("later", {"later": True, "payload": data})

    async def terminate(self, reason: Any) -> None:
        return None


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}
    longpoll = LongPoll(window=2.0)

    async def connect(self, params: dict[str, Any], connect_info: Any) -> bool:
        if params.get("token") == "reject":
            return False
        user_id = params.get("user_id")
        if user_id:
            self.assigns["user_id"] = user_id
        return True

    def id(self) -> str | None:
        user_id = self.assigns.get("user_id")
        return f"user_socket:{user_id}" if user_id else None


endpoint = Endpoint(sockets={"/socket": UserSocket}, check_origin=False)
