"""Endpoints the trust tests serve in a separate process (so its memory can be measured).

    python -m phoenix_channels serve tests.trust.apps:endpoint        # the fast path
    python -m uvicorn tests.trust.apps:endpoint --ws websockets-sansio  # the ASGI path

``blast`` broadcasts ``count`` messages of ``size`` bytes on the channel's
topic; ``stats`` replies with what the server holds (subscribers, topics,
channels, sockets, tasks, presences), so a test can check that nothing
leaks. ``churn:*`` channels track a presence for every join.
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any

from phoenix_channels import Channel, Endpoint, Socket, reply
from phoenix_channels.presence import Presence


def _rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class BlastChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return {}

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "blast":
            blob = "x" * int(payload["size"])
            for n in range(int(payload["count"])):
                await self.broadcast("blob", {"n": n, "blob": blob})
            return reply("ok", {"sent": payload["count"]})
        if event == "echo":
            return reply("ok", payload)
        if event == "stats":
            gc.collect()
            endpoint = self.endpoint
            watched = payload.get("topics", [])
            presences = 0
            for topic in watched:
                presences += len(await presence.list(topic))
            return reply(
                "ok",
                {
                    "watched_subscribers": sum(endpoint.pubsub.subscribers(t) for t in watched),
                    "presences": presences,
                    "subscribers": endpoint.pubsub.subscribers(payload.get("topic", self.topic)),
                    "topics": endpoint.pubsub.topics(),
                    "channels": sum(1 for o in gc.get_objects() if isinstance(o, Channel)),
                    "sockets": sum(1 for o in gc.get_objects() if isinstance(o, Socket)),
                    "connections": len(endpoint.connections),
                    "tasks": len(asyncio.all_tasks()),
                    "rss_kib": _rss_kib(),
                },
            )
        return None


class ChurnChannel(BlastChannel):
    async def join(self, topic: str, payload: Any) -> Any:
        self.send(("track", payload.get("user", "anonymous")))
        return {}

    async def handle_info(self, message: Any) -> Any:
        if isinstance(message, tuple) and message[0] == "track":
            await presence.track(self, message[1], {"device": id(self)})
        return None


class BlastSocket(Socket):
    channels = {"blast:*": BlastChannel, "churn:*": ChurnChannel}
    max_messages_per_second = None  # the churn test pushes as fast as it can


endpoint = Endpoint(
    sockets={"/socket": BlastSocket},
    check_origin=False,
    max_outbound_buffer=1024 * 1024,  # 1 MiB, so a slow consumer is found quickly
)
presence = Presence(endpoint)
