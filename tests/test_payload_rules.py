"""One set of payload rules for every path: one node, a cluster, and ChannelTest.

A ``datetime`` in a broadcast used to go out as an ISO string on one node
and in ChannelTest, then fail with ``BroadcastError`` in a cluster. Now the
same payload is refused the same way wherever the app sends it.
"""

from __future__ import annotations

import datetime
import enum
import uuid
from typing import Any

import pytest

from phoenix_channels import Channel, EncodeError, Endpoint, PubSub, Socket, reply
from phoenix_channels.pubsub import codec
from phoenix_channels.testing import ChannelTest
from tests.pubsub.engines import shared_url, unique_prefix

WHEN = datetime.datetime(2026, 12, 3, 7, 40, tzinfo=datetime.UTC)
BAD = {"user": {"name": "ana", "joined_at": WHEN}}
MESSAGE = 'payload["user"]["joined_at"]: datetime is not JSON-encodable; send d.isoformat()'


class Level(enum.IntEnum):
    HIGH = 2


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return None

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "broadcast":
            await self.broadcast("news", BAD)
        elif event == "broadcast_from":
            await self.broadcast_from("news", BAD)
        elif event == "push":
            await self.push("news", BAD)
        elif event == "reply":
            return reply("ok", {"at": {WHEN}})
        return None


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}


SECRET = "payload-rules-secret-" + "x" * 24


def make_endpoint(engine: str) -> Endpoint:
    if engine == "local":
        pubsub = PubSub()
    else:
        url = shared_url(engine)  # skips when the engine is not running
        factory = PubSub.redis if engine == "redis" else PubSub.nats
        pubsub = factory(url, prefix=unique_prefix())
    return Endpoint(sockets={"/socket": UserSocket}, pubsub=pubsub, secret_key_base=SECRET)


@pytest.mark.parametrize("engine", ["local", "redis", "nats"])
async def test_the_app_broadcast_refuses_the_same_way_on_every_engine(engine: str) -> None:
    endpoint = make_endpoint(engine)
    await endpoint.start()
    try:
        with pytest.raises(EncodeError) as refused:
            await endpoint.broadcast("room:1", "news", BAD)
        assert str(refused.value) == MESSAGE
        with pytest.raises(EncodeError, match=r"^payload\["):
            await endpoint.broadcast_from(object(), "room:1", "news", BAD)
        with pytest.raises(EncodeError, match=r"^payload\["):
            endpoint.local_broadcast("room:1", "news", BAD)
        # What the rule allows crosses every engine: IntEnum, UUID, tuples, 64-bit ints.
        fine = {"level": Level.HIGH, "id": uuid.UUID(int=7), "pair": (1, 2), "n": 2**63}
        await endpoint.broadcast("room:1", "news", fine)
    finally:
        await endpoint.stop()


@pytest.mark.parametrize("engine", ["local", "redis"])
@pytest.mark.parametrize("event", ["broadcast", "broadcast_from", "push"])
async def test_a_channel_sending_it_crashes_with_the_same_error_in_channel_test(
    engine: str, event: str
) -> None:
    async with ChannelTest(make_endpoint(engine)) as ct:
        room = await ct.join(UserSocket, "room:1")
        room.push(event)
        crash = await room.assert_crashed()
        assert isinstance(crash, EncodeError)
        assert str(crash) == MESSAGE
        with pytest.raises(EncodeError) as refused:
            await ct.broadcast_from("room:1", "news", BAD)
        assert str(refused.value) == MESSAGE


async def test_a_reply_names_the_path_in_the_response() -> None:
    async with ChannelTest(make_endpoint("local")) as ct:
        room = await ct.join(UserSocket, "room:1")
        room.push("reply")
        crash = await room.assert_crashed()
        assert (
            str(crash) == 'reply response["at"]: set is not JSON-encodable; send a list (sorted(s))'
        )


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"a": [1, {"b": datetime.date(2026, 1, 1)}]}, 'payload["a"][1]["b"]: date is'),
        ({"a": {3: "x"}}, 'payload["a"]: key 3 (int) is not a str'),
        ({"a": b"raw"}, 'payload["a"]: bytes inside a JSON payload'),
        ({"a": 2**70}, 'payload["a"]: an int beyond 64 bits'),
        ({"a": object()}, 'payload["a"]: object is not JSON-encodable'),
    ],
)
def test_each_refusal_names_the_path_and_the_fix(payload: Any, words: str) -> None:
    from phoenix_channels.channel import check_payload

    with pytest.raises(EncodeError) as refused:
        check_payload(payload)
    assert str(refused.value).startswith(words)


def test_the_cluster_codec_carries_uuid_and_enum_as_clients_see_them() -> None:
    data = codec.encode(codec.BROADCAST, b"a", "t", {"id": uuid.UUID(int=7), "l": Level.HIGH})
    _topic, message = codec.decode(data, b"b") or ("", None)
    assert message == {"id": "00000000-0000-0000-0000-000000000007", "l": 2}
