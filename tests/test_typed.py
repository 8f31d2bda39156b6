"""Typed event payloads over a real socket: valid, invalid (field errors), wrong-typed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import pydantic
import pytest
import websockets

from phoenix_channels import (
    Channel,
    ChannelReply,
    Endpoint,
    InvalidPayload,
    Socket,
    UsageError,
    on,
    reply,
)
from phoenix_channels.typed import handlers_of

from .support import Server


@dataclass
class Author:
    name: str
    karma: int = 0


@dataclass
class NewMsg:
    body: str
    author: Author
    tags: list[str] = field(default_factory=list)
    mood: Literal["happy", "sad"] | None = None


class Rename(pydantic.BaseModel):
    title: str = pydantic.Field(min_length=1)
    public: bool


@dataclass
class Vote:
    up: bool


class RoomChannel(Channel):
    payloads = {"vote": Vote}

    async def join(self, topic: str, payload: Any) -> Any:
        return None

    @on("new_msg")
    async def new_msg(self, payload: NewMsg) -> ChannelReply:
        assert isinstance(payload.author, Author)
        return reply("ok", {"body": payload.body, "by": payload.author.name, "tags": payload.tags})

    @on("rename")
    async def rename(self, payload: Rename) -> ChannelReply:
        return reply("ok", {"title": payload.title.upper(), "public": payload.public})

    @on("crash")
    async def crash(self, payload: dict[str, Any]) -> ChannelReply:
        return reply("ok", {"keys": sorted(payload)})

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "vote":
            return reply("ok", {"up": payload.up, "typed": isinstance(payload, Vote)})
        return reply("ok", {"untyped": event})


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}

    async def connect(self, params: dict[str, Any], connect_info: Any) -> bool:
        return True


async def _talk(frames: list[list[Any]]) -> list[dict[str, Any]]:
    endpoint = Endpoint(sockets={"/socket": UserSocket}, check_origin=False)
    replies = []
    async with Server(endpoint) as srv, websockets.connect(srv.url + "?vsn=2.0.0") as ws:
        await ws.send(json.dumps(["1", "1", "room:t", "phx_join", {}]))
        assert json.loads(await ws.recv())[4]["status"] == "ok"
        for i, (event, payload) in enumerate(frames):
            await ws.send(json.dumps(["1", str(i + 2), "room:t", event, payload]))
            answer = json.loads(await ws.recv())
            assert answer[1] == str(i + 2) and answer[3] == "phx_reply"
            replies.append(answer[4])
    return replies


async def test_valid_payloads_reach_the_handler_as_the_declared_type() -> None:
    replies = await _talk(
        [
            ["new_msg", {"body": "hi", "author": {"name": "ana"}, "tags": ["a"], "extra": 1}],
            ["rename", {"title": "lobby", "public": True}],
            ["vote", {"up": False}],
            ["crash", {"b": 1, "a": 2}],
            ["other", {}],
        ]
    )
    assert replies == [
        {"status": "ok", "response": {"body": "hi", "by": "ana", "tags": ["a"]}},
        {"status": "ok", "response": {"title": "LOBBY", "public": True}},
        {"status": "ok", "response": {"up": False, "typed": True}},
        {"status": "ok", "response": {"keys": ["a", "b"]}},
        {"status": "ok", "response": {"untyped": "other"}},
    ]


async def test_invalid_payloads_get_the_field_errors_and_the_channel_carries_on() -> None:
    replies = await _talk(
        [
            ["new_msg", {"author": {"name": 5, "karma": "x"}, "tags": ["a", 2], "mood": "meh"}],
            ["rename", {"title": ""}],
            ["new_msg", {"body": "still here", "author": {"name": "bo"}}],
        ]
    )
    assert replies[0] == {
        "status": "error",
        "response": {
            "reason": "invalid_payload",
            "errors": [
                {"loc": ["body"], "msg": "field required", "type": "missing"},
                {"loc": ["author", "name"], "msg": "expected a string", "type": "string_type"},
                {"loc": ["author", "karma"], "msg": "expected an integer", "type": "int_type"},
                {"loc": ["tags", 1], "msg": "expected a string", "type": "string_type"},
                {
                    "loc": ["mood"],
                    "msg": "expected one of ['happy', 'sad']",
                    "type": "literal_error",
                },
                {"loc": ["mood"], "msg": "expected null", "type": "none_required"},
            ],
        },
    }
    assert replies[1]["status"] == "error"
    assert replies[1]["response"]["reason"] == "invalid_payload"
    assert [(e["loc"], e["type"]) for e in replies[1]["response"]["errors"]] == [
        (["title"], "string_too_short"),
        (["public"], "missing"),
    ]
    assert replies[2] == {
        "status": "ok",
        "response": {"body": "still here", "by": "bo", "tags": []},
    }


async def test_wrong_typed_payloads_are_refused_not_crashed_on() -> None:
    replies = await _talk(
        [
            ["new_msg", [1, 2]],
            ["rename", "a string"],
            ["crash", [1]],
            ["vote", {"up": 1}],
            ["new_msg", {"body": "ok", "author": {"name": "cy"}}],
        ]
    )
    assert replies[0] == {
        "status": "error",
        "response": {
            "reason": "invalid_payload",
            "errors": [{"loc": [], "msg": "expected an object", "type": "dict_type"}],
        },
    }
    assert replies[1]["response"]["errors"][0]["type"] == "model_type"
    assert replies[2]["response"]["errors"][0]["type"] == "dict_type"
    assert replies[3]["response"]["errors"] == [
        {"loc": ["up"], "msg": "expected a boolean", "type": "bool_type"}
    ]
    assert replies[4]["status"] == "ok"


def test_declaration_mistakes_are_caught_when_the_class_is_defined() -> None:
    with pytest.raises(UsageError, match="must be `async def`"):
        on("x")(lambda self, payload: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(UsageError, match="two @on"):

        class Twice(Channel):
            @on("e")
            async def a(self, payload: Any) -> None: ...

            @on("e")
            async def b(self, payload: Any) -> None: ...

    with pytest.raises(UsageError, match=r"take \(self, payload\)"):

        class Arity(Channel):
            @on("e")
            async def a(self) -> None: ...

    assert handlers_of(Channel) is None
    assert InvalidPayload([]).errors == []


def test_dataclasses_need_no_pydantic_and_other_types_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from phoenix_channels.typed import _validator

    monkeypatch.setitem(sys.modules, "pydantic", None)  # as if it were not installed
    check = _validator(Vote)
    assert check is not None and check({"up": True}) == Vote(up=True)
    with pytest.raises(InvalidPayload) as failed:
        check(["up"])
    assert failed.value.errors == [{"loc": [], "msg": "expected an object", "type": "dict_type"}]
    with pytest.raises(UsageError, match=r"phoenix-channels\[pydantic\]"):
        _validator(Rename)
