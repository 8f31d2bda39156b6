"""The application every cluster test node runs (one process per node).

Started as ``python -m phoenix_channels serve tests.cluster.app:endpoint --port P``
(optionally ``--workers N``), configured by the environment:

    PHX_CLUSTER_ENGINE   redis | nats | local
    PHX_CLUSTER_URL      the engine's URL
    PHX_CLUSTER_PREFIX   the channel/subject prefix (unique per test run: no cross-talk)
    PHX_CLUSTER_SHARDS   optional: hash topics onto this many engine channels
    PHX_CLUSTER_METRICS  optional: non-empty serves Prometheus metrics at /metrics
    PHX_CLUSTER_NO_SECRET  1: no secret_key_base (to test that a cluster refuses to start)

Topics ``room:*``. The join reply says which node and process answered
(``{"node": ..., "pid": ...}``). Events:

    shout {..}          broadcast "shout" to the topic (reply ok, or error with the reason)
    shout_from {..}     broadcast_from: every subscriber but this channel
    direct {node, ..}   direct_broadcast "shout" to the node named ``node`` only
    disconnect {id}     endpoint.broadcast(id, "disconnect", {}): closes that socket anywhere
    whoami              reply {"node": ..., "pid": ...}

Connect param ``user_id=X`` gives the socket the id ``user_socket:X``.
"""

from __future__ import annotations

import os
from typing import Any

from phoenix_channels import Broadcast, BroadcastError, Channel, Endpoint, PubSub, Socket, reply


def _pubsub() -> PubSub:
    engine = os.environ.get("PHX_CLUSTER_ENGINE", "local")
    url = os.environ.get("PHX_CLUSTER_URL", "")
    options: dict[str, Any] = {"prefix": os.environ.get("PHX_CLUSTER_PREFIX", "phx-test")}
    if os.environ.get("PHX_CLUSTER_SHARDS"):
        options["shards"] = int(os.environ["PHX_CLUSTER_SHARDS"])
    # Quick retries: the fault tests restart the engine and wait for the nodes to come back.
    options["max_backoff"] = 0.5
    if engine == "redis":
        return PubSub.redis(url, **options)
    if engine == "nats":
        return PubSub.nats(url, **options)
    return PubSub()


def _me() -> dict[str, Any]:
    return {"node": endpoint.pubsub.node_name, "pid": os.getpid()}


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return _me()

    async def handle_in(self, event: str, payload: Any) -> Any:
        try:
            if event == "shout":
                await self.broadcast("shout", {**payload, "via": _me()})
                return reply("ok")
            if event == "shout_from":
                await self.broadcast_from("shout", {**payload, "via": _me()})
                return reply("ok")
            if event == "direct":
                message = Broadcast(self.topic, "shout", {**payload, "via": _me()})
                await endpoint.pubsub.direct_broadcast(payload["node"], self.topic, message)
                return reply("ok")
            if event == "disconnect":
                await endpoint.broadcast(payload["id"], "disconnect", {})
                return reply("ok")
        except BroadcastError as exc:
            return reply("error", {"reason": str(exc)})
        if event == "whoami":
            return reply("ok", _me())
        return reply("error", {"reason": f"unknown event {event}"})


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}

    async def connect(self, params: dict[str, Any], connect_info: Any) -> bool:
        if params.get("user_id"):
            self.assigns["user_id"] = params["user_id"]
        return True

    def id(self) -> str | None:
        user_id = self.assigns.get("user_id")
        return f"user_socket:{user_id}" if user_id else None


# Every node of a cluster shares one secret; PHX_CLUSTER_NO_SECRET=1 leaves it out
# (the start is refused then: tests/test_cli.py).
SECRET = None if os.environ.get("PHX_CLUSTER_NO_SECRET") else "cluster-test-secret-" + "x" * 24

endpoint = Endpoint(
    sockets={"/socket": UserSocket},
    pubsub=_pubsub(),
    check_origin=False,
    drain_timeout=5.0,
    metrics_path="/metrics" if os.environ.get("PHX_CLUSTER_METRICS") else None,
    secret_key_base=SECRET,
)
