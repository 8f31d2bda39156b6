"""WebSocket close codes (RFC 6455 section 7.4), by name.

A leaf module: it imports nothing of ours, so every layer may use it. The
members are ``int`` s, so they go on the wire unchanged. Code on a hot path
binds the members it needs to module-level names once.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["VALID_CLOSE_CODES", "CloseCode"]


class CloseCode(IntEnum):
    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015


#: Codes a peer may send in a close frame (1005, 1006 and 1015 are never sent;
#: 3000-4999 are also valid and checked by range).
VALID_CLOSE_CODES = frozenset(code for code in CloseCode if code not in (1005, 1006, 1015))
