"""JSON encoding shared by the serializers, and the one rule for what a payload may hold.

A payload sent to clients (a push, a reply, a broadcast) may hold dicts with
``str`` keys, lists and tuples (sent as lists), ``str``, ``int`` (64-bit),
``float``, ``bool`` and ``None``, and subclasses of those (an ``IntEnum``, a
``StrEnum``); a whole payload may be ``bytes`` (a binary frame). The same
rule holds on one node, across a cluster (Redis, NATS) and in
``ChannelTest``, so a value that would break in production breaks in the
first test.

orjson would turn a ``datetime`` or a dataclass into JSON by itself, which
works on one node and then fails on the cluster's codec; the passthrough
options below hand those to :func:`_refuse` instead, so the check costs
nothing on the hot path: it is the encoding that happens anyway. Only when
it fails is the payload walked, to name the offending value's path.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import uuid
from typing import Any

import orjson

from ..errors import EncodeError

__all__ = ["check", "dumps", "unencodable"]

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson encodes


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def dumps(value: Any, payload: Any = None, name: str = "payload") -> bytes:
    """JSON of a frame ``value``; when it fails, the error names the path in ``payload``."""
    try:
        return orjson.dumps(value, default=_refuse, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError subclasses TypeError
        raise EncodeError(_explain(value if payload is None else payload, name)) from None


def check(payload: Any, name: str = "payload") -> None:
    """Raise :class:`EncodeError` naming the first value of ``payload`` clients cannot get."""
    try:
        orjson.dumps(payload, default=_refuse, option=_OPTIONS)
    except TypeError:
        raise EncodeError(_explain(payload, name)) from None


def _explain(value: Any, name: str) -> str:
    found = unencodable(value, name)
    if found is None:  # pragma: no cover - orjson refused something the walk accepts
        return f"{name} cannot be encoded as JSON"
    path, reason = found
    return f"{path}: {reason}"


def _hint(value: Any) -> str:
    kind = type(value).__name__
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return f"{kind} is not JSON-encodable; send d.isoformat()"
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return f"{kind} is not JSON-encodable; send str(value)"
    if isinstance(value, set | frozenset):
        return f"{kind} is not JSON-encodable; send a list (sorted(s))"
    if isinstance(value, bytes | bytearray | memoryview):
        return (
            f"{kind} inside a JSON payload is not encodable; only a whole payload may be "
            "bytes (a binary frame): send base64 text here"
        )
    if dataclasses.is_dataclass(value):
        return f"{kind} (a dataclass) is not JSON-encodable; send dataclasses.asdict(value)"
    if isinstance(value, enum.Enum):
        return f"{kind} (an Enum) is not JSON-encodable; send value.value"
    return (
        f"{kind} is not JSON-encodable; send dict, list, str, int, float, bool or None "
        "(convert it first)"
    )


def unencodable(value: Any, path: str = "payload") -> tuple[str, str] | None:
    """The path of the first value clients cannot receive in ``value``, and why; None if all can."""
    if value is None or isinstance(value, str | bool | float):
        return None
    if isinstance(value, int):
        if _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            return None
        return path, "an int beyond 64 bits is not JSON-encodable; send str(n)"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                kind = type(key).__name__
                return path, f"key {key!r} ({kind}) is not a str; JSON keys must be str"
            found = unencodable(item, f"{path}[{orjson.dumps(key).decode()}]")
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = unencodable(item, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    if isinstance(value, uuid.UUID | enum.Enum):
        # orjson encodes these by itself (as str / the member's value), and so
        # the cluster codec does too; see pubsub/codec.py.
        return None
    return path, _hint(value)
