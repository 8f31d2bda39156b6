"""The load tool: many lean Phoenix V2 WebSocket clients in one uvloop process.

Each connection is a raw ``asyncio.Protocol`` (no WebSocket library, no
phoenix_channels client): it writes one HTTP upgrade request, masked client
frames, answers pings with pongs and, on the receive side, only splits the
byte stream into frames and counts text frames. JSON is decoded only for
join replies, echo replies and the first broadcast frame of a phase.

Client sockets are bound to source addresses 127.0.0.2, 127.0.0.3, ...
(``--per-address`` connections each, ``IP_BIND_ADDRESS_NO_PORT`` so the port is
chosen per 4-tuple) so that ephemeral ports do not run out; only loopback.

The harness (``run.py``) drives it over stdin/stdout, one JSON object per
line. Commands (``{"cmd": NAME, ...}``), each answered with
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``:

- ``warmup``: connect, join, echo once, close one connection.
- ``control``: open the control connection (joined; sends shouts and echoes).
- ``connect`` ``n``: open and join ``n`` connections, ``concurrency`` in flight.
- ``heartbeat``: every connection sends a heartbeat; wait for all replies.
- ``broadcast`` ``count`` ``reset``: the control connection sends ``count``
  shouts one at a time; after each, wait until every joined connection
  (control included) has its copy.
- ``broadcast_check``: per-connection counts and the first frame's content.
- ``latency`` ``count`` ``conns``: sequential echo pushes round-robin over
  ``conns`` connections; returns percentiles in microseconds.
- ``arm``: count and time-stamp every broadcast frame from now on (used by
  ``million.py``, whose broadcasts come from another node); ``collect``
  ``within`` ``settle``: wait until every connection has one, wait
  ``settle`` seconds more, and return the sorted receive times
  (``time.time_ns()``) and how many connections got other than one.
- ``status``: connections held and closed; ``reconnect``: open a new
  connection (and join) for every closed one.
- ``quit``: close everything and exit.

The process exits on its own after ``--max-seconds`` or when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import hashlib
import os
import resource
import socket
import sys
import time
from typing import Any, cast

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
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
TOPIC = "bench:lobby"
JOIN_REF = "1"


class BenchError(Exception):
    """A phase failed: a connection broke, a reply was wrong, or time ran out."""


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (FIN set) masked with a fresh random key."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    return head + mask + apply_mask(payload, mask)


class Tracker:
    """Counts text frames across all connections while a phase is active."""

    __slots__ = ("active", "broadcast", "count", "stamps", "target", "waiter")

    def __init__(self) -> None:
        self.active = False
        self.broadcast = False  # also count per connection (broadcast phase)
        self.count = 0
        self.target = 0
        self.waiter: asyncio.Future[None] | None = None
        self.stamps: list[int] | None = None  # receive times of broadcast frames (arm/collect)

    def arm(self, target: int) -> asyncio.Future[None]:
        """A future that resolves once ``count`` reaches ``target``."""
        self.target = target
        self.waiter = asyncio.get_running_loop().create_future()
        if self.count >= target:
            self.waiter.set_result(None)
        return self.waiter

    def start(self, broadcast: bool = False) -> None:
        self.active = True
        self.broadcast = broadcast
        self.count = 0
        self.target = 0
        self.waiter = None

    def stop(self) -> None:
        self.active = False
        self.waiter = None
        self.stamps = None


TRACK = Tracker()


class Client(asyncio.Protocol):
    """One lean WebSocket client connection."""

    __slots__ = ("broadcasts", "buf", "closed", "transport", "upgraded", "waiter")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.closed = False
        self.broadcasts = 0  # text frames received during broadcast phases
        self.waiter: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(f"connection lost ({exc or 'closed by server'})")

    def _fail(self, reason: str) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_exception(BenchError(reason))
        t = TRACK
        if t.active and t.waiter is not None and not t.waiter.done():
            t.waiter.set_exception(BenchError(f"a connection failed: {reason}"))

    def expect(self) -> asyncio.Future[bytes]:
        """A future for the next event: the 101 response head, then text frames."""
        w = asyncio.get_running_loop().create_future()
        if self.closed:
            w.set_exception(BenchError("connection already closed"))
        self.waiter = w
        return w

    def send_text(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(masked_frame(1, payload))

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            head = data[:end]
            if not head.startswith(b"HTTP/1.1 101"):
                self._fail("upgrade refused: " + head.split(b"\r\n", 1)[0].decode("latin-1"))
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded = True
            w = self.waiter
            if w is not None:
                self.waiter = None
                w.set_result(head)
            data = data[end + 4 :]
        pos = 0
        size = len(data)
        while size - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(data[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(data[start : start + 8], "big")
                start += 8
            end = start + length
            if end > size:
                break
            pos = end
            opcode = b0 & 0x0F
            if opcode == 1:
                t = TRACK
                if t.stamps is not None:
                    # Only broadcasts ([null,null,...]) count: not heartbeat replies.
                    if data.startswith(b"[null,null,", start):
                        t.stamps.append(time.time_ns())
                        self.broadcasts += 1
                        t.count += 1
                        if t.count >= t.target and t.waiter is not None and not t.waiter.done():
                            t.waiter.set_result(None)
                elif t.active:
                    t.count += 1
                    if t.broadcast:
                        self.broadcasts += 1
                    if t.count >= t.target and t.waiter is not None and not t.waiter.done():
                        t.waiter.set_result(None)
                w = self.waiter
                if w is not None:
                    self.waiter = None
                    if not w.done():
                        w.set_result(data[start:end])
            elif opcode == 9:
                assert self.transport is not None
                self.transport.write(masked_frame(10, data[start:end]))
            elif opcode == 8:
                self.closed = True
                assert self.transport is not None
                self.transport.close()
                return
        if pos < size:
            self.buf = data[pos:]

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.write(masked_frame(8, (1000).to_bytes(2, "big")))
            self.transport.close()


async def wait(fut: asyncio.Future[Any], timeout: float, what: str) -> Any:
    try:
        return await asyncio.wait_for(fut, timeout)
    except TimeoutError:
        raise BenchError(f"timed out after {timeout:g} s waiting for {what}") from None


class LoadGen:
    """All client connections of this process and the phases run over them."""

    def __init__(self, host: str, port: int, per_address: int, first_address: int) -> None:
        self.host = host
        self.port = port
        self.per_address = per_address
        self.first_address = first_address
        self.opened = 0  # connections ever opened, picks the source address
        self.clients: list[Client] = []
        self.control: Client | None = None
        self.first_broadcast: bytes | None = None
        self.broadcasts = 0
        self.payload = b""

    def source_address(self) -> str:
        index = self.first_address + self.opened // self.per_address
        if index >= (1 << 24) - 1:
            raise BenchError("out of source addresses in 127.0.0.0/8")
        self.opened += 1
        if index <= 254:
            return f"127.0.0.{index}"
        return f"127.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"

    async def open(self, timeout: float = 10.0) -> Client:
        """Connect, upgrade and join TOPIC; returns the joined client."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.source_address(), 0))
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, (self.host, self.port)), timeout)
        except BaseException:
            sock.close()
            raise
        client = Client()
        transport, _ = await loop.create_connection(lambda: client, sock=sock)
        client.transport = transport
        key = base64.b64encode(os.urandom(16))
        upgraded = client.expect()
        transport.write(
            b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: "
            + f"{self.host}:{self.port}".encode()
            + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
            + key
            + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        try:
            head = await wait(upgraded, timeout, "the 101 response")
            if self.opened == 1:  # check the accept key once
                accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
                if accept not in head:
                    raise BenchError("wrong Sec-WebSocket-Accept in: " + head.decode("latin-1"))
            replied = client.expect()
            client.send_text(orjson.dumps([JOIN_REF, JOIN_REF, TOPIC, "phx_join", {}]))
            reply = orjson.loads(await wait(replied, timeout, "the join reply"))
            if reply[:4] != [JOIN_REF, JOIN_REF, TOPIC, "phx_reply"] or reply[4]["status"] != "ok":
                raise BenchError(f"unexpected join reply {reply!r}")
        except BaseException:
            client.close()
            raise
        return client

    async def cmd_warmup(self) -> dict[str, Any]:
        client = await self.open()
        await self._echo(client, "2", {"warm": "up"})
        client.close()
        return {}

    async def cmd_control(self) -> dict[str, Any]:
        self.control = await self.open()
        return {}

    async def cmd_connect(self, n: int, concurrency: int = 200) -> dict[str, Any]:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if len(self.clients) + n + 32 > soft:
            raise BenchError(
                f"{len(self.clients) + n} connections need more than this process's "
                f"{soft} open files: split the load over several processes"
            )
        todo = iter(range(n))
        opened: list[Client] = []

        async def worker() -> None:
            for _ in todo:
                opened.append(await self.open())

        t0 = time.perf_counter()
        tasks = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, n))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            self.clients.extend(opened)
            gc.freeze()  # long-lived clients out of the collector's way (less client jitter)
        return {"seconds": time.perf_counter() - t0, "clients": len(self.clients)}

    def everyone(self) -> list[Client]:
        """All joined connections (the control connection last); fails if any closed."""
        clients = self.clients + ([self.control] if self.control is not None else [])
        closed = sum(c.closed for c in clients)
        if closed:
            raise BenchError(f"{closed} of {len(clients)} connections were closed by the server")
        return clients

    async def cmd_heartbeat(self, timeout: float = 60.0) -> dict[str, Any]:
        clients = self.everyone()
        TRACK.start()
        try:
            done = TRACK.arm(len(clients))
            for i, client in enumerate(clients):
                client.send_text(orjson.dumps([None, str(i), "phoenix", "heartbeat", {}]))
            t0 = time.perf_counter()
            await wait(done, timeout, "heartbeat replies")
            return {"seconds": time.perf_counter() - t0}
        finally:
            TRACK.stop()

    async def cmd_broadcast(
        self, count: int, reset: bool = False, size: int = 100, timeout: float = 60.0
    ) -> dict[str, Any]:
        control = self.control
        if control is None:
            raise BenchError("no control connection")
        clients = self.everyone()
        if reset:
            for client in clients:
                client.broadcasts = 0
            self.broadcasts = 0
            self.first_broadcast = None
            # {"body":"xxx..."} is exactly `size` bytes of JSON
            self.payload = orjson.dumps({"body": "x" * max(size - 11, 0)})
        probe = self.clients[0] if self.clients else control
        first: asyncio.Future[bytes] | None = None
        TRACK.start(broadcast=True)
        t0 = time.perf_counter()
        try:
            for _ in range(count):
                TRACK.count = 0
                done = TRACK.arm(len(clients))
                first = probe.expect() if self.first_broadcast is None else None
                self.broadcasts += 1
                control.send_text(
                    b'["1","'
                    + str(self.broadcasts + 1).encode()
                    + b'","bench:lobby","shout",'
                    + self.payload
                    + b"]"
                )
                await wait(done, timeout, f"copies of broadcast {self.broadcasts}")
                if first is not None:
                    self.first_broadcast = await first
        finally:
            TRACK.stop()
        return {"seconds": time.perf_counter() - t0, "deliveries": count * len(clients)}

    async def cmd_broadcast_check(self) -> dict[str, Any]:
        clients = self.everyone()
        wrong = [c.broadcasts for c in clients if c.broadcasts != self.broadcasts]
        expected = [None, None, TOPIC, "shout", orjson.loads(self.payload)]
        got = orjson.loads(self.first_broadcast) if self.first_broadcast else None
        if got != expected:
            raise BenchError(f"first broadcast frame was {got!r}, expected {expected!r}")
        if wrong:
            raise BenchError(
                f"{len(wrong)} of {len(clients)} connections got a frame count other than "
                f"{self.broadcasts} (e.g. {wrong[:5]})"
            )
        return {"connections": len(clients), "broadcasts": self.broadcasts}

    async def _echo(self, client: Client, ref: str, payload: Any, timeout: float = 10.0) -> int:
        """One echo push; returns the round trip in nanoseconds."""
        replied = client.expect()
        frame = orjson.dumps([JOIN_REF, ref, TOPIC, "echo", payload])
        t0 = time.perf_counter_ns()
        client.send_text(frame)
        raw = await wait(replied, timeout, "an echo reply")
        elapsed = time.perf_counter_ns() - t0
        reply = orjson.loads(raw)
        if reply != [JOIN_REF, ref, TOPIC, "phx_reply", {"status": "ok", "response": payload}]:
            raise BenchError(f"unexpected echo reply {reply!r}")
        return elapsed

    async def cmd_latency(self, count: int, conns: int = 4, size: int = 100) -> dict[str, Any]:
        pool = [c for c in [self.control, *self.clients[: max(conns - 1, 0)]] if c is not None]
        if not pool:
            raise BenchError("no connections for the latency phase")
        payload = {"body": "y" * max(size - 11, 0)}
        samples = []
        for i in range(count):
            samples.append(await self._echo(pool[i % len(pool)], str(1000 + i), payload))
        samples.sort()

        def pct(p: float) -> float:
            return samples[min(len(samples) - 1, round(p * (len(samples) - 1)))] / 1000

        return {
            "count": count,
            "connections": len(pool),
            "p50_us": pct(0.50),
            "p90_us": pct(0.90),
            "p99_us": pct(0.99),
            "max_us": samples[-1] / 1000,
            "mean_us": sum(samples) / len(samples) / 1000,
        }

    async def cmd_arm(self) -> dict[str, Any]:
        for client in self.clients:
            client.broadcasts = 0
        TRACK.start(broadcast=True)
        TRACK.active = False  # counted by the stamps branch only
        TRACK.stamps = []
        return {"clients": len(self.clients)}

    async def cmd_collect(self, within: float = 60.0, settle: float = 1.0) -> dict[str, Any]:
        stamps = TRACK.stamps
        if stamps is None:
            raise BenchError("collect without arm")
        try:
            await wait(TRACK.arm(len(self.clients)), within, "a copy on every connection")
            await asyncio.sleep(settle)  # a duplicate would arrive by now
        finally:
            TRACK.stop()
        wrong = [c.broadcasts for c in self.clients if c.broadcasts != 1]
        stamps.sort()
        return {"clients": len(self.clients), "wrong": len(wrong), "stamps": stamps}

    async def cmd_status(self) -> dict[str, Any]:
        closed = sum(c.closed for c in self.clients)
        return {"clients": len(self.clients), "closed": closed}

    async def cmd_reconnect(self, concurrency: int = 100) -> dict[str, Any]:
        gone = [i for i, c in enumerate(self.clients) if c.closed]
        todo = iter(gone)

        async def worker() -> None:
            for i in todo:
                self.clients[i] = await self.open()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(gone)) or 1)))
        return {"reconnected": len(gone), "seconds": time.perf_counter() - t0}

    def close_all(self) -> None:
        for client in [*self.clients, self.control]:
            if client is not None:
                client.close()
        self.clients.clear()
        self.control = None


