"""The long-poll relay: typed commands and answers, their one codec, and answers that fail."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import httpx
import pytest

from phoenix_channels import PubSub
from phoenix_channels.errors import BroadcastError, DecodeError
from phoenix_channels.transports.longpoll import relay
from phoenix_channels.transports.longpoll.relay import (
    Dispatch,
    Expired,
    Flush,
    Messages,
    NowAvailable,
    Ok,
    Ping,
    Pong,
    decode,
    encode,
)

from ..support import Server
from .test_longpoll import LP, make_endpoint

ALL = [
    Ping("r1"),
    Flush("r2"),
    Expired("r3"),
    Dispatch("r4", ((b'["1","1","t","e",{}]', False), (b"\x00\xff", True))),
    Pong("r5"),
    Ok("r6"),
    NowAvailable("r7"),
    Messages("r8", ('["x"]', '["y"]')),
]


@pytest.mark.parametrize("item", ALL, ids=lambda i: type(i).__name__)
def test_every_command_and_answer_survives_the_round_trip(item: Any) -> None:
    assert decode(encode(item)) == item


def test_the_dicts_on_the_wire_keep_their_shape() -> None:
    # nodes running the previous release read and write exactly these
    assert encode(Ping("a")) == {"cmd": "ping", "ref": "a"}
    assert encode(Dispatch("b", ((b"[1]", False), (b"\x01", True)))) == {
        "cmd": "dispatch",
        "ref": "b",
        "frames": [["[1]", False], ["AQ==", True]],
    }
    assert encode(NowAvailable("c")) == {"lp": "now_available", "ref": "c"}
    assert encode(Messages("d", ("m",))) == {"lp": "messages", "ref": "d", "messages": ["m"]}


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ("ping", "must be a dict"),
        ({"cmd": "ping"}, "'ref'"),
        ({"cmd": "ping", "ref": 3}, "'ref'"),
        ({"cmd": "reboot", "ref": "a"}, "unknown long-poll relay command 'reboot'"),
        ({"lp": "maybe", "ref": "a"}, "unknown long-poll relay answer 'maybe'"),
        ({"ref": "a"}, "neither a command nor an answer"),
        ({"cmd": "dispatch", "ref": "a"}, "'frames' must be a list"),
        ({"cmd": "dispatch", "ref": "a", "frames": [["x"]]}, "frame must be [text, is_base64]"),
        ({"cmd": "dispatch", "ref": "a", "frames": [["***", True]]}, "not valid base64"),
        ({"lp": "messages", "ref": "a", "messages": [1]}, "list of str"),
    ],
)
def test_malformed_messages_are_rejected_saying_what_is_wrong(message: Any, says: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(message)
    assert says in str(caught.value)


class AnswersFail(PubSub):
    """A PubSub whose adapter cannot publish the owning node's answers."""

    async def broadcast(self, topic: str, message: Any, *, from_: Any = None) -> None:
        if isinstance(message, dict) and "lp" in message:
            raise BroadcastError("injected: the adapter lost its connection")
        await super().broadcast(topic, message, from_=from_)


async def test_an_answer_that_cannot_be_published_is_logged_not_lost_in_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    shared = AnswersFail()
    try:
        async with (
            Server(make_endpoint(shared)) as a,
            Server(make_endpoint(shared)) as b,
            httpx.AsyncClient(timeout=10) as http,
        ):
            first = LP(http, path=f"http://127.0.0.1:{a.port}/socket/longpoll")
            await first.open()
            other = LP(http, path=f"http://127.0.0.1:{b.port}/socket/longpoll")
            other.token = first.token
            with caplog.at_level(logging.WARNING, "phoenix_channels.longpoll"):
                # b pings the session on a; a's pong cannot be published: b sees it as gone
                assert await other.post(["1", "1", "room:x", "phx_join", {}]) == {"status": 410}
                async with asyncio.timeout(5):  # until the failure surfaces, one way or the other
                    while not unhandled and not failures(caplog):
                        gc.collect()
                        await asyncio.sleep(0.01)
    finally:
        loop.set_exception_handler(previous)
    assert unhandled == []
    assert "injected: the adapter lost its connection" in failures(caplog)[0]


def failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "could not answer" in r.getMessage()]


def test_the_relay_names_its_types() -> None:
    assert set(relay.__all__) >= {"Command", "Answer", "RemoteSession", "AnswerSender"}


async def test_a_malformed_command_is_dropped_with_a_warning_and_the_session_lives_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Server(make_endpoint()) as srv, httpx.AsyncClient(timeout=10) as http:
        lp = LP(http, path=f"http://127.0.0.1:{srv.port}/socket/longpoll")
        await lp.open()
        (session,) = srv.endpoint.longpoll_sessions.values()
        with caplog.at_level(logging.WARNING, "phoenix_channels.longpoll"):
            await srv.endpoint.pubsub.broadcast(session.topic, {"cmd": "reboot", "ref": "x"})
        assert "unknown long-poll relay command 'reboot'" in caplog.text
        assert await lp.post(["1", "1", "room:m", "phx_join", {}]) == {"status": 200}
        assert (await lp.messages(1))[0][4]["status"] == "ok"
