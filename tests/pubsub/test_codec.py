"""The node-to-node message format: exact round trips, a pinned layout, and hostile bytes."""

from __future__ import annotations

import collections
import enum
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_channels import Broadcast, EncodeError
from phoenix_channels.pubsub import codec

ME = b"node-b"
SENDER = b"node-a"

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
keys = st.none() | st.booleans() | st.integers() | st.text() | st.binary()


def _values() -> st.SearchStrategy[object]:
    def extend(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
        return (
            st.lists(children, max_size=5)
            | st.lists(children, max_size=5).map(tuple)
            | st.dictionaries(keys | st.tuples(keys, keys), children, max_size=5)
            | st.builds(Broadcast, st.text(), st.text(), st.dictionaries(st.text(), children))
            | st.builds(Broadcast, st.text(), st.text(), st.binary())
        )

    return st.recursive(scalars, extend, max_leaves=30)


def roundtrip(message: object, topic: str = "room:1") -> object:
    decoded = codec.decode(codec.encode(codec.BROADCAST, SENDER, topic, message), ME)
    assert decoded is not None
    assert decoded[0] == topic
    return decoded[1]


def same(a: object, b: object) -> bool:
    """Equal, and of exactly the same types all the way down (1 == 1.0 == True is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)  # type: ignore[attr-defined,index]
    if isinstance(a, Broadcast):
        return a.topic == b.topic and a.event == b.event and same(a.payload, b.payload)  # type: ignore[attr-defined]
    return a == b


@settings(max_examples=300, deadline=None)
@given(_values())
def test_every_plain_value_and_broadcast_comes_back_exactly(message: object) -> None:
    assert same(roundtrip(message), message)


def test_bytes_stay_bytes_and_broadcast_stays_broadcast() -> None:
    message = Broadcast("room:1", "file", b"\x00\xff binary")
    back = roundtrip(message)
    assert type(back) is Broadcast and back == message and type(back.payload) is bytes


def test_what_json_would_lose_survives() -> None:
    # A presence-style delta: tuple keys, int keys, bytes, big clocks.
    delta = {
        "joins": {("node-a", 1): [b"ref", {"online_at": 1_700_000_000_123}]},
        7: None,
        "clock": 2**70,
        "pair": (1, "a"),
    }
    assert same(roundtrip(delta), delta)


def test_subclasses_of_plain_types_travel_as_the_base_type() -> None:
    class Color(enum.IntEnum):
        RED = 1

    class Kind(enum.StrEnum):
        A = "a"

    back = roundtrip({"c": Color.RED, "k": Kind.A, "od": collections.OrderedDict(x=1)})
    assert same(back, {"c": 1, "k": "a", "od": {"x": 1}})


@pytest.mark.parametrize("value", [{1, 2}, object(), 1j, frozenset()])
def test_other_types_are_refused_not_pickled(value: object) -> None:
    with pytest.raises(
        EncodeError, match=rf"a builtins\.{type(value).__qualname__} cannot be sent"
    ):
        codec.encode(codec.BROADCAST, SENDER, "t", {"nested": [value]})


def test_the_layout_is_pinned() -> None:
    # version 1 | kind 0 | len 6 | "node-a" | msgpack ["t", ext1(["t", "e", {"k": b"v"}])]
    data = codec.encode(codec.BROADCAST, SENDER, "t", Broadcast("t", "e", {"k": b"v"}))
    assert data == (b"\x01\x00\x06node-a\x92\xa1t\xc7\x0b\x01\x93\xa1t\xa1e\x81\xa1k\xc4\x01v")
    assert len(data) < len(pickle.dumps(("t", Broadcast("t", "e", {"k": b"v"}))))


def test_own_broadcast_is_dropped_without_decoding_the_body() -> None:
    own = bytes((codec.VERSION, codec.BROADCAST, len(ME))) + ME + b"\xc1 not msgpack"
    assert codec.decode(own, ME) is None


def test_direct_message_reaches_only_its_target() -> None:
    data = codec.encode(codec.DIRECT, ME, "t", "hello")
    assert codec.decode(data, ME) == ("t", "hello")
    assert codec.decode(data, b"node-c") is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (b"\x02\x00\x00\x92\xa1t\xc0", "version 2, this node reads version 1"),
        (b"\x01\x07\x00\x92\xa1t\xc0", "unknown message kind 7"),
        (b"\x01\x00\x09abc", "node name runs past the end"),
        (b"\x01\x00\x00\xc1", "undecodable body"),
        (b"\x01\x00\x00\x92\xa1t\xc0\xc0", "undecodable body"),  # trailing data
        (b"\x01\x00\x00\x93\xa1t\xc0\xc0", "must be \\[topic, message\\]"),
        (b"\x01\x00\x00\x92\x01\xc0", "must be \\[topic, message\\]"),
        (b"\x01\x00\x00\x92\xa1t\xc7\x01\x09\x00", "unknown extension type 9"),
        (b"\x01\x00\x00\x92\xa1t\xc7\x02\x01\x91\x01", "a Broadcast must be"),
        (b"\x01\x00\x00\x92\xa1t\xc7\x04\x01\x93\x01\x02\x03", "topic and event must be str"),
        (b"\x01\x00\x00\x92\xa2\xff\xfe\xc0", "undecodable body"),  # invalid UTF-8
        (b"\x01\x00\x00\x92\xa1t\x81\x91\x01\xc0", "undecodable body"),  # list as a map key
    ],
)
def test_malformed_messages_raise_one_error_type(data: bytes, reason: str) -> None:
    with pytest.raises(codec.MalformedMessage, match=reason):
        codec.decode(data, ME)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    for candidate in (data, b"\x01\x00\x00" + data, b"\x01\x01\x06node-b" + data):
        try:
            codec.decode(candidate, ME)
        except codec.MalformedMessage:
            pass


def test_deep_nesting_is_malformed_not_a_crash() -> None:
    deep = b"\x01\x00\x00\x92\xa1t" + b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(codec.MalformedMessage):
        codec.decode(deep, ME)


def test_node_names_are_limited_to_255_bytes() -> None:
    with pytest.raises(EncodeError, match="at most 255"):
        codec.encode(codec.BROADCAST, b"x" * 256, "t", None)
