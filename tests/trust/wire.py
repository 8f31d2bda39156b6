"""A raw WebSocket client for hostile tests: it sends what a well-behaved library would not.

Frames are built by hand (any opcode, reserved bits, bad masks, invalid
UTF-8, lies about lengths) and written straight to the TCP stream; server
frames are parsed back, close frames included, so a test can assert the
exact close code.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket as socketlib
import struct
from typing import Any

import orjson

from phoenix_channels.transports.rfc6455 import apply_mask

WAIT = 5.0  # seconds: the bound of every read, generous for a loaded machine


class Refused(Exception):
    def __init__(self, status: int, head: bytes) -> None:
        super().__init__(f"HTTP {status}: {head[:200]!r}")
        self.status = status


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True
) -> bytes:
    """One client frame: masked with a random key unless ``masked`` is False."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((b0, bit | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, bit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, bit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + apply_mask(payload, key)


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls,
        port: int,
        target: str = "/socket/websocket?vsn=2.0.0",
        headers: dict[str, str] | None = None,
        *,
        receive_buffer: int | None = None,
    ) -> RawClient:
        """Open and upgrade a connection. ``receive_buffer``: a small ``SO_RCVBUF``, so that
        a client that stops reading fills the server's side quickly (slow-consumer tests)."""
        if receive_buffer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        else:
            raw = socketlib.socket()
            raw.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_RCVBUF, receive_buffer)
            raw.setblocking(False)
            await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=raw)
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode(),
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(WAIT):
            head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            writer.close()
            raise Refused(status, head)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def send_json(self, value: Any) -> None:
        self.send(frame(0x1, orjson.dumps(value)))

    async def recv(self) -> tuple[int, bytes]:
        """The next whole frame from the server: (opcode, payload)."""
        async with asyncio.timeout(WAIT):
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            return b0 & 0x0F, await self.reader.readexactly(n)

    async def recv_json(self) -> Any:
        opcode, payload = await self.recv()
        assert opcode == 0x1, (opcode, payload)
        return orjson.loads(payload)

    async def close_code(self) -> int | None:
        """Read until the server's close frame; its code (None: the stream ended without one)."""
        try:
            while True:
                opcode, payload = await self.recv()
                if opcode == 0x8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def closed(self) -> bool:
        """Whether the server ends the TCP stream (after its close frame, if any)."""
        try:
            async with asyncio.timeout(WAIT):
                while await self.reader.read(65536):
                    pass
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()
