"""The benchmark application served by phoenix-channels (``ours`` and ``ours-asgi``).

Same mini protocol as the floor: joins to ``bench:*`` are accepted with ``{}``,
``echo`` replies ok with its payload, ``shout`` broadcasts its payload to every
subscriber of the topic (the sender included).

Fast path: ``python -m phoenix_channels serve benchmarks.bench_app:endpoint``;
ASGI path: ``python -m uvicorn benchmarks.bench_app:endpoint ...``.
"""

from __future__ import annotations

from typing import Any

from phoenix_channels import Channel, Endpoint, History, Socket, reply


class BenchChannel(Channel):
    async def join(self, topic: str, payload: Any) -> None:
        return None  # ok reply with {}

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "echo":
            return reply("ok", payload)
        if event == "shout":
            await self.broadcast("shout", payload)
        return None


class BenchSocket(Socket):
    channels = {"bench:*": BenchChannel}

    async def connect(self, params: Any, connect_info: Any) -> bool:
        return True


class HistoryBenchChannel(BenchChannel):
    """The same channel with a history (``benchmarks/history.py``)."""

    history = History(size=100, ttl=300.0)


class HistoryBenchSocket(BenchSocket):
    channels = {"bench:*": HistoryBenchChannel}


endpoint = Endpoint(sockets={"/socket": BenchSocket}, check_origin=False)
