"""A forgotten ``await`` never loses a message silently (``phoenix_channels._awaitable``)."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from typing import Any

import pytest

from phoenix_channels import Channel, Endpoint, PubSub, Socket
from phoenix_channels.testing import ChannelTest
from tests.pubsub.engines import shared_url, unique_prefix


class ForgetfulChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return None

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "push":
            self.push("pushed", {"n": 1})  # type: ignore[unused-coroutine]  # no await
        elif event == "broadcast":
            self.broadcast("said", {"n": 2})  # type: ignore[unused-coroutine]  # no await
        elif event == "ref":
            self.socket_ref().reply("ok", {"late": True})  # no await
        elif event == "task":
            await asyncio.create_task(self.broadcast("tasked", {"n": 3}))
        elif event == "gather":
            await asyncio.gather(self.push("g1", {}), self.broadcast("g2", {}))
        return None


class UserSocket(Socket):
    channels = {"room:*": ForgetfulChannel}


@pytest.fixture
async def ct():  # type: ignore[no-untyped-def]
    async with ChannelTest(Endpoint(sockets={"/socket": UserSocket})) as case:
        yield case


async def test_a_push_without_await_is_still_sent(ct: ChannelTest) -> None:
    room = await ct.join(UserSocket, "room:1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited" either
        room.push("push")
        await room.assert_push("pushed", {"n": 1})
        ref = room.push("ref")
        await ct.assert_reply(ref, "ok", {"late": True})


async def test_a_broadcast_without_await_logs_an_error_naming_the_call(
    ct: ChannelTest, caplog: pytest.LogCaptureFixture
) -> None:
    room = await ct.join(UserSocket, "room:1")
    with warnings.catch_warnings(), caplog.at_level(logging.ERROR, "phoenix_channels"):
        warnings.simplefilter("error")
        room.push("broadcast")
        await room.refute_push("said")
        gc.collect()
    assert (
        "ForgetfulChannel.broadcast('said', {'n': 2}) on 'room:1' was never awaited, so nothing "
        "was sent: write `await self.broadcast(...)`"
    ) in caplog.text


async def test_create_task_and_gather_still_take_them(ct: ChannelTest) -> None:
    room = await ct.join(UserSocket, "room:1")
    room.push("task")
    await room.assert_push("tasked", {"n": 3})
    room.push("gather")
    await room.assert_push("g1")
    await room.assert_push("g2")


@pytest.mark.parametrize("engine", ["local", "redis"])
async def test_an_endpoint_broadcast_without_await_logs_an_error(
    engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    pubsub = (
        PubSub() if engine == "local" else PubSub.redis(shared_url("redis"), prefix=unique_prefix())
    )
    endpoint = Endpoint(sockets={"/socket": UserSocket}, pubsub=pubsub, secret_key_base="s" * 32)
    await endpoint.start()
    try:
        with caplog.at_level(logging.ERROR, "phoenix_channels"):
            endpoint.broadcast("room:1", "news", {"n": 4})  # type: ignore[unused-coroutine]
            gc.collect()
        assert (
            "Endpoint.broadcast('room:1', 'news', {'n': 4}) was never awaited, so nothing was "
            "sent: write `await endpoint.broadcast(...)`"
        ) in caplog.text
        caplog.clear()
        with caplog.at_level(logging.ERROR, "phoenix_channels"):
            await endpoint.broadcast("room:1", "news", {"n": 5})
            await endpoint.broadcast_from(object(), "room:1", "news", {"n": 6})
            gc.collect()
        assert "never awaited" not in caplog.text
    finally:
        await endpoint.stop()
