"""docs/transports.md's example transport, run as written, beside a WebSocket client."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import websockets

from phoenix_channels import Channel, Endpoint, Socket, reply

from .support import Server, load_doc_example


class Room(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return {"via": self.socket.transport.name}

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "shout":
            await self.broadcast("shout", payload)
            return None
        return reply("ok", payload)


class RoomSocket(Socket):
    channels = {"room:*": Room}


async def test_the_line_transport_example(tmp_path: Path) -> None:
    example = load_doc_example("docs/transports.md", "line_transport.py", tmp_path)
    endpoint = Endpoint(sockets={"/socket": RoomSocket}, check_origin=False)
    async with Server(endpoint) as srv:
        tcp = await asyncio.start_server(example.line_server(endpoint, RoomSocket), "127.0.0.1", 0)
        port = tcp.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:

            async def ask(frame: list[Any]) -> Any:
                writer.write(json.dumps(frame).encode() + b"\n")
                return json.loads(await asyncio.wait_for(reader.readline(), 5))

            assert await ask(["1", "1", "room:lobby", "phx_join", {}]) == [
                "1",
                "1",
                "room:lobby",
                "phx_reply",
                {"response": {"via": "lines"}, "status": "ok"},
            ]
            assert (await ask(["1", "2", "room:lobby", "echo", {"a": 1}]))[4]["response"] == {
                "a": 1
            }
            async with websockets.connect(srv.url + "?vsn=2.0.0") as ws:
                await ws.send(json.dumps(["1", "1", "room:lobby", "phx_join", {}]))
                assert json.loads(await ws.recv())[4]["response"] == {"via": "websocket"}
                await ws.send(json.dumps(["1", "2", "room:lobby", "shout", {"hi": "tcp"}]))
                line = json.loads(await asyncio.wait_for(reader.readline(), 5))
                assert line == [None, None, "room:lobby", "shout", {"hi": "tcp"}]
        finally:
            writer.close()
            tcp.close()
            await tcp.wait_closed()
