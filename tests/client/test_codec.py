"""The client codecs against recorded Phoenix frames and against the server's serializers.

The server's serializers decode client frames and encode server frames; the
client's do the reverse. Each direction is checked both ways: what the client
encodes, the server decodes to the same values, and what the server encodes,
the client decodes to the same values (property tests), plus the exact bytes
the official JS client and Phoenix put on the wire (tests/client/transcripts, copied
from the spec's recordings).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phoenix_channels import Broadcast, ConfigurationError, DecodeError, EncodeError, Message
from phoenix_channels.client.codec import V1_CODEC, V2_CODEC, codec_for
from phoenix_channels.protocol import V1, V2

# Copies of the spec's WebSocket transcripts (recorded against Phoenix 1.8 and npm phoenix 1.8.16).
TRANSCRIPTS = Path(__file__).parent / "transcripts"
LINE = re.compile(r"^\[\s*\d+ms\] ([A-Z])([<>]) (.*)$")


def frames(name: str, direction: str) -> list[tuple[bytes, bool]]:
    """The frames of one transcript going ``direction`` (``<`` server to client)."""
    found = []
    for line in (TRANSCRIPTS / name).read_text().splitlines():
        match = LINE.match(line)
        if match is None or match[2] != direction:
            continue
        text = match[3]
        if text.startswith("BIN("):
            found.append((bytes.fromhex(text.split("hex=")[1]), True))
        else:
            found.append((text.encode(), False))
    return found


V2_TRANSCRIPTS = [f"{n:02d}_" for n in range(2, 13)]


def transcript(prefix: str) -> str:
    return next(p.name for p in TRANSCRIPTS.glob(prefix + "*.txt"))


# -- golden frames ----------------------------------------------------------------------


@pytest.mark.parametrize("prefix", V2_TRANSCRIPTS)
def test_every_server_frame_of_the_v2_transcripts_decodes(prefix: str) -> None:
    server_frames = frames(transcript(prefix), "<")
    assert server_frames, "the transcript has server frames"
    for data, binary in server_frames:
        message = V2_CODEC.decode(data, binary)
        if not binary:
            join_ref, ref, topic, event, payload = orjson.loads(data)
            assert message == Message(join_ref, ref, topic, event, payload)


@pytest.mark.parametrize("prefix", V2_TRANSCRIPTS)
def test_client_frames_of_the_js_client_are_reproduced_byte_for_byte(prefix: str) -> None:
    for data, binary in frames(transcript(prefix), ">"):
        sent = V2.decode(data, binary)  # the server's reading of what the JS client sent
        prepared = V2_CODEC.prepare(sent.topic, sent.event, sent.payload)
        assert V2_CODEC.encode(sent.join_ref, sent.ref, sent.topic, sent.event, prepared) == (
            data,
            binary,
        )


def test_binary_frames_from_the_spec() -> None:
    # Phoenix's own serializer examples (wire-protocol.md 4.2)
    assert V2_CODEC.decode(b"\x00\x02\x05\x0512topiceventefg", True) == Message(
        "12", None, "topic", "event", b"efg"
    )
    assert V2_CODEC.decode(b"\x01\x02\x03\x05\x0212123topicokefg", True) == Message(
        "12", "123", "topic", "phx_reply", {"status": "ok", "response": b"efg"}
    )
    assert V2_CODEC.decode(b"\x02\x05\x05topiceventefg", True) == Message(
        None, None, "topic", "event", b"efg"
    )
    prepared = V2_CODEC.prepare("topic", "event", b"efg")
    assert V2_CODEC.encode("12", "123", "topic", "event", prepared) == (
        b"\x00\x02\x03\x05\x0512123topiceventefg",
        True,
    )
    # npm phoenix 1.8.16: join_ref "3", ref "8", "room:lobby", "upload", bytes 01 02
    upload = V2_CODEC.prepare("room:lobby", "upload", bytearray(b"\x01\x02"))
    assert V2_CODEC.encode("3", "8", "room:lobby", "upload", upload)[0] == bytes.fromhex(
        "0001010a063338726f6f6d3a6c6f62627975706c6f61640102"
    )


def test_v1_frames_from_transcript_13() -> None:
    for data, binary in frames(transcript("13_"), "<"):
        value = orjson.loads(data)
        assert V1_CODEC.decode(data, binary) == Message(
            None, value["ref"], value["topic"], value["event"], value["payload"]
        )
    for data, _ in frames(transcript("13_"), ">"):
        sent = V1.decode(data, False)
        prepared = V1_CODEC.prepare(sent.topic, sent.event, sent.payload)
        ours, binary = V1_CODEC.encode("9", sent.ref, sent.topic, sent.event, prepared)
        assert not binary
        expected = Message("9", sent.ref, sent.topic, sent.event, sent.payload)
        assert V1.decode(ours, False) == expected


# -- both directions against the server's serializers --------------------------------------

refs = st.none() | st.integers(min_value=0, max_value=10**12).map(str)
names = st.text(min_size=1, max_size=40)
short_names = st.text(min_size=1, max_size=20)  # <= 255 bytes even at 4 bytes a character
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


@given(refs, refs, names, names, json_values)
def test_what_the_client_sends_the_server_reads_v2(
    join_ref: Any, ref: Any, topic: str, event: str, payload: Any
) -> None:
    data, binary = V2_CODEC.encode(
        join_ref, ref, topic, event, V2_CODEC.prepare(topic, event, payload)
    )
    assert V2.decode(data, binary) == Message(join_ref, ref, topic, event, payload)


@given(
    st.integers(1, 10**9).map(str),
    st.integers(1, 10**9).map(str),
    short_names,
    short_names,
    st.binary(max_size=300),
)
def test_binary_pushes_the_server_reads(
    join_ref: str, ref: str, topic: str, event: str, payload: bytes
) -> None:
    data, binary = V2_CODEC.encode(
        join_ref, ref, topic, event, V2_CODEC.prepare(topic, event, payload)
    )
    assert binary
    assert V2.decode(data, True) == Message(join_ref, ref, topic, event, payload)


@given(refs, refs, short_names, short_names, payloads | st.binary(max_size=300))
def test_what_the_server_sends_the_client_reads_v2(
    join_ref: Any, ref: Any, topic: str, event: str, payload: Any
) -> None:
    data, binary = V2.encode_push(join_ref, None, topic, event, payload)
    assert V2_CODEC.decode(data, binary) == Message(join_ref, None, topic, event, payload)
    data, binary = V2.encode_broadcast(Broadcast(topic, event, payload))
    assert V2_CODEC.decode(data, binary) == Message(None, None, topic, event, payload)
    data, binary = V2.encode_reply(join_ref, ref, topic, event, payload)  # event as status
    assert V2_CODEC.decode(data, binary) == Message(
        join_ref, ref, topic, "phx_reply", {"status": event, "response": payload}
    )


@given(refs, refs, names, names, json_values)
def test_both_directions_v1(join_ref: Any, ref: Any, topic: str, event: str, payload: Any) -> None:
    data, _ = V1_CODEC.encode(join_ref, ref, topic, event, V1_CODEC.prepare(topic, event, payload))
    assert V1.decode(data, False) == Message(join_ref, ref, topic, event, payload)
    data, _ = V1.encode_push(join_ref, None, topic, event, payload)
    assert V1_CODEC.decode(data, False) == Message(None, None, topic, event, payload)
    data, _ = V1.encode_reply(join_ref, ref, topic, "ok", payload)
    assert V1_CODEC.decode(data, False) == Message(
        None, ref, topic, "phx_reply", {"status": "ok", "response": payload}
    )


@given(st.binary(max_size=40))
def test_any_binary_frame_decodes_or_raises_decode_error(data: bytes) -> None:
    try:
        message = V2_CODEC.decode(data, True)
    except DecodeError:
        return
    assert isinstance(message.payload, bytes | dict)


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "binary", "problem"),
    [
        (b"not json", False, "not valid JSON"),
        (b'{"topic":"t"}', False, "JSON array"),
        (b'[null,null,"t","e"]', False, "JSON array"),
        (b'[null,null,1,"e",{}]', False, "must be strings"),
        (b'[{},null,"t","e",{}]', False, "strings, numbers or null"),
        (b"", True, "empty binary frame"),
        (b"\x07abc", True, "kind 7"),
        (b"\x02\x05", True, "shorter than its header"),
        (b"\x02\x09\x05topicevent", True, "shorter than its header says"),
        (b"\x02\x01\x01\xff\xfe", True, "not valid UTF-8"),
    ],
)
def test_malformed_server_frames_raise_decode_error(
    data: bytes, binary: bool, problem: str
) -> None:
    with pytest.raises(DecodeError, match=problem):
        V2_CODEC.decode(data, binary)


def test_v1_rejects_what_it_cannot_carry() -> None:
    with pytest.raises(EncodeError, match="cannot carry binary"):
        V1_CODEC.prepare("t", "e", b"\x00")
    with pytest.raises(DecodeError, match=r"not part of protocol version 1\.0\.0"):
        V1_CODEC.decode(b"\x00", True)
    with pytest.raises(DecodeError, match="missing ref"):
        V1_CODEC.decode(b'{"topic":"t","event":"e","payload":{}}', False)
    with pytest.raises(DecodeError, match="JSON object"):
        V1_CODEC.decode(b"[1]", False)


def test_payloads_that_cannot_be_encoded_fail_when_prepared() -> None:
    with pytest.raises(EncodeError, match="cannot be encoded as JSON"):
        V2_CODEC.prepare("t", "e", {"when": object()})
    with pytest.raises(EncodeError, match="topic is 256 bytes"):
        V2_CODEC.prepare("t" * 256, "e", b"")
    with pytest.raises(EncodeError, match="event is 300 bytes"):
        V2_CODEC.prepare("t", "é" * 150, b"")
    # JSON pushes have no such limit
    assert V2_CODEC.prepare("t" * 256, "e", {})[1] is False


def test_codec_for_vsn() -> None:
    assert codec_for("2.0.0") is V2_CODEC
    assert codec_for("1.0.0") is V1_CODEC
    with pytest.raises(ConfigurationError, match=r"unsupported vsn '3\.0\.0'"):
        codec_for("3.0.0")
