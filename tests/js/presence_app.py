"""The application ``tests/js/presence.test.mjs`` runs: channels with Presence.

Started by the test as::

    python -m phoenix_channels serve tests.js.presence_app:endpoint --port P

and configured by the environment:

    PHX_PRESENCE_ENGINE            local (default) | redis
    PHX_PRESENCE_URL               the Redis URL
    PHX_PRESENCE_PREFIX            the Redis channel prefix (unique per test run)
    PHX_PRESENCE_NODE              this node's name (unique in the cluster)
    PHX_PRESENCE_BROADCAST_PERIOD  tracker heartbeat, seconds (default 1.5)
    PHX_PRESENCE_DOWN_PERIOD       silence before a node is down, seconds (default 30)
    PHX_PRESENCE_DIFF_INTERVAL     batch presence_diff over this many seconds (default 0: none)

Topics ``room:*`` (``room:count-*`` are in count mode: ``presence_count``
instead of ``presence_state`` and diffs); join params ``{"user": ..., "device": ...}``. After the
join the channel tracks ``user`` with ``{"device", "node"}`` and pushes
``presence_state``, as Phoenix apps do. Events:

    list                 reply {"presences": presence.list(topic)}: the server's truth
    status {status}      update this channel's meta with the status; reply {"ref": new phx_ref}
    untrack              untrack this channel's presence (the channel stays joined)
"""

from __future__ import annotations

import os
from typing import Any

from phoenix_channels import Channel, Endpoint, PubSub, Socket, reply
from phoenix_channels.presence import Presence

NODE = os.environ.get("PHX_PRESENCE_NODE", f"node-{os.getpid()}")


def _pubsub() -> PubSub:
    if os.environ.get("PHX_PRESENCE_ENGINE", "local") == "redis":
        return PubSub.redis(
            os.environ.get("PHX_PRESENCE_URL", "redis://127.0.0.1:6379/0"),
            node_name=NODE,
            prefix=os.environ.get("PHX_PRESENCE_PREFIX", "phx-presence-test"),
            max_backoff=0.5,
        )
    return PubSub()


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        params = payload if isinstance(payload, dict) else {}
        self.user = str(params.get("user", "anonymous"))
        self.send(("after_join", params.get("device", "web")))
        return {"node": NODE}

    async def handle_info(self, message: Any) -> None:
        _, device = message
        await presence.track(self, self.user, {"device": device, "node": NODE})
        await presence.push_state(self)  # presence_state (presence_count in count mode)

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "list":
            return reply("ok", {"presences": await presence.list(self.topic), "node": NODE})
        if event == "count":
            return reply("ok", {"count": await presence.count(self.topic)})
        if event == "status":
            status = payload["status"]
            ref = await presence.update(self, self.user, lambda meta: {**meta, "status": status})
            return reply("ok", {"ref": ref})
        if event == "untrack":
            await presence.untrack(self, self.user)
            return reply("ok")
        return reply("error", {"reason": f"unknown event {event}"})


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}


class RoomPresence(Presence):
    def counts_only(self, topic: str) -> bool:
        return topic.startswith("room:count-")


endpoint = Endpoint(
    sockets={"/socket": UserSocket}, pubsub=_pubsub(), secret_key_base="presence-test-" + "s" * 30
)
presence = RoomPresence(
    endpoint,
    broadcast_period=float(os.environ.get("PHX_PRESENCE_BROADCAST_PERIOD", "1.5")),
    down_period=(
        float(os.environ["PHX_PRESENCE_DOWN_PERIOD"])
        if "PHX_PRESENCE_DOWN_PERIOD" in os.environ
        else None
    ),
    diff_interval=float(os.environ.get("PHX_PRESENCE_DIFF_INTERVAL", "0")),
)
