"""Tracker messages as plain values, so any PubSub adapter can carry them.

Trackers gossip over PubSub. The local adapter hands the values over as
they are; the Redis and NATS adapters encode them with their codec. So every
message is built from dicts, lists, str, int, float, bool and None only,
and decoding checks what arrives: a peer running another version, or a
garbled message, raises :class:`ReplicationError` and is dropped with a log
line by the tracker, never applied.

Version 1 messages (``"phx_tracker": 1``)::

    heartbeat     {type, from: [name, vsn], node, clock: CTX, delta: DELTA | None}
    transfer_req  {type, from, node, to: name, ref, clock: CTX}
    transfer_ack  {type, from, to: name, ref, delta: DELTA}  or  {..., snapshot: SNAPSHOT}
    permdown      {type, from}
    chunk         {type, from, to: name | None, id, seq, total, data: bytes}

where a replica table names each replica once and the rest refer to it by
index: ``CTX = [[name, vsn, clock], ...]``; ``DELTA = {replicas: [[name,
vsn], ...], start: [[i, clock], ...], end: [...], clouds: [[i, [dot, ...]],
...], values: [[i, topic, [[clock, owner, key, meta], ...]], ...]}``;
``SNAPSHOT`` has ``context`` instead of ``start`` and ``end``. Entries are
grouped by replica and topic, so a topic's name travels once per message.

The messages that carry entries (a heartbeat with a delta, a transfer ack)
travel as ``chunk`` messages: their JSON encoding cut into parts small
enough for any engine (see :func:`pack`), put back together on arrival.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import ReplicationError
from .clock import Context, ReplicaId
from .state import Delta, Entry, Snapshot, Tag

__all__ = [
    "VERSION",
    "Chunk",
    "Heartbeat",
    "Permdown",
    "Reassembler",
    "ReplicationError",
    "TransferAck",
    "TransferReq",
    "decode",
    "encode_heartbeat",
    "encode_permdown",
    "encode_transfer_ack",
    "encode_transfer_req",
    "pack",
]

VERSION = 1
_TAG = "phx_tracker"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    sender: ReplicaId
    node: str
    clock: Context
    delta: Delta | None


@dataclass(frozen=True, slots=True)
class TransferReq:
    sender: ReplicaId
    node: str
    to: str
    ref: int
    clock: Context


@dataclass(frozen=True, slots=True)
class TransferAck:
    sender: ReplicaId
    to: str
    ref: int
    data: Delta | Snapshot


@dataclass(frozen=True, slots=True)
class Permdown:
    sender: ReplicaId


@dataclass(frozen=True, slots=True)
class Chunk:
    """One part of a large message, sent as JSON bytes in as many parts as it takes."""

    sender: ReplicaId
    to: str | None
    ident: int
    seq: int
    total: int
    data: bytes


Message = Heartbeat | TransferReq | TransferAck | Permdown | Chunk

# -- encoding -------------------------------------------------------------------------


class _Table:
    """Replica refs to small indexes, for one message."""

    def __init__(self) -> None:
        self.index: dict[ReplicaId, int] = {}
        self.refs: list[list[Any]] = []

    def __call__(self, ref: ReplicaId) -> int:
        i = self.index.get(ref)
        if i is None:
            i = self.index[ref] = len(self.refs)
            self.refs.append([ref[0], ref[1]])
        return i


def _context(context: Context) -> list[list[Any]]:
    return [[r[0], r[1], c] for r, c in context.items()]


def _entries(table: _Table, values: dict[Tag, Entry]) -> list[list[Any]]:
    groups: dict[tuple[ReplicaId, str], list[list[Any]]] = {}
    for (replica, clock), e in values.items():
        group = groups.get((replica, e.topic))
        if group is None:
            group = groups[(replica, e.topic)] = []
        group.append([clock, e.owner, e.key, e.meta])
    return [[table(replica), topic, group] for (replica, topic), group in groups.items()]


def _body(
    table: _Table, clouds: dict[ReplicaId, set[int]], values: dict[Tag, Entry]
) -> dict[str, Any]:
    return {
        "clouds": [[table(r), sorted(cloud)] for r, cloud in clouds.items() if cloud],
        "values": _entries(table, values),
    }


def encode_delta(delta: Delta) -> dict[str, Any]:
    table = _Table()
    body = _body(table, delta.clouds, delta.values)
    body["start"] = [[table(r), c] for r, c in delta.start.items()]
    body["end"] = [[table(r), c] for r, c in delta.end.items()]
    body["replicas"] = table.refs
    return body


def encode_snapshot(snapshot: Snapshot) -> dict[str, Any]:
    table = _Table()
    body = _body(table, snapshot.clouds, snapshot.values)
    body["context"] = [[table(r), c] for r, c in snapshot.context.items()]
    body["replicas"] = table.refs
    return body


def encode_heartbeat(
    sender: ReplicaId, node: str, clock: Context, delta: Delta | None
) -> dict[str, Any]:
    return {
        _TAG: VERSION,
        "type": "heartbeat",
        "from": [sender[0], sender[1]],
        "node": node,
        "clock": _context(clock),
        "delta": None if delta is None else encode_delta(delta),
    }


def encode_transfer_req(
    sender: ReplicaId, node: str, to: str, ref: int, clock: Context
) -> dict[str, Any]:
    return {
        _TAG: VERSION,
        "type": "transfer_req",
        "from": [sender[0], sender[1]],
        "node": node,
        "to": to,
        "ref": ref,
        "clock": _context(clock),
    }


def encode_transfer_ack(
    sender: ReplicaId, to: str, ref: int, data: Delta | Snapshot
) -> dict[str, Any]:
    message: dict[str, Any] = {
        _TAG: VERSION,
        "type": "transfer_ack",
        "from": [sender[0], sender[1]],
        "to": to,
        "ref": ref,
    }
    if type(data) is Delta:
        message["delta"] = encode_delta(data)
    else:
        assert type(data) is Snapshot
        message["snapshot"] = encode_snapshot(data)
    return message


def encode_permdown(sender: ReplicaId) -> dict[str, Any]:
    return {_TAG: VERSION, "type": "permdown", "from": [sender[0], sender[1]]}


def carries_state(message: dict[str, Any]) -> bool:
    """Whether a message carries entries (and so can be large): those travel as chunks."""
    kind = message["type"]
    return kind == "transfer_ack" or (kind == "heartbeat" and message["delta"] is not None)


def pack(message: dict[str, Any], sender: ReplicaId, ident: int, size: int) -> list[dict[str, Any]]:
    """``message`` as JSON bytes cut in parts of at most ``size`` bytes.

    Cluster engines cap a message's size (NATS: 1 MiB by default), and a
    heartbeat after a burst of joins, or the whole state sent to a new
    node, can be many megabytes. Every part is a plain message of its own;
    the receiver puts them together (:class:`Reassembler`).
    """
    data = orjson.dumps(message)
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    to = message.get("to")
    return [
        {
            _TAG: VERSION,
            "type": "chunk",
            "from": [sender[0], sender[1]],
            "to": to,
            "id": ident,
            "seq": seq,
            "total": len(parts),
            "data": part,
        }
        for seq, part in enumerate(parts)
    ]


class Reassembler:
    """Puts chunked messages back together, within bounds.

    At most ``max_messages`` incomplete messages and ``max_bytes`` of parts
    are held; beyond either, the oldest incomplete message is dropped (its
    sender's next heartbeat or a transfer repairs what it carried).
    """

    def __init__(self, max_messages: int = 16, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._pending: dict[tuple[ReplicaId, int], dict[int, bytes]] = {}
        self._done: dict[
            tuple[ReplicaId, int], None
        ] = {}  # recent complete ones: ignore late copies
        self._bytes = 0
        self.dropped = 0

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def add(self, chunk: Chunk) -> dict[str, Any] | None:
        """Store a part; the whole message (decoded JSON) once every part is there."""
        if chunk.total == 1:
            return self._load(chunk.data)
        key = (chunk.sender, chunk.ident)
        if key in self._done:
            return None
        parts = self._pending.get(key)
        if parts is None:
            while self._pending and len(self._pending) >= self.max_messages:
                self._drop_oldest()
            parts = self._pending[key] = {}
        if chunk.seq not in parts:
            parts[chunk.seq] = chunk.data
            self._bytes += len(chunk.data)
        while self._bytes > self.max_bytes and self._pending:
            self._drop_oldest()
        if key in self._pending and len(parts) == chunk.total:
            del self._pending[key]
            self._done[key] = None
            if len(self._done) > 256:
                del self._done[next(iter(self._done))]
            self._bytes -= sum(len(p) for p in parts.values())
            return self._load(b"".join(parts[i] for i in range(chunk.total)))
        return None

    def _drop_oldest(self) -> None:
        key = next(iter(self._pending))
        self._bytes -= sum(len(p) for p in self._pending.pop(key).values())
        self.dropped += 1

    @staticmethod
    def _load(data: bytes) -> dict[str, Any]:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise _fail(f"a chunked message is not JSON: {exc}") from None
        if not isinstance(message, dict):
            raise _fail("a chunked message is not a map")
        return message


# -- decoding ---------------------------------------------------------------------------


def _fail(what: str) -> ReplicationError:
    return ReplicationError(f"bad tracker message: {what}")


def _seq(value: Any, what: str) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise _fail(f"{what} must be a list, got {type(value).__name__}")
    return value


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _fail(f"{what} must be a non-negative int, got {value!r}")
    return value


def _str(value: Any, what: str) -> str:
    if type(value) is not str:
        raise _fail(f"{what} must be a str, got {type(value).__name__}")
    return value


def _ref(value: Any, what: str) -> ReplicaId:
    pair = _seq(value, what)
    if len(pair) != 2:
        raise _fail(f"{what} must be [name, vsn]")
    return (_str(pair[0], f"{what} name"), _int(pair[1], f"{what} vsn"))


def _decode_context(value: Any) -> Context:
    context: Context = {}
    for item in _seq(value, "clock"):
        triple = _seq(item, "clock entry")
        if len(triple) != 3:
            raise _fail("clock entries must be [name, vsn, clock]")
        context[(_str(triple[0], "clock name"), _int(triple[1], "clock vsn"))] = _int(
            triple[2], "clock"
        )
    return context


def _key(value: Any) -> Hashable:
    if type(value) is str or type(value) is int:
        return value
    raise _fail(f"a key must be a str or an int, got {type(value).__name__}")


def _decode_body(body: Any, kind: str) -> tuple[list[ReplicaId], dict[str, Any]]:
    if not isinstance(body, dict):
        raise _fail(f"{kind} must be a map")
    refs = [_ref(r, "replica") for r in _seq(body.get("replicas"), "replicas")]
    return refs, body


def _lookup(refs: list[ReplicaId], index: Any) -> ReplicaId:
    i = _int(index, "replica index")
    if i >= len(refs):
        raise _fail(f"replica index {i} out of range")
    return refs[i]


def _pairs(refs: list[ReplicaId], value: Any, what: str) -> Context:
    out: Context = {}
    for item in _seq(value, what):
        pair = _seq(item, what)
        if len(pair) != 2:
            raise _fail(f"{what} entries must be [replica index, clock]")
        out[_lookup(refs, pair[0])] = _int(pair[1], what)
    return out


def _clouds(refs: list[ReplicaId], value: Any) -> dict[ReplicaId, set[int]]:
    clouds: dict[ReplicaId, set[int]] = {}
    for item in _seq(value, "clouds"):
        pair = _seq(item, "cloud")
        if len(pair) != 2:
            raise _fail("clouds entries must be [replica index, [dot, ...]]")
        clouds[_lookup(refs, pair[0])] = {_int(d, "dot") for d in _seq(pair[1], "dots")}
    return clouds


def _values(refs: list[ReplicaId], value: Any) -> dict[Tag, Entry]:
    values: dict[Tag, Entry] = {}
    for group in _seq(value, "values"):
        triple = _seq(group, "values group")
        if len(triple) != 3:
            raise _fail("values groups must be [replica index, topic, entries]")
        replica = _lookup(refs, triple[0])
        topic = _str(triple[1], "topic")
        for item in _seq(triple[2], "entries"):
            fields = _seq(item, "entry")
            if len(fields) != 4:
                raise _fail("entries must be [clock, owner, key, meta]")
            clock = _int(fields[0], "entry clock")
            owner = fields[1]
            if isinstance(owner, list):  # a codec may turn tuples into lists
                owner = tuple(owner)
            meta = fields[3]
            if not isinstance(meta, dict):
                raise _fail("an entry's meta must be a map")
            values[(replica, clock)] = Entry(topic, owner, _key(fields[2]), meta, replica, clock)
    return values


def decode_delta(body: Any) -> Delta:
    refs, body = _decode_body(body, "delta")
    return Delta(
        _pairs(refs, body.get("start"), "start"),
        _pairs(refs, body.get("end"), "end"),
        _clouds(refs, body.get("clouds")),
        _values(refs, body.get("values")),
    )


def decode_snapshot(body: Any) -> Snapshot:
    refs, body = _decode_body(body, "snapshot")
    return Snapshot(
        _pairs(refs, body.get("context"), "context"),
        _clouds(refs, body.get("clouds")),
        _values(refs, body.get("values")),
    )


def is_tracker_message(message: Any) -> bool:
    return isinstance(message, dict) and _TAG in message


def decode(message: Any) -> Message:
    """A received tracker message, checked; raises :class:`ReplicationError`."""
    if not isinstance(message, dict):
        raise _fail(f"expected a map, got {type(message).__name__}")
    version = message.get(_TAG)
    if version != VERSION:
        raise _fail(f"version {version!r}, this node speaks {VERSION}")
    kind = message.get("type")
    sender = _ref(message.get("from"), "from")
    try:
        if kind == "heartbeat":
            delta = message.get("delta")
            return Heartbeat(
                sender,
                _str(message.get("node"), "node"),
                _decode_context(message.get("clock")),
                None if delta is None else decode_delta(delta),
            )
        if kind == "transfer_req":
            return TransferReq(
                sender,
                _str(message.get("node"), "node"),
                _str(message.get("to"), "to"),
                _int(message.get("ref"), "ref"),
                _decode_context(message.get("clock")),
            )
        if kind == "transfer_ack":
            to = _str(message.get("to"), "to")
            ref = _int(message.get("ref"), "ref")
            if "delta" in message:
                return TransferAck(sender, to, ref, decode_delta(message["delta"]))
            return TransferAck(sender, to, ref, decode_snapshot(message.get("snapshot")))
        if kind == "permdown":
            return Permdown(sender)
        if kind == "chunk":
            target = message.get("to")
            data = message.get("data")
            if not isinstance(data, bytes | bytearray):
                raise _fail("chunk data must be bytes")
            total = _int(message.get("total"), "total")
            seq = _int(message.get("seq"), "seq")
            if not 0 <= seq < total:
                raise _fail(f"chunk {seq} of {total}")
            return Chunk(
                sender,
                None if target is None else _str(target, "to"),
                _int(message.get("id"), "id"),
                seq,
                total,
                bytes(data),
            )
    except (TypeError, ValueError) as exc:  # e.g. an unhashable owner
        raise _fail(str(exc)) from exc
    raise _fail(f"unknown type {kind!r}")
