"""WebSocket framing without I/O: parsing, building, negotiation, refusals."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phoenix_channels import WebSocketError
from phoenix_channels.transports.rfc6455 import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    Deflate,
    FrameParser,
    accept_key,
    encode_frame,
    negotiate_deflate,
    parse_request,
)

from ..trust.wire import frame


def client_frame(
    opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False, masked: bool = True
) -> bytes:
    return frame(opcode, payload, fin=fin, rsv=4 if rsv1 else 0, masked=masked)


def test_accept_key_from_rfc6455() -> None:
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_server_frames_use_the_three_length_forms() -> None:
    assert encode_frame(OP_TEXT, b"hi") == b"\x81\x02hi"
    assert encode_frame(OP_BINARY, b"x" * 200)[:4] == b"\x82\x7e\x00\xc8"
    assert encode_frame(OP_TEXT, b"x" * 70000)[:10] == b"\x81\x7f" + struct.pack("!Q", 70000)
    assert encode_frame(OP_TEXT, b"z", rsv1=True)[0] == 0xC1


def test_messages_split_anywhere_are_reassembled() -> None:
    data = (
        client_frame(OP_TEXT, b"hello")
        + client_frame(OP_BINARY, b"x" * 70000)
        + client_frame(OP_TEXT, "é".encode()[:1], fin=False)
        + client_frame(OP_PING, b"p")
        + client_frame(0, "é".encode()[1:])
    )
    for step in (1, 7, 1000, len(data)):
        parser = FrameParser(10**6)
        out = []
        for i in range(0, len(data), step):
            out += parser.feed(data[i : i + step])
        assert out == [
            (OP_TEXT, b"hello"),
            (OP_BINARY, b"x" * 70000),
            (OP_PING, b"p"),
            (OP_TEXT, "é".encode()),
        ]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (client_frame(OP_TEXT, b"a", masked=False), 1002),
        (client_frame(OP_TEXT, b"a", rsv1=True), 1002),
        (client_frame(0x3, b"a"), 1002),
        (client_frame(OP_PING, b"a", fin=False), 1002),
        (client_frame(OP_PING, b"a" * 126), 1002),
        (client_frame(0, b"a"), 1002),
        (client_frame(OP_TEXT, b"\xff\xfe"), 1007),
        (client_frame(OP_CLOSE, b"\x03"), 1002),
        (client_frame(OP_CLOSE, struct.pack("!H", 1005)), 1002),
        (client_frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),
        (client_frame(OP_BINARY, b"x" * 101), 1009),
        (client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"), 1002),
    ],
)
def test_protocol_violations_carry_their_close_code(frame: bytes, code: int) -> None:
    with pytest.raises(WebSocketError) as info:
        FrameParser(100).feed(frame)
    assert info.value.code == code


def test_fragments_count_against_the_size_limit() -> None:
    parser = FrameParser(100)
    parser.feed(client_frame(OP_TEXT, b"a" * 60, fin=False))
    with pytest.raises(WebSocketError) as info:
        parser.feed(client_frame(0, b"a" * 60))
    assert info.value.code == 1009


def test_deflate_negotiation() -> None:
    assert negotiate_deflate(None) is None
    assert negotiate_deflate("x-webkit-deflate-frame") is None
    chosen = negotiate_deflate("permessage-deflate; client_max_window_bits")
    assert chosen is not None and chosen.wbits == 15
    assert "server_no_context_takeover" in chosen.response
    assert "client_no_context_takeover" in chosen.response
    narrow = negotiate_deflate("permessage-deflate; server_max_window_bits=10")
    assert narrow is not None and narrow.wbits == 10
    assert narrow.response.endswith("server_max_window_bits=10")
    assert negotiate_deflate("permessage-deflate; server_max_window_bits=8") is None
    assert negotiate_deflate("permessage-deflate; bogus=1, permessage-deflate") is not None


def test_compressed_messages_round_trip_and_are_bounded() -> None:
    deflate = Deflate(15, "")
    text = b"phoenix channels " * 100
    compressed = deflate.compress(text)
    assert len(compressed) < len(text)
    # each message stands alone (no context takeover): a fresh inflater reads it
    assert zlib.decompressobj(-15).decompress(compressed + b"\x00\x00\xff\xff") == text
    assert deflate.compress(text) == compressed
    parser = FrameParser(10_000, deflate)
    assert parser.feed(client_frame(OP_TEXT, compressed, rsv1=True)) == [(OP_TEXT, text)]
    with pytest.raises(WebSocketError) as info:
        FrameParser(100, deflate).feed(client_frame(OP_TEXT, compressed, rsv1=True))
    assert info.value.code == 1009


def test_request_heads() -> None:
    method, target, headers = parse_request(
        b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n\r\n"
    )
    assert (method, target) == ("GET", "/socket/websocket?vsn=2.0.0")
    assert headers == [(b"host", b"x"), (b"upgrade", b"WebSocket")]
    with pytest.raises(WebSocketError):
        parse_request(b"nonsense\r\n\r\n")


@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_websocket_error(data: bytes) -> None:
    parser = FrameParser(1000, Deflate(15, ""))
    try:
        for i in range(0, len(data), 37):
            for opcode, payload in parser.feed(data[i : i + 37]):
                assert opcode in (OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, 0xA)
                assert isinstance(payload, bytes)
    except WebSocketError as exc:
        assert exc.code in (1002, 1007, 1009)


@given(
    st.lists(st.tuples(st.sampled_from([OP_TEXT, OP_BINARY]), st.binary(max_size=300)), max_size=5),
    st.integers(1, 50),
)
def test_any_sequence_of_messages_round_trips(messages: list[tuple[int, bytes]], step: int) -> None:
    messages = [
        (op, p.decode("utf-8", "replace").encode() if op == OP_TEXT else p) for op, p in messages
    ]
    data = b"".join(client_frame(op, p) for op, p in messages)
    parser = FrameParser(10_000)
    out = []
    for i in range(0, len(data), step):
        out += parser.feed(data[i : i + step])
    assert out == messages


def test_frames_before_a_violation_are_delivered_and_later_input_ignored() -> None:
    # Autobahn 3.2, 4.1.3, 5.15: a good message, then a bad frame, in one read.
    from phoenix_channels.transports.rfc6455 import FrameError

    parser = FrameParser(1000)
    data = client_frame(OP_TEXT, b"good") + client_frame(OP_TEXT, b"bad", rsv1=True)
    with pytest.raises(FrameError) as info:
        parser.feed(data + client_frame(OP_PING, b"after"))
    assert info.value.code == 1002 and info.value.frames == [(OP_TEXT, b"good")]
    assert parser.feed(client_frame(OP_TEXT, b"more")) == []  # the stream is lost


def test_fragmented_text_fails_at_the_fragment_that_breaks_utf8() -> None:
    # Autobahn 6.4.1/6.4.2: fail fast, before the message's last fragment arrives.
    parser = FrameParser(1000)
    assert parser.feed(client_frame(OP_TEXT, "κόσμε".encode(), fin=False)) == []
    with pytest.raises(WebSocketError) as info:
        parser.feed(
            client_frame(
                0, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80", fin=False
            )
        )
    assert info.value.code == 1007
    # a character split across fragments is fine
    parser = FrameParser(1000)
    encoded = "é".encode()
    assert parser.feed(client_frame(OP_TEXT, encoded[:1], fin=False)) == []
    assert parser.feed(client_frame(0, encoded[1:])) == [(OP_TEXT, encoded)]
    # and an unfinished character at the end of the message is not
    with pytest.raises(WebSocketError) as info:
        FrameParser(1000).feed(client_frame(OP_TEXT, b"a", fin=False) + client_frame(0, b"\xc3"))
    assert info.value.code == 1007


def test_invalid_utf8_fails_before_the_rest_of_its_frame_arrives() -> None:
    # Autobahn 6.4.3/6.4.4: one text frame, delivered in pieces.
    payload = "κόσμε".encode() + b"\xed\xa0\x80" + b"edited" * 10
    data = client_frame(OP_TEXT, payload)
    parser = FrameParser(1000)
    bad_at = len(data) - len(payload) + len("κόσμε".encode()) + 1
    assert parser.feed(data[: bad_at - 1]) == []
    with pytest.raises(WebSocketError) as info:
        parser.feed(data[bad_at - 1 : bad_at + 2])  # the frame is far from complete
    assert info.value.code == 1007


@given(st.binary(max_size=60), st.booleans(), st.integers(1, 9))
def test_utf8_is_judged_the_same_however_the_bytes_arrive(
    payload: bytes, fragmented: bool, step: int
) -> None:
    if fragmented:
        cut = len(payload) // 2
        data = client_frame(OP_TEXT, payload[:cut], fin=False) + client_frame(0, payload[cut:])
    else:
        data = client_frame(OP_TEXT, payload)
    try:
        payload.decode()
        valid = True
    except UnicodeDecodeError:
        valid = False
    parser = FrameParser(1000)
    out = []
    try:
        for i in range(0, len(data), step):
            out += parser.feed(data[i : i + step])
    except WebSocketError as exc:
        assert not valid and exc.code == 1007
    else:
        assert valid and out == [(OP_TEXT, payload)]
