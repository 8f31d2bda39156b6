"""The floor: a bare uvloop WebSocket server speaking just enough Phoenix V2 JSON.

It is the cheapest server we can write in Python for the benchmark's workload,
so every other server is reported as a ratio against it:

- HTTP upgrade: a minimal manual parse (request line + ``Sec-WebSocket-Key``).
- Client text frames ``[join_ref, ref, topic, event, payload]``:
  ``phx_join`` and ``heartbeat`` get ``{"status":"ok","response":{}}``,
  ``echo`` gets the payload echoed in an ok reply, ``shout`` encodes ONE
  broadcast frame ``[null,null,topic,"shout",payload]`` and writes those same
  bytes to every joined connection (the sender included, as Phoenix does).
- Control frames: ping -> pong, close -> close echo; anything else closes.

Usage: ``python benchmarks/floor_server.py --host 127.0.0.1 --port P``;
prints ``READY`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import signal
import sys
from typing import cast

import orjson
import uvloop

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension

    def apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
        n = len(data)
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
        return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADER = 16384
MAX_FRAME = 1 << 20
REPLY_OK_TAIL = b',"phx_reply",{"status":"ok","response":{}}]'

# topic -> set of transports joined to it
SUBSCRIBERS: dict[str, set[asyncio.Transport]] = {}


def frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked server frame with FIN set."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


def handshake_response(request: bytes) -> bytes | None:
    """The 101 answer to a WebSocket upgrade request, or None if it is not one."""
    lines = request.split(b"\r\n")
    if not lines[0].startswith(b"GET /socket/websocket"):
        return None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            accept = base64.b64encode(hashlib.sha1(value.strip() + GUID).digest())
            return (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
    return None


class FloorProtocol(asyncio.Protocol):
    """One connection: handshake, then unmask client frames and answer them."""

    __slots__ = ("buf", "topics", "transport", "upgraded")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.topics: list[str] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.topics:
            for topic in self.topics:
                subs = SUBSCRIBERS.get(topic)
                if subs is not None:
                    subs.discard(cast(asyncio.Transport, self.transport))
        self.topics = None
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER:
                    self._abort(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
                else:
                    self.buf = buf
                return
            answer = handshake_response(buf[:end])
            if answer is None:
                self._abort(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            assert self.transport is not None
            self.transport.write(answer)
            self.upgraded = True
            buf = buf[end + 4 :]
        pos = 0
        size = len(buf)
        while size - pos >= 6:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if size - pos < 8:
                    break
                length = int.from_bytes(buf[head : head + 2], "big")
                head += 2
            elif length == 127:
                if size - pos < 14:
                    break
                length = int.from_bytes(buf[head : head + 8], "big")
                head += 8
            if not b1 & 0x80 or not b0 & 0x80 or length > MAX_FRAME:
                self._close(1002)  # unmasked, fragmented or oversized
                return
            end = head + 4 + length
            if end > size:
                break
            payload = apply_mask(buf[head + 4 : end], buf[head : head + 4])
            pos = end
            opcode = b0 & 0x0F
            if opcode == 1:
                self._on_text(payload)
            elif opcode == 9:
                assert self.transport is not None
                self.transport.write(frame(10, payload))
            elif opcode == 8:
                self._close(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000)
                return
            elif opcode != 10:
                self._close(1003)
                return
            if self.transport is None:
                return
        self.buf = buf[pos:] if pos < size else b""

    def _on_text(self, payload: bytes) -> None:
        try:
            join_ref, ref, topic, event, body = orjson.loads(payload)[:5]
        except (orjson.JSONDecodeError, ValueError, TypeError):
            self._close(1011)
            return
        transport = self.transport
        assert transport is not None
        if event == "shout":
            out = frame(1, orjson.dumps([None, None, topic, "shout", body]))
            for sub in SUBSCRIBERS.get(topic, ()):
                sub.write(out)
            return
        head = orjson.dumps([join_ref, ref, topic])[:-1]
        if event == "echo":
            reply = orjson.dumps({"status": "ok", "response": body})
            transport.write(frame(1, head + b',"phx_reply",' + reply + b"]"))
            return
        if event == "phx_join":
            SUBSCRIBERS.setdefault(topic, set()).add(transport)
            if self.topics is None:
                self.topics = [topic]
            else:
                self.topics.append(topic)
        transport.write(frame(1, head + REPLY_OK_TAIL))

    def _close(self, code: int) -> None:
        if self.transport is not None:
            self.transport.write(frame(8, code.to_bytes(2, "big")))
            self.transport.close()

    def _abort(self, response: bytes) -> None:
        if self.transport is not None:
            self.transport.write(response)
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FloorProtocol, host, port, backlog=4096)
    stop: asyncio.Future[None] = loop.create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    print("READY", flush=True)
    try:
        await stop
    finally:
        server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4000)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()
