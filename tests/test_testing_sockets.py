"""Assertions scoped to one test socket (``room.assert_push``, ``sock.assert_push``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from phoenix_channels import Channel, Endpoint, Socket
from phoenix_channels.testing import ChannelTest
from tests.support import load_doc_example


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return None

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "say":
            await self.broadcast_from("said", payload)
        else:
            await self.push("just_you", payload)
        return None


class UserSocket(Socket):
    channels = {"room:*": RoomChannel, "other:*": RoomChannel}


@pytest.fixture
async def ct():  # type: ignore[no-untyped-def]
    async with ChannelTest(Endpoint(sockets={"/socket": UserSocket})) as case:
        yield case


async def test_the_docs_example(tmp_path: Path) -> None:
    module = load_doc_example("docs/testing.md", "test_who_received_what.py", tmp_path)
    await module.test_the_sender_does_not_hear_itself()


async def test_a_channel_assertion_sees_only_its_own_client(ct: ChannelTest) -> None:
    ana = await ct.join(UserSocket, "room:1")
    bo = await ct.join(UserSocket, "room:1")
    ana.push("say", {"n": 1})
    # What used to pass, wrongly: the push went to bo's client, not to ana's.
    with pytest.raises(AssertionError, match=r"to socket #1: nothing matching arrived") as info:
        await ana.assert_push("said", {"n": 1}, timeout=0.05)
    assert "'said' {'n': 1} to socket #2" in str(info.value)  # the report says who got it
    await ana.refute_push("said")
    with pytest.raises(
        AssertionError, match=r"refute_push\('said', ANY\) to socket #2: it arrived"
    ):
        await bo.refute_push("said")
    await bo.assert_push("said", {"n": 1})
    await ct.refute_push("said")  # consumed


async def test_a_socket_assertion_covers_its_topics_and_only_its_client(ct: ChannelTest) -> None:
    sock = ct.socket(UserSocket)
    other = ct.socket(UserSocket)
    room = await sock.join("room:1")
    await sock.join("other:1")
    await other.join("room:1")
    room.push("ping", {"n": 2})
    await other.refute_push("just_you")
    message = await sock.assert_push("just_you", {"n": 2}, topic="room:1")
    assert message.topic == "room:1"
    assert repr(sock).startswith("<TestSocket #1 UserSocket")


async def test_the_topic_wide_assertion_still_matches_any_client(ct: ChannelTest) -> None:
    ana = await ct.join(UserSocket, "room:1")
    await ct.join(UserSocket, "room:1")
    ana.push("say", {"n": 3})
    await ct.assert_push("said", {"n": 3})  # bo's, found without naming the socket
