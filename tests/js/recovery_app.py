"""The application of ``tests/js/recovery.test.mjs``: topics with history.

Topics ``hist:*`` keep the last 20 messages with no age limit; ``short:*``
keep 20 for one second. Events (pushed by a test's publisher client):

    ``publish`` {"from": a, "to": b}   broadcast ``msg`` {"n": i} for i in a..b
    ``kick`` {"user": u, "reset": bool, "from": a, "to": b}
        close the socket of user ``u`` (server side), then, in the same
        handler (so the client surely misses them), optionally reset the
        history store (a new epoch) and publish a..b.

Connect params: ``user_id=X`` gives the socket the id ``user_socket:X``.

The join reply names the node (``{"node": ...}``). For a cluster, set
``PHX_CLUSTER_ENGINE`` (redis | nats), ``PHX_CLUSTER_URL`` and
``PHX_CLUSTER_PREFIX`` as for ``tests/cluster/app.py``.
"""

from __future__ import annotations

import os
from typing import Any

from phoenix_channels import Channel, Endpoint, History, LongPoll, PubSub, Socket, reply


def _pubsub() -> PubSub:
    engine = os.environ.get("PHX_CLUSTER_ENGINE", "local")
    url = os.environ.get("PHX_CLUSTER_URL", "")
    prefix = os.environ.get("PHX_CLUSTER_PREFIX", "phx-test")
    if engine == "redis":
        return PubSub.redis(url, prefix=prefix, max_backoff=0.5)
    if engine == "nats":
        return PubSub.nats(url, prefix=prefix, max_backoff=0.5)
    return PubSub()


class HistChannel(Channel):
    history = History(size=20, ttl=None)

    async def join(self, topic: str, payload: Any) -> Any:
        return {
            "asked": None if self.recovery is None else str(self.recovery),
            "node": endpoint.pubsub.node_name,
        }

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "publish":
            await self._publish(payload)
            return reply("ok")
        if event == "kick":
            await endpoint.broadcast(f"user_socket:{payload['user']}", "disconnect", {})
            if payload.get("reset"):
                store = endpoint.pubsub.history_store
                assert store is not None
                await store.reset()
            await self._publish(payload)
            return reply("ok")
        return reply("error", {"reason": "unknown event", "event": event})

    async def _publish(self, payload: dict[str, Any]) -> None:
        for n in range(int(payload.get("from", 1)), int(payload.get("to", 0)) + 1):
            await endpoint.broadcast(self.topic, "msg", {"n": n})


class ShortChannel(HistChannel):
    history = History(size=20, ttl=1.0)


class UserSocket(Socket):
    channels = {"hist:*": HistChannel, "short:*": ShortChannel}
    longpoll = LongPoll(window=2.0)

    async def connect(self, params: dict[str, Any], connect_info: Any) -> bool:
        user_id = params.get("user_id")
        if user_id:
            self.assigns["user_id"] = user_id
        return True

    def id(self) -> str | None:
        user_id = self.assigns.get("user_id")
        return f"user_socket:{user_id}" if user_id else None


endpoint = Endpoint(
    sockets={"/socket": UserSocket},
    check_origin=False,
    pubsub=_pubsub(),
    secret_key_base="recovery-test-secret-" + "r" * 24,  # one per cluster
)
