"""A Python client driven over stdin/stdout, for the Node suite's JS-vs-Python checks.

``tests/js/pyclient.test.mjs`` starts ``python tests/client/peer.py`` and
writes one JSON command a line; each gets one answer line
``{"id": n, "ok": result}`` (or ``"error"``). Everything the peer receives
is written as it happens: ``{"message": {...}}`` for each channel event and
``{"presence": {"topic": t, "list": [...]}}`` after each presence sync.
Bytes travel as ``{"$bytes": [0, 1, ...]}``.

Commands: ``connect {url, transport, params}``, ``join {topic, params}``
(with a Presence helper on the channel), ``push {topic, event, payload}``,
``leave {topic}``, ``presence_list {topic}``, ``sync {cases}`` (the pure
Presence functions on given inputs, for a differential check against the
JS helper), ``close``.
"""

from __future__ import annotations

import asyncio
import copy
import sys
from pathlib import Path
from typing import Any

import orjson

sys.path[:0] = [str(Path(__file__).resolve().parents[2] / "src")]

from phoenix_channels.client import (  # noqa: E402
    Channel,
    Presence,
    Socket,
    sync_diff,
    sync_state,
)


def to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": list(value)}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return bytes(value["$bytes"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def emit(line: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
    sys.stdout.flush()


def presence_list(presence: Presence) -> list[Any]:
    return sorted(
        presence.list(lambda key, p: {"key": key, "refs": [m["phx_ref"] for m in p["metas"]]}),
        key=lambda entry: entry["key"],
    )


def run_sync_case(case: dict[str, Any]) -> dict[str, Any]:
    """One case of the differential check: the result and every callback, in order."""
    calls: list[Any] = []

    def on_join(key: str, current: Any, new: Any) -> None:
        calls.append(copy.deepcopy(["join", key, current, new]))  # as they were at the call

    def on_leave(key: str, current: Any, left: Any) -> None:
        calls.append(copy.deepcopy(["leave", key, current, left]))

    if case["kind"] == "state":
        state = sync_state(case["state"], case["new"], on_join, on_leave)
    else:
        state = sync_diff(case["state"], case["diff"], on_join, on_leave)
    return {"state": state, "calls": calls}


class Peer:
    def __init__(self) -> None:
        self.socket: Socket | None = None
        self.channels: dict[str, Channel] = {}
        self.presences: dict[str, Presence] = {}

    async def handle(self, command: dict[str, Any]) -> Any:
        cmd = command["cmd"]
        if cmd == "connect":
            self.socket = Socket(
                command["url"],
                transport=command.get("transport", "websocket"),
                params=command.get("params") or {},
                timeout=5.0,
            )
            await self.socket.connect()
            return {"connected": True}
        if cmd == "join":
            assert self.socket is not None
            topic = command["topic"]
            channel = self.socket.channel(topic, command.get("params") or {}, max_queued_events=0)
            presence = Presence(channel)
            presence.on_sync(
                lambda: emit({"presence": {"topic": topic, "list": presence_list(presence)}})
            )

            def forward(event: str) -> Any:
                return lambda payload: emit(
                    {"message": {"topic": topic, "event": event, "payload": to_json(payload)}}
                )

            for event in command.get("listen", []):
                channel.on(event, forward(event))
            self.channels[topic], self.presences[topic] = channel, presence
            return to_json(await channel.join())
        if cmd == "push":
            reply = await self.channels[command["topic"]].push(
                command["event"], from_json(command.get("payload"))
            )
            return {"status": reply.status, "response": to_json(reply.response)}
        if cmd == "presence_list":
            return presence_list(self.presences[command["topic"]])
        if cmd == "leave":
            await self.channels.pop(command["topic"]).leave()
            return {"left": True}
        if cmd == "sync":
            return [run_sync_case(case) for case in command["cases"]]
        if cmd == "close":
            if self.socket is not None:
                await self.socket.close()
            return {"closed": True}
        raise ValueError(f"unknown command {cmd!r}")


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    peer = Peer()
    while line := await reader.readline():
        command = orjson.loads(line)
        try:
            emit({"id": command["id"], "ok": await peer.handle(command)})
        except Exception as exc:  # reported to the Node test, which fails with it
            emit({"id": command["id"], "error": f"{type(exc).__name__}: {exc}"})
        if command["cmd"] == "close":
            break


if __name__ == "__main__":
    asyncio.run(main())