async def serve_commands(gen: LoadGen, max_seconds: float) -> None:
    """Read JSON commands from stdin, answer on stdout; stop on quit/EOF/time."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    deadline = loop.time() + max_seconds
    out = sys.stdout
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BenchError(f"load generator reached --max-seconds {max_seconds:g}")
            try:
                line = await asyncio.wait_for(reader.readline(), remaining)
            except TimeoutError:
                continue
            if not line:
                return
            request = orjson.loads(line)
            name = request.pop("cmd")
            if name == "quit":
                out.write('{"ok":true}\n')
                out.flush()
                return
            handler = getattr(gen, f"cmd_{name}", None)
            try:
                if handler is None:
                    raise BenchError(f"unknown command {name!r}")
                result = await asyncio.wait_for(handler(**request), deadline - loop.time())
                answer: dict[str, Any] = {"ok": True, **result}
            except (BenchError, OSError, TimeoutError, ValueError, TypeError) as exc:
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            out.write(orjson.dumps(answer).decode() + "\n")
            out.flush()
    finally:
        gen.close_all()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0.1)  # let the close frames go out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--per-address", type=int, default=5000)
    parser.add_argument("--first-address", type=int, default=2, help="127.0.0.X to start at")
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args(argv)
    if not args.host.startswith("127."):
        parser.error("loopback targets only (127.0.0.0/8)")
    gen = LoadGen(args.host, args.port, args.per_address, args.first_address)
    uvloop.run(serve_commands(gen, args.max_seconds))


if __name__ == "__main__":
    main()
