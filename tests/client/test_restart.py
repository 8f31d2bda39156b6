"""The client across a server restart and a paused server, the server being a real process.

``phoenix-channels serve tests.client.app:endpoint`` runs in a subprocess on a
free port; the tests kill it (SIGKILL) and start another on the same port, or
pause it (SIGSTOP) past a heartbeat and resume it (SIGCONT). The join replies
carry the server's pid, so where a reply came from is visible on the wire.
The client uses its default reconnect schedule (the JS one, with jitter).
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from phoenix_channels.client import Socket

from .helpers import Recorder, ServerProcess, eventually, free_port


@pytest.fixture
async def process() -> AsyncIterator[ServerProcess]:
    server = ServerProcess(free_port())
    await server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.mark.parametrize("transport", ["websocket", "longpoll"])
async def test_a_restarted_server_gets_the_rejoin_and_the_buffered_pushes(
    process: ServerProcess, transport: str
) -> None:
    calls = itertools.count(1)
    async with Socket(
        process.url,
        transport=transport,
        timeout=5.0,  # type: ignore[arg-type]
        params={"user_id": "phoenix"},
    ) as socket:
        recorder = Recorder(socket)
        channel = socket.channel("room:restart", lambda: {"call": next(calls)})
        first = await channel.join()
        assert (first["pid"], first["params"]) == (process.pid, {"call": 1})
        joins: list[Any] = []
        channel.on_join(joins.append)

        old_pid = process.pid
        process.kill()
        await eventually(lambda: channel.state == "errored", "the channel noticed the loss")
        assert recorder.count("close") >= 1
        # Pushed while the server is down: they wait for the rejoin.
        pushes = [channel.push("echo", {"n": n}, timeout=30.0) for n in range(3)]
        await asyncio.sleep(0.3)  # a few reconnect attempts fail meanwhile
        assert not any(p.done() for p in pushes)

        await process.start()
        assert process.pid != old_pid
        await eventually(lambda: joins, "the channel rejoined on the new server", timeout=20)
        assert joins[0]["pid"] == process.pid and joins[0]["serial"] == 1
        assert joins[0]["params"] == {"call": 2}, "the params function ran again"
        replies = await asyncio.gather(*pushes)
        assert [r.response for r in replies] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert all(r.join_ref == channel.join_ref != "1" for r in replies)
        assert socket.established_connections == 2


@pytest.mark.parametrize(
    ("transport", "dead"),
    [
        ("websocket", (1000, "heartbeat timeout")),  # a heartbeat got no reply in time
        ("longpoll", (1005, "timeout")),  # a poll got no answer within longpoll_timeout
    ],
)
async def test_a_paused_server_is_detected_and_the_client_recovers(
    process: ServerProcess, transport: str, dead: tuple[int, str]
) -> None:
    # The app's long-poll window is 1 s: a poll answered in time takes at most that.
    async with Socket(
        process.url,
        transport=transport,  # type: ignore[arg-type]
        heartbeat_interval=0.3,
        longpoll_timeout=2.0,
        timeout=5.0,
        connect_timeout=1.0,
    ) as socket:
        recorder = Recorder(socket)
        channel = socket.channel("room:paused")
        await channel.join()
        rejoined: list[Any] = []
        channel.on_join(rejoined.append)
        process.signal(signal.SIGSTOP)
        try:
            await eventually(
                lambda: dead in recorder.of("close"), "the client declared the connection dead"
            )
            assert channel.state == "errored"
            push = channel.push("echo", {"while": "paused"}, timeout=30.0)
        finally:
            process.signal(signal.SIGCONT)
        await eventually(
            lambda: rejoined, "the channel rejoined after the server resumed", timeout=20
        )
        assert (await push).response == {"while": "paused"}
        assert socket.established_connections >= 2
        assert socket.is_connected
