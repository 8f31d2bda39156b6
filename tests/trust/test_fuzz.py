"""Fuzzing the socket: any sequence of frames, well formed or not, on one connection.

Hypothesis builds sequences mixing plausible Phoenix messages (joins,
leaves, heartbeats, pushes that reply, crash or stop, with refs and payloads
of every JSON type, deep nesting included), binary pushes with random
fields, and plain garbage, and feeds them to a real Socket on the in-memory
transport. Whatever arrives:

* nothing raises out of ``Socket.receive`` (bad input is answered, never
  propagated to the transport);
* every frame the server sends is a valid V2 frame, and every reply answers
  a ref the client sent;
* a closed connection was closed with 1011 (undecodable input) and nothing
  else;
* never more channels than ``max_channels``;
* after the connection ends, every channel has stopped and no subscription
  is left in PubSub.

Bounded for CI by ``max_examples`` (about 5 s); raise it with
``PHX_FUZZ_EXAMPLES=20000`` for a longer run.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phoenix_channels import Channel, Endpoint, Socket, reply, stop

from ..support import connect

EXAMPLES = int(os.environ.get("PHX_FUZZ_EXAMPLES", "500"))
CHANNELS: list[Channel] = []


class FuzzChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        CHANNELS.append(self)
        if isinstance(payload, dict) and payload.get("refuse"):
            from phoenix_channels import JoinError

            raise JoinError({"reason": "refused"})
        if isinstance(payload, dict) and payload.get("wait"):
            await asyncio.sleep(0)
        return {"topic": topic}

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "echo":
            return reply("ok", payload)
        if event == "crash":
            raise RuntimeError("asked to crash")
        if event == "stop":
            return stop("normal")
        if event == "shout":
            await self.broadcast("shout", {"payload": payload})
            return None
        if event == "wait":
            await asyncio.sleep(0)
            return reply("ok", {})
        return None


class FuzzSocket(Socket):
    channels = {"room:*": FuzzChannel}
    max_channels = 3
    max_payload_depth = 6
    max_messages_per_second = 40


refs = st.one_of(
    st.none(),
    st.integers(-3, 30),
    st.sampled_from(["1", "2", "3", ""]),
    st.text(max_size=3),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.integers(-5, 5), max_size=1),
)
topics = st.one_of(
    st.sampled_from(["room:1", "room:2", "room:3", "room:4", "phoenix", "x"]),
    st.text(max_size=8),
    st.integers(-5, 5),
)
events = st.one_of(
    st.sampled_from(
        ["phx_join", "phx_leave", "heartbeat", "echo", "crash", "stop", "shout", "wait", "nothing"]
    ),
    st.text(max_size=6),
    st.none(),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
payloads = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={"refuse": st.booleans(), "wait": st.booleans()}),
    st.just({"deep": [[[[[[[[1]]]]]]]]}),
)


@st.composite
def text_message(draw: Any) -> tuple[bytes, bool]:
    parts = [draw(refs), draw(refs), draw(topics), draw(events), draw(payloads)]
    if draw(st.integers(0, 9)) == 0:  # wrong arity, now and then
        parts = parts[: draw(st.integers(0, 4))] + draw(st.lists(json_values, max_size=2))
    return orjson.dumps(parts), False


@st.composite
def binary_push(draw: Any) -> tuple[bytes, bool]:
    fields = [
        draw(st.binary(max_size=4)),
        draw(st.binary(max_size=3)),
        draw(st.sampled_from([b"room:1", b"room:2", b"\xff\xfe", b""])),
        draw(st.sampled_from([b"echo", b"shout", b"crash", b"\xc3"])),
    ]
    kind = draw(st.sampled_from([0, 0, 0, 1, 2, 7]))
    return bytes((kind, *map(len, fields))) + b"".join(fields) + draw(st.binary(max_size=8)), True


frames = st.lists(
    st.one_of(
        text_message(),
        text_message(),
        text_message(),
        binary_push(),
        st.tuples(st.binary(max_size=20), st.booleans()),
    ),
    min_size=1,
    max_size=25,
)


async def run(sequence: list[tuple[bytes, bool]]) -> None:
    CHANNELS.clear()
    endpoint = Endpoint(sockets={"/socket": FuzzSocket}, check_origin=False)
    client = await connect(endpoint, FuzzSocket)
    sent_refs: set[Any] = {None}
    for data, binary in sequence:
        try:
            value = orjson.loads(data) if not binary else None
            if isinstance(value, list) and len(value) > 1:
                sent_refs.add(orjson.dumps(value[1]))
        except orjson.JSONDecodeError:
            pass
        if binary and len(data) >= 5 and data[0] == 0:
            end = 5 + data[1]
            sent_refs.add(orjson.dumps(data[end : end + data[2]].decode(errors="replace")))
        client.socket.receive(data, binary)  # must never raise
        await asyncio.sleep(0)
        assert client.socket.channel_count <= FuzzSocket.max_channels
        if client.transport.closed is not None:
            break
    for _ in range(5):
        await asyncio.sleep(0)
    if client.transport.closed is not None:
        assert client.transport.closed[0] == 1011, client.transport.closed
    for data, binary in client.transport.sent:
        if binary:
            assert data[0] in (0, 1, 2), data
            continue
        frame = orjson.loads(data)
        assert isinstance(frame, list) and len(frame) == 5, frame
        assert isinstance(frame[2], str) and isinstance(frame[3], str), frame
        if frame[3] == "phx_reply":
            assert orjson.dumps(frame[1]) in sent_refs or frame[1] is None, frame
            assert frame[4]["status"] in ("ok", "error"), frame
    client.socket.connection_lost()
    for _ in range(5):
        await asyncio.sleep(0)
    assert all(not channel._accepting() for channel in CHANNELS), CHANNELS
    assert endpoint.pubsub.topics() == 0, endpoint.pubsub._topics
    await endpoint.stop()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(frames)
def test_any_sequence_of_frames_is_handled_safely(sequence: list[tuple[bytes, bool]]) -> None:
    asyncio.run(run(sequence))
