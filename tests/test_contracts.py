"""What callbacks may be and return (``phoenix_channels._contracts``): each wrong shape is named."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from phoenix_channels import Channel, Endpoint, JoinError, Socket, UsageError, reply
from phoenix_channels.testing import ChannelTest


class WrongJoin(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        kind = payload["kind"]
        if kind == "reply":
            return reply("ok", {"a": 1})
        if kind == "tuple":
            return ("ok", {"a": 1})
        if kind == "true":
            return True
        if kind == "list":
            return [1, 2]
        if kind == "error_dict":
            return {"error": "unauthorized"}
        if kind == "bare_join_error":
            raise JoinError("unauthorized")  # type: ignore[arg-type]
        if kind == "none":
            return None
        return {"error": "x", "but": "also more keys"}  # an ordinary ok payload


class WrongReturns(Channel):
    intercept = ["out"]

    async def join(self, topic: str, payload: Any) -> Any:
        return None

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "info":
            self.send("tick")
        elif event == "out":
            await self.broadcast("out", {})
        elif event == "leave_me":
            return None
        return None

    async def handle_info(self, message: Any) -> Any:
        return reply("ok", {})

    async def handle_out(self, event: str, payload: Any) -> Any:
        return True


class WrongTerminate(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return None

    async def terminate(self, reason: Any) -> Any:
        return {"bye": True}


class NoneSocket(Socket):
    channels = {"wrong:*": WrongJoin, "returns:*": WrongReturns}

    async def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> bool:
        return None  # type: ignore[return-value]


class AppSocket(Socket):
    channels = {"wrong:*": WrongJoin, "returns:*": WrongReturns, "end:*": WrongTerminate}


@pytest.fixture
async def ct():  # type: ignore[no-untyped-def]
    endpoint = Endpoint(sockets={"/socket": AppSocket}, check_origin=False)
    async with ChannelTest(endpoint) as case:
        yield case


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("reply", "reply(...) answers pushes in handle_in"),
        ("tuple", "not Elixir tuples"),
        ("true", "join must return a dict"),
        ("list", "join must return a dict"),
        ("error_dict", "raise JoinError"),
        ("bare_join_error", "JoinError takes a dict"),
    ],
)
async def test_a_wrong_join_return_crashes_that_join_and_says_why(
    ct: ChannelTest, caplog: pytest.LogCaptureFixture, kind: str, words: str
) -> None:
    with (
        caplog.at_level(logging.ERROR, "phoenix_channels.channel"),
        pytest.raises(JoinError) as info,
    ):
        await ct.join(AppSocket, "wrong:1", {"kind": kind})
    assert info.value.response == {"reason": "join crashed"}
    cause = info.value.__cause__
    assert isinstance(cause, UsageError)
    assert words in str(cause)
    if kind != "bare_join_error":
        assert "WrongJoin.join returned" in str(cause)
    assert "WrongJoin.join crashed" in caplog.text


async def test_join_may_return_none_or_any_dict(ct: ChannelTest) -> None:
    assert (await ct.join(AppSocket, "wrong:1", {"kind": "none"})).reply == {}
    many = await ct.join(AppSocket, "wrong:2", {"kind": "dict"})
    assert many.reply == {"error": "x", "but": "also more keys"}


def test_join_error_needs_a_dict() -> None:
    with pytest.raises(UsageError, match=r"write JoinError\(\{'reason': 'nope'\}\)"):
        JoinError("nope")  # type: ignore[arg-type]
    assert JoinError().response == {}
    assert JoinError({"reason": "r"}).response == {"reason": "r"}


async def test_handle_info_and_handle_out_may_not_reply(ct: ChannelTest) -> None:
    room = await ct.join(AppSocket, "returns:1", {})
    room.push("info")
    exc = await room.assert_crashed()
    assert "WrongReturns.handle_info returned reply(...), but there is no client push" in str(exc)
    other = await ct.join(AppSocket, "returns:2", {})
    other.push("out")
    exc = await other.assert_crashed()
    assert "WrongReturns.handle_out returned True" in str(exc)


async def test_terminate_must_return_none(
    ct: ChannelTest, caplog: pytest.LogCaptureFixture
) -> None:
    room = await ct.join(AppSocket, "end:3", {})
    with caplog.at_level(logging.ERROR, "phoenix_channels.channel"):
        room.leave()
        exc = await room.assert_crashed()
    assert "WrongTerminate.terminate returned" in str(exc)
    assert "WrongTerminate.terminate returned {'bye': True}; it must return None" in caplog.text


async def test_connect_must_return_a_bool(ct: ChannelTest) -> None:
    with pytest.raises(UsageError, match=r"NoneSocket\.connect returned None; return True"):
        await ct.connect(NoneSocket)


@pytest.mark.parametrize("name", ["join", "handle_in", "handle_out", "handle_info", "terminate"])
def test_a_channel_callback_without_async_is_refused_at_class_definition(name: str) -> None:
    def callback(self: Any, *args: Any) -> None:
        return None

    with pytest.raises(UsageError, match=rf"Sync\.{name} must be defined with `async def`"):
        type("Sync", (Channel,), {name: callback, "intercept": ["x"]})


def test_socket_connect_must_be_async_and_id_must_not_be() -> None:
    with pytest.raises(UsageError, match=r"SyncSocket\.connect must be defined with `async def`"):

        class SyncSocket(Socket):
            def connect(self, params: Any, connect_info: Any) -> bool:  # type: ignore[override]
                return True

    with pytest.raises(UsageError, match=r"AsyncId\.id must be a plain `def`"):

        class AsyncId(Socket):
            async def id(self) -> str | None:  # type: ignore[override]
                return "x"


def test_raw_socket_callbacks_are_checked_too() -> None:
    from phoenix_channels import RawSocket

    with pytest.raises(UsageError, match=r"SyncRaw\.handle_in must be defined with `async def`"):

        class SyncRaw(RawSocket):
            def handle_in(self, data: bytes, binary: bool) -> None:  # type: ignore[override]
                return None
