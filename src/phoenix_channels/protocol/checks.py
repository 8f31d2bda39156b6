"""Checks on values before they are encoded (no I/O): what a broadcast payload may be."""

from __future__ import annotations

from typing import Any

from ..errors import EncodeError

__all__ = ["check_payload"]


def check_payload(payload: Any) -> None:
    """Broadcast payloads must be dicts (JSON) or bytes (binary frames)."""
    if not isinstance(payload, dict | bytes):
        raise EncodeError(
            f"broadcast payload must be a dict or bytes, got {type(payload).__name__}"
        )
