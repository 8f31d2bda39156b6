"""The V1 serializer against transcript 13 (vsn=1.0.0) and the V1 rules."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phoenix_channels import Broadcast, DecodeError, EncodeError, Message
from phoenix_channels.protocol import V1, V2, serializer_for


def test_decodes_a_v1_join_without_join_ref() -> None:
    msg = V1.decode(
        b'{"topic":"room:v1","event":"phx_join","payload":{"user_id":"v1"},"ref":"1"}', False
    )
    assert msg == Message(None, "1", "room:v1", "phx_join", {"user_id": "v1"})


def test_encodes_like_phoenix() -> None:
    assert V1.encode_reply(None, "1", "room:lobby", "ok", {})[0] == (
        b'{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"1",'
        b'"topic":"room:lobby"}'
    )
    assert V1.encode_broadcast(Broadcast("room:v1", "shout", {"s": 1}))[0] == (
        b'{"event":"shout","payload":{"s":1},"ref":null,"topic":"room:v1"}'
    )
    # phx_error of a V1 join: its join_ref (and so its ref) is null
    assert V1.encode_push(None, None, "room:v1", "phx_error", {"reason": "channel_crash"})[0] == (
        b'{"event":"phx_error","payload":{"reason":"channel_crash"},"ref":null,"topic":"room:v1"}'
    )


@pytest.mark.parametrize(
    "frame",
    [
        b'["1","1","t","e",{}]',
        b'{"topic":"t","event":"e","payload":{}}',
        b"nope",
        b'{"topic":1,"event":"e","payload":{},"ref":null}',
    ],
)
def test_malformed_frames_raise_decode_error(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        V1.decode(frame, False)


def test_binary_is_not_part_of_v1() -> None:
    with pytest.raises(DecodeError):
        V1.decode(b"\x00\x00\x00\x01\x01te", True)
    with pytest.raises(EncodeError):
        V1.encode_push(None, None, "t", "e", b"bytes")


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    try:
        V1.decode(data, False)
    except DecodeError:
        pass


@given(
    st.one_of(st.none(), st.text(max_size=8)),
    st.text(max_size=10),
    st.text(max_size=10),
    st.dictionaries(st.text(max_size=4), st.integers(-(2**63), 2**63 - 1)),
)
def test_round_trip(ref, topic, event, payload) -> None:  # type: ignore[no-untyped-def]
    data = orjson.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref})
    assert V1.decode(data, False) == Message(None, ref, topic, event, payload)


@pytest.mark.parametrize(
    ("vsn", "expected"),
    [
        (None, V1),
        ("1.0.0", V1),
        ("1.0.7", V1),
        ("2.0.0", V2),
        ("2.0.1", V2),
        ("2.1.0", None),
        ("3.0.0", None),
        ("2.0", None),
        ("abc", None),
        ("", None),
        ("2.0.0-rc.1", None),
        ("2.0.1+build", V2),
    ],
)
def test_vsn_negotiation(vsn: str | None, expected: object) -> None:
    assert serializer_for(vsn) is expected
