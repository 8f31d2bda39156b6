"""The V2 serializer against frames recorded from Phoenix 1.8 (shared/spec/transcripts)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phoenix_channels import Broadcast, DecodeError, EncodeError, Message
from phoenix_channels.protocol import V2

# -- golden frames (transcripts 02, 04, 05, 08, 09, 12) ---------------------------------


def test_decodes_a_join_from_the_js_client() -> None:
    msg = V2.decode(b'["1","1","room:lobby","phx_join",{"user_id":"alice"}]', False)
    assert msg == Message("1", "1", "room:lobby", "phx_join", {"user_id": "alice"})


def test_encodes_replies_byte_for_byte() -> None:
    assert V2.encode_reply("1", "1", "room:lobby", "ok", {}) == (
        b'["1","1","room:lobby","phx_reply",{"response":{},"status":"ok"}]',
        False,
    )
    assert V2.encode_reply(None, "2", "nochannel:x", "error", {"reason": "unmatched topic"}) == (
        b'[null,"2","nochannel:x","phx_reply",'
        b'{"response":{"reason":"unmatched topic"},"status":"error"}]',
        False,
    )
    assert V2.encode_reply(None, "hb", "phoenix", "ok", {}) == (
        b'[null,"hb","phoenix","phx_reply",{"response":{},"status":"ok"}]',
        False,
    )


def test_encodes_numeric_refs_as_received() -> None:
    # transcript 14, case "numeric refs": the server echoes JSON numbers
    msg = V2.decode(b'[1,1,"room:m","phx_join",{}]', False)
    assert V2.encode_reply(msg.join_ref, msg.ref, msg.topic, "ok", {})[0] == (
        b'[1,1,"room:m","phx_reply",{"response":{},"status":"ok"}]'
    )


def test_encodes_pushes_close_and_error() -> None:
    assert V2.encode_push("1", "1", "room:c1", "phx_error", {"reason": "channel_crash"}) == (
        b'["1","1","room:c1","phx_error",{"reason":"channel_crash"}]',
        False,
    )
    assert V2.encode_push("1", "1", "room:l1", "phx_close", {})[0] == (
        b'["1","1","room:l1","phx_close",{}]'
    )
    assert V2.encode_push("3", None, "room:lobby", "joined", {"status": "connected"})[0] == (
        b'["3",null,"room:lobby","joined",{"status":"connected"}]'
    )


def test_encodes_broadcasts_with_null_refs() -> None:
    frame = V2.encode_broadcast(Broadcast("room:b1", "shout", {"msg": "hello everyone"}))
    assert frame == (b'[null,null,"room:b1","shout",{"msg":"hello everyone"}]', False)


def test_non_ascii_is_sent_as_utf8() -> None:
    data, _ = V2.encode_push("1", None, "t", "e", {"unicode": "héllo ✓"})
    assert "héllo ✓".encode() in data


def test_binary_frames_from_transcript_12() -> None:
    push = bytes.fromhex("00010108043132726f6f6d3a62696e6563686f01020300ff")
    assert V2.decode(push, True) == Message("1", "2", "room:bin", "echo", b"\x01\x02\x03\x00\xff")
    reply = V2.encode_reply("1", "2", "room:bin", "ok", b"\x01\x02\x03\x00\xff")
    assert reply == (bytes.fromhex("01010108023132726f6f6d3a62696e6f6b01020300ff"), True)
    empty = V2.encode_reply("1", "4", "room:bin", "ok", b"")
    assert empty == (bytes.fromhex("01010108023134726f6f6d3a62696e6f6b"), True)
    shout = V2.encode_broadcast(Broadcast("room:bin", "shout", b"binary-shout"))
    assert shout == (
        bytes.fromhex("020805726f6f6d3a62696e73686f757462696e6172792d73686f7574"),
        True,
    )


def test_binary_examples_from_phoenix_serializer_tests() -> None:
    assert V2.decode(b"\x00\x02\x03\x05\x05" + b"12123topicevent" + b"efg", True) == Message(
        "12", "123", "topic", "event", b"efg"
    )
    assert V2.encode_push("12", None, "topic", "event", b"efg")[0] == (
        b"\x00\x02\x05\x05" + b"12topicevent" + b"efg"
    )
    assert V2.encode_reply("12", "123", "topic", "ok", b"efg")[0] == (
        b"\x01\x02\x03\x05\x02" + b"12123topicok" + b"efg"
    )
    # The npm client's own example: join_ref "3", ref "8", event "upload".
    data = bytes.fromhex("0001010a06" + "3338" + b"room:lobby".hex() + b"upload".hex() + "0102")
    assert V2.decode(data, True) == Message("3", "8", "room:lobby", "upload", b"\x01\x02")


def test_empty_binary_join_ref_is_an_empty_string_not_null() -> None:
    msg = V2.decode(b"\x00\x00\x01\x01\x01" + b"1te", True)
    assert msg.join_ref == "" and msg.ref == "1"


# -- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        b"this is not json",
        b'{"topic":"room:x","event":"phx_join","payload":{},"ref":"1"}',
        b'["1","1","room:x","phx_join"]',
        b'["1","1",3,"phx_join",{}]',
        b'["1","1","t",null,{}]',
        b'[{},"1","t","e",{}]',
        b"",
    ],
)
def test_malformed_text_frames_raise_decode_error(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        V2.decode(frame, False)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00\x01",
        b"\x01\x00\x00\x01\x01te",
        b"\x02\x01\x01te",
        b"\x00\x05\x00\x00\x00ab",
        b"\x00\x00\x00\x02\x00\xff\xfe",
    ],
)
def test_malformed_binary_frames_raise_decode_error(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        V2.decode(frame, True)


def test_push_payload_must_be_a_dict_or_bytes() -> None:
    with pytest.raises(EncodeError, match="dict or bytes"):
        V2.encode_push("1", None, "t", "e", ["not", "a", "map"])
    with pytest.raises(EncodeError, match="dict or bytes"):
        V2.encode_broadcast(Broadcast("t", "e", "text"))


def test_binary_fields_over_255_bytes_are_refused_naming_the_field() -> None:
    with pytest.raises(EncodeError, match="topic"):
        V2.encode_push("1", None, "t" * 256, "e", b"x")
    with pytest.raises(EncodeError, match="status"):
        V2.encode_reply("1", "1", "t", "s" * 256, b"x")


def test_unencodable_payload_is_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="JSON"):
        V2.encode_push("1", None, "t", "e", {"x": object()})


# -- properties ----------------------------------------------------------------------

short_text = st.text(max_size=20)
refs = st.one_of(st.none(), st.text(max_size=10), st.integers(-(2**53), 2**53))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(refs, refs, short_text, short_text, st.dictionaries(st.text(max_size=5), json_values))
def test_text_frames_round_trip(join_ref, ref, topic, event, payload) -> None:  # type: ignore[no-untyped-def]
    data, binary = V2.encode_push(join_ref, ref, topic, event, payload)
    assert not binary
    assert V2.decode(data, False) == Message(join_ref, ref, topic, event, payload)


@given(
    st.text(max_size=30),
    st.text(max_size=30),
    st.text(max_size=60),
    st.text(max_size=60),
    st.binary(max_size=100),
)
def test_binary_pushes_round_trip(join_ref, ref, topic, event, payload) -> None:  # type: ignore[no-untyped-def]
    fields = [f.encode() for f in (join_ref, ref, topic, event)]
    if any(len(f) > 255 for f in fields):
        return
    frame = bytes((0, *map(len, fields))) + b"".join(fields) + payload
    assert V2.decode(frame, True) == Message(join_ref, ref, topic, event, payload)


@given(st.binary(max_size=300), st.booleans())
def test_arbitrary_bytes_raise_only_decode_error(data: bytes, binary: bool) -> None:
    try:
        msg = V2.decode(data, binary)
    except DecodeError:
        return
    assert isinstance(msg.topic, str) and isinstance(msg.event, str)


@given(json_values)
def test_arbitrary_json_raises_only_decode_error(value: object) -> None:
    try:
        V2.decode(orjson.dumps(value), False)
    except DecodeError:
        pass
