"""Checks on values before they are encoded (no I/O): what a broadcast payload may be."""

from __future__ import annotations

from typing import Any

from ..errors import EncodeError
from ._json import check as check_json

__all__ = ["check_payload"]


def check_payload(payload: Any) -> None:
    """Broadcast payloads must be dicts of JSON values (see ``_json.py``) or bytes."""
    if type(payload) is bytes:
        return
    if not isinstance(payload, dict):
        raise EncodeError(
            f"broadcast payload must be a dict or bytes, got {type(payload).__name__}"
        )
    check_json(payload)
