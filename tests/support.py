"""Test helpers: an in-memory transport that records what a socket sends."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import orjson

from phoenix_channels import Endpoint, Socket
from phoenix_channels.endpoint import Accepted
from phoenix_channels.protocol import V2, Serializer
from phoenix_channels.transports.base import FrameEncoder


def _wrap(data: bytes, binary: bool) -> tuple[bytes, bool]:
    return data, binary


_ENCODERS: dict[str, FrameEncoder] = {}


def memory_encoder(serializer: Serializer) -> FrameEncoder:
    if serializer.vsn not in _ENCODERS:
        _ENCODERS[serializer.vsn] = FrameEncoder("memory", serializer, _wrap)
    return _ENCODERS[serializer.vsn]


class MemoryTransport:
    """Records frames; ``frames()`` decodes the JSON ones for assertions."""

    name = "memory"

    def __init__(self, serializer: Serializer = V2) -> None:
        self.encoder = memory_encoder(serializer)
        self.sent: list[tuple[bytes, bool]] = []
        self.closed: tuple[int, str] | None = None
        self.paused = False
        self._arrived = asyncio.Event()

    def send(self, item: tuple[bytes, bool]) -> None:
        self.sent.append(item)
        self._arrived.set()

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self._arrived.set()

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def frames(self) -> list[Any]:
        return [data if binary else orjson.loads(data) for data, binary in self.sent]

    async def wait_for(self, count: int, timeout: float = 2.0) -> list[Any]:
        """Wait until at least ``count`` frames were sent; return all of them decoded."""
        async with asyncio.timeout(timeout):
            while len(self.sent) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.frames()

    async def wait_closed(self, timeout: float = 2.0) -> tuple[int, str]:
        async with asyncio.timeout(timeout):
            while self.closed is None:
                self._arrived.clear()
                await self._arrived.wait()
        return self.closed


class Client:
    """A socket on a memory transport, driven by JSON arrays like a V2 client."""

    def __init__(self, socket: Socket, transport: MemoryTransport) -> None:
        self.socket = socket
        self.transport = transport

    def send(self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any) -> None:
        self.socket.receive(orjson.dumps([join_ref, ref, topic, event, payload]), False)

    def send_raw(self, data: bytes, binary: bool = False) -> None:
        self.socket.receive(data, binary)

    async def frames(self, count: int, timeout: float = 2.0) -> list[Any]:
        return await self.transport.wait_for(count, timeout)

    async def settle(self) -> list[Any]:
        """Let queued channel work run, then return every frame so far."""
        for _ in range(20):
            await asyncio.sleep(0)
        return self.transport.frames()


async def connect(
    endpoint: Endpoint,
    socket_cls: type[Socket],
    query: str = "vsn=2.0.0",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Client:
    """Run the handshake and attach a memory transport, as a real transport would."""
    await endpoint.start()
    outcome = await endpoint.handshake(
        socket_cls,
        method="GET",
        path="/socket/websocket",
        query=query,
        headers=headers or [],
        scheme="ws",
        peer=("127.0.0.1", 5555),
        websocket=False,
    )
    assert isinstance(outcome, Accepted), outcome
    transport = MemoryTransport(outcome.socket.serializer)
    outcome.socket.attach(transport)
    return Client(outcome.socket, transport)


class Server:
    """A real uvicorn server on a loopback port, in the test's own event loop."""

    def __init__(self, endpoint: Any, fast: bool = True) -> None:
        import uvicorn

        from phoenix_channels.transports.websocket import front_protocol_for, protocol_for

        self.endpoint = endpoint
        self.config = uvicorn.Config(
            endpoint,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            ws=protocol_for(endpoint) if fast else "websockets-sansio",
            http=front_protocol_for(endpoint) if fast else "httptools",
        )
        from phoenix_channels.cli import draining_server

        self.server = (
            draining_server(self.config, endpoint)
            if isinstance(endpoint, Endpoint)
            else uvicorn.Server(self.config)
        )
        self.port = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket/websocket"

    async def __aenter__(self) -> Server:
        self._task = asyncio.get_running_loop().create_task(self.server.serve())
        async with asyncio.timeout(5):
            while not self.server.started:
                await asyncio.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


DOCS_ROOT = Path(__file__).resolve().parent.parent


def load_doc_example(doc: str, filename: str, tmp_path: Path) -> Any:
    """Import the ```python block of ``doc`` that starts with ``# <filename>``, as written.

    Docs name their runnable examples in a first comment line; the tests run
    them so the docs cannot drift from the code.
    """
    text = (DOCS_ROOT / doc).read_text()
    found = re.search(r"```python\n(# " + re.escape(filename) + r"[^\n]*\n.*?)```", text, re.S)
    assert found, f"{doc} lost its {filename} example"
    path = tmp_path / filename
    path.write_text(found.group(1))
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
