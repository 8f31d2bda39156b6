"""A client that stops reading cannot make the server's memory grow, nor slow the others.

The server runs in its own process (``tests/trust/apps.py``, 1 MiB outbound
limit) so its memory is its own. One client joins and then never reads
again, with a tiny receive buffer; a good client on the same topic asks for
a heavy broadcast stream, batch after batch, and reads every message. The
stream is several times larger than what the server may hold for the slow
client: the server's peak RSS must grow by far less than the stream, the
good client must get every message in order, and the slow one must be gone
(closed with 1013).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets

from .process import ServerProcess
from .wire import RawClient

BATCH, SIZE, BATCHES = 32, 16 * 1024, 192  # 192 batches of 32 x 16 KiB: 96 MiB in all
TOPIC = "blast:slow"


async def slow_reader(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    client = await RawClient.connect(port, receive_buffer=4096)
    client.send_json(["1", "1", TOPIC, "phx_join", {}])
    assert (await client.recv_json())[4]["status"] == "ok"
    return client.reader, client.writer  # from here on, nobody reads it


async def ask(ws: Any, ref: str, event: str, payload: dict[str, Any]) -> Any:
    await ws.send(json.dumps(["1", ref, TOPIC, event, payload]))
    async with asyncio.timeout(10):
        while True:
            frame = json.loads(await ws.recv())
            if frame[3] == "phx_reply" and frame[1] == ref:
                return frame[4]["response"]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "asgi"])
async def test_a_slow_consumer_is_dropped_and_memory_stays_bounded(fast: bool) -> None:
    async with (
        ServerProcess("tests.trust.apps:endpoint", fast=fast) as server,
        websockets.connect(server.url, max_size=None) as good,
    ):
        await good.send(json.dumps(["1", "1", TOPIC, "phx_join", {}]))
        assert json.loads(await good.recv())[4]["status"] == "ok"
        _reader, writer = await slow_reader(server.port)
        assert (await ask(good, "2", "stats", {}))["subscribers"] == 2
        # Warm up (allocator arenas, encoder caches) before the baseline.
        await ask(good, "3", "blast", {"count": BATCH, "size": SIZE})  # (ask skips them)
        baseline = server.peak_kib()
        received = 0
        for batch in range(BATCHES):
            await good.send(
                json.dumps(["1", f"b{batch}", TOPIC, "blast", {"count": BATCH, "size": SIZE}])
            )
            async with asyncio.timeout(10):
                while True:
                    frame = json.loads(await good.recv())
                    if frame[3] == "blob":
                        assert frame[4]["n"] == received % BATCH, "a message was lost"
                        received += 1
                    elif frame[1] == f"b{batch}":
                        break
        assert received == BATCHES * BATCH
        growth_mib = (server.peak_kib() - baseline) / 1024
        stream_mib = BATCHES * BATCH * SIZE / 2**20
        stats = await ask(good, "4", "stats", {})
        assert stats["subscribers"] == 1, "the slow consumer was not dropped"
        assert growth_mib < stream_mib / 3, (
            f"the server's peak RSS grew by {growth_mib:.1f} MiB during a {stream_mib:.0f} MiB "
            "stream to a client that does not read"
        )
        writer.close()
