"""JSON encoding shared by the serializers: compact, UTF-8, errors mapped to EncodeError."""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import EncodeError


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError subclasses TypeError
        raise EncodeError(f"payload cannot be encoded as JSON: {exc}") from None
