"""WebSocket (RFC 6455, RFC 7692) without I/O: handshake, frame parsing, frame building.

The fast path's protocol feeds raw bytes to :class:`FrameParser` and writes
what :func:`encode_frame` returns; this module never touches a socket, so
it can be tested and fuzzed on bytes alone. Violations raise
:class:`~phoenix_channels.errors.WebSocketError` carrying the close code to
send (1002 protocol error, 1007 invalid UTF-8, 1009 too big).

Compression (permessage-deflate) is negotiated with no context takeover in
both directions. That costs some ratio but keeps no zlib state per
connection, and it makes a compressed frame the same bytes for every
connection, so a broadcast is compressed once, not once per subscriber.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import struct
import zlib
from collections.abc import Callable, Iterable

from ..errors import FrameError, WebSocketError
from ..protocol.close_codes import VALID_CLOSE_CODES, CloseCode

_PROTOCOL_ERROR = CloseCode.PROTOCOL_ERROR
_INVALID_DATA = CloseCode.INVALID_DATA
_MESSAGE_TOO_BIG = CloseCode.MESSAGE_TOO_BIG

_c_apply_mask: Callable[[bytes, bytes], bytes] | None
try:  # the C helper that ships with the websockets package
    from websockets.speedups import apply_mask as _c_apply_mask
except ImportError:  # pragma: no cover - websockets is a dependency
    _c_apply_mask = None

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "Deflate",
    "FrameError",
    "FrameParser",
    "accept_key",
    "close_payload",
    "encode_frame",
    "handshake_response",
    "http_response",
    "negotiate_deflate",
    "parse_request",
]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPS = frozenset((OP_CONT, OP_TEXT, OP_BINARY))
_CONTROL_OPS = frozenset((OP_CLOSE, OP_PING, OP_PONG))
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TAIL = b"\x00\x00\xff\xff"
_H2 = struct.Struct("!BB")
_H4 = struct.Struct("!BBH")
_H10 = struct.Struct("!BBQ")


def apply_mask(data: bytes, mask: bytes) -> bytes:
    if _c_apply_mask is not None:
        return _c_apply_mask(data, mask)
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def encode_frame(opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
    """One final, unmasked frame (servers never mask)."""
    b0 = 0x80 | opcode | (0x40 if rsv1 else 0)
    n = len(payload)
    if n < 126:
        return _H2.pack(b0, n) + payload
    if n < 65536:
        return _H4.pack(b0, 126, n) + payload
    return _H10.pack(b0, 127, n) + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()[:123]


# -- the handshake -----------------------------------------------------------

_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    426: "Upgrade Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def parse_request(raw: bytes) -> tuple[str, str, list[tuple[bytes, bytes]]]:
    """``(method, target, headers)`` of an HTTP/1.1 request head; header names lower-cased."""
    head, _sep, _ = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        raise WebSocketError(_PROTOCOL_ERROR, "malformed HTTP request line")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise WebSocketError(_PROTOCOL_ERROR, "malformed HTTP header line")
        headers.append((name.strip().lower(), value.strip()))
    return parts[0].decode("latin-1"), parts[1].decode("latin-1"), headers


def handshake_response(
    key: bytes, subprotocol: str | None = None, extensions: str | None = None
) -> bytes:
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: " + accept_key(key),
    ]
    if subprotocol:
        lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("latin-1"))
    if extensions:
        lines.append(b"Sec-WebSocket-Extensions: " + extensions.encode("latin-1"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def http_response(
    status: int,
    body: bytes = b"",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    reason = _REASONS.get(status, "Error")
    lines = [
        f"HTTP/1.1 {status} {reason}".encode(),
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


# -- permessage-deflate ------------------------------------------------------


class Deflate:
    """permessage-deflate with no context takeover: no per-connection zlib state.

    One compressor per window size is shared by every connection of the
    process: ``Z_FULL_FLUSH`` after each message resets it, so each message
    is compressed on its own, exactly as no context takeover requires.
    """

    __slots__ = ("response", "wbits")

    _compressors: dict[int, zlib._Compress] = {}
    min_size = 64  # smaller messages are sent uncompressed (allowed by RFC 7692)

    def __init__(self, wbits: int, response: str) -> None:
        self.wbits = wbits
        self.response = response

    def compress(self, data: bytes) -> bytes:
        comp = self._compressors.get(self.wbits)
        if comp is None:
            comp = self._compressors[self.wbits] = zlib.compressobj(6, zlib.DEFLATED, -self.wbits)
        out = comp.compress(data) + comp.flush(zlib.Z_FULL_FLUSH)
        return out[:-4] if out.endswith(_TAIL) else out

    @staticmethod
    def decompress(data: bytes, max_size: int) -> bytes:
        inflater = zlib.decompressobj(-15)
        try:
            out = inflater.decompress(data + _TAIL, max_size + 1)
        except zlib.error as exc:
            raise WebSocketError(_INVALID_DATA, f"invalid compressed data: {exc}") from None
        if len(out) > max_size:
            raise WebSocketError(
                _MESSAGE_TOO_BIG, f"message exceeds {max_size} bytes once decompressed"
            )
        return out


def negotiate_deflate(header: str | None) -> Deflate | None:
    """Accept the first acceptable permessage-deflate offer, if any."""
    if not header:
        return None
    for offer in header.split(","):
        name, *params = (p.strip() for p in offer.split(";"))
        if name != "permessage-deflate":
            continue
        wbits, ok, seen = 15, True, set()
        for param in params:
            key, _, value = param.partition("=")
            key, value = key.strip(), value.strip().strip('"')
            if key in seen:
                ok = False
            seen.add(key)
            if key == "server_max_window_bits":
                if not value.isdigit() or not 9 <= int(value) <= 15:
                    ok = False  # 8 cannot be honoured by zlib's raw deflate
                else:
                    wbits = int(value)
            elif key == "client_max_window_bits":
                if value and (not value.isdigit() or not 8 <= int(value) <= 15):
                    ok = False
            elif key not in ("server_no_context_takeover", "client_no_context_takeover"):
                ok = False
        if ok:
            response = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            if wbits != 15:
                response += f"; server_max_window_bits={wbits}"
            return Deflate(wbits, response)
    return None


# -- frames from the client ----------------------------------------------------


def _check_close(payload: bytes) -> None:
    if len(payload) == 1:
        raise WebSocketError(_PROTOCOL_ERROR, "close frame payload of 1 byte")
    if payload:
        code = (payload[0] << 8) | payload[1]
        if code not in VALID_CLOSE_CODES and not 3000 <= code <= 4999:
            raise WebSocketError(_PROTOCOL_ERROR, f"invalid close code {code}")
        try:
            payload[2:].decode()
        except UnicodeDecodeError:
            raise WebSocketError(_INVALID_DATA, "close reason is not valid UTF-8") from None


_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


class FrameParser:
    """Turns received bytes into complete messages and control frames.

    :meth:`feed` returns ``(opcode, payload)`` pairs: ``OP_TEXT``/``OP_BINARY``
    with the whole (reassembled, decompressed, unmasked) message, or a control
    opcode with its payload. Text messages are checked to be valid UTF-8 as
    their bytes arrive (fragment by fragment, and within a frame that comes
    in pieces), so invalid text fails where it breaks, not at the end.

    A violation raises :class:`FrameError` (carrying the frames parsed before
    it). The stream cannot be followed after that: later input is ignored.
    """

    __slots__ = (
        "_buf",
        "_checked",
        "_deflate",
        "_failed",
        "_frag_op",
        "_frag_rsv1",
        "_frags",
        "_frags_len",
        "_utf8",
        "max_size",
    )

    def __init__(self, max_size: int, deflate: Deflate | None = None) -> None:
        self.max_size = max_size
        self._deflate = deflate
        self._buf = bytearray()
        self._frags: list[bytes] | None = None
        self._frags_len = 0
        self._frag_op = 0
        self._frag_rsv1 = False
        self._utf8: codecs.IncrementalDecoder | None = None  # the text message's decoder
        self._checked = 0  # bytes of the unfinished frame's payload already checked
        self._failed = False

    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        if self._failed:
            return out
        try:
            self._parse(data, out)
        except WebSocketError as exc:
            self._failed = True
            self._buf, self._frags, self._utf8, self._checked = bytearray(), None, None, 0
            raise FrameError(exc, out) from None
        return out

    def _parse(self, data: bytes, out: list[tuple[int, bytes]]) -> None:
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            opcode, fin, rsv1 = b0 & 0x0F, b0 & 0x80, b0 & 0x40
            if b0 & 0x30 or (
                rsv1 and (self._deflate is None or opcode not in (OP_TEXT, OP_BINARY))
            ):
                raise WebSocketError(
                    _PROTOCOL_ERROR, "reserved bits set without a negotiated extension"
                )
            if not b1 & 0x80:
                raise WebSocketError(_PROTOCOL_ERROR, "client frames must be masked")
            length, hlen = b1 & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, hlen = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, hlen = struct.unpack_from("!Q", buf, pos + 2)[0], 10
                if length >> 63:
                    raise WebSocketError(_PROTOCOL_ERROR, "frame length has its top bit set")
            if opcode in _CONTROL_OPS:
                if length > 125:
                    raise WebSocketError(_PROTOCOL_ERROR, "control frame payload over 125 bytes")
                if not fin:
                    raise WebSocketError(_PROTOCOL_ERROR, "fragmented control frame")
            elif opcode not in _DATA_OPS:
                raise WebSocketError(_PROTOCOL_ERROR, f"unknown opcode {opcode}")
            elif length + self._frags_len > self.max_size:
                raise WebSocketError(
                    _MESSAGE_TOO_BIG, f"message exceeds the {self.max_size}-byte limit"
                )
            start = pos + hlen + 4
            if end - start < length:
                if (
                    end > start
                    and not rsv1
                    and (
                        (opcode == OP_TEXT and self._frags is None)
                        or (opcode == OP_CONT and self._utf8 is not None)
                    )
                ):
                    self._check_partial(buf, start, end, buf[pos + hlen : start])
                break
            mask = buf[pos + hlen : start]
            payload = apply_mask(bytes(buf[start : start + length]), bytes(mask)) if length else b""
            pos = start + length
            if opcode in _CONTROL_OPS:
                if opcode == OP_CLOSE:
                    _check_close(payload)
                out.append((opcode, payload))
                continue
            if opcode == OP_CONT:
                if self._frags is None:
                    raise WebSocketError(
                        _PROTOCOL_ERROR, "continuation frame without a message to continue"
                    )
                if rsv1:
                    raise WebSocketError(_PROTOCOL_ERROR, "RSV1 set on a continuation frame")
                self._frags.append(payload)
                self._frags_len += length
                utf8 = self._utf8
                if utf8 is not None:
                    checked, self._checked = self._checked, 0
                    _check_text(utf8, memoryview(payload)[checked:], bool(fin))
                if fin:
                    message = b"".join(self._frags)
                    op, compressed = self._frag_op, self._frag_rsv1
                    self._frags, self._frags_len, self._utf8 = None, 0, None
                    out.append((op, self._finish(op, message, compressed, utf8 is not None)))
                continue
            if self._frags is not None:
                raise WebSocketError(
                    _PROTOCOL_ERROR, "new data frame before the fragmented message ended"
                )
            checked = self._checked
            if checked:  # a text frame whose first bytes were checked as they came
                self._checked = 0
                utf8 = self._utf8
                assert utf8 is not None
                _check_text(utf8, memoryview(payload)[checked:], bool(fin))
            if fin:
                self._utf8 = None
                out.append((opcode, self._finish(opcode, payload, bool(rsv1), bool(checked))))
            else:
                self._frags, self._frags_len = [payload], length
                self._frag_op, self._frag_rsv1 = opcode, bool(rsv1)
                if opcode == OP_TEXT and not rsv1 and not checked:
                    # compressed text is checked once inflated
                    self._utf8 = _Utf8Decoder()
                    _check_text(self._utf8, payload, False)
        if pos >= end:
            self._buf = bytearray()
        elif pos or buf is not self._buf:
            # Keep the unfinished frame; an untouched buffer is kept as is, so a
            # large frame arriving in many pieces is not copied once per piece.
            self._buf = bytearray(buf[pos:])

    def _check_partial(
        self, buf: bytes | bytearray, start: int, end: int, mask: bytes | bytearray
    ) -> None:
        """Check the UTF-8 of the part of a text frame received so far (fail fast)."""
        done = self._checked
        if end - start <= done:
            return
        if self._utf8 is None:  # the first piece of an unfragmented text message
            self._utf8 = _Utf8Decoder()
        k = done % 4
        key = bytes(mask[k:] + mask[:k])
        _check_text(self._utf8, apply_mask(bytes(buf[start + done : end]), key), False)
        self._checked = end - start

    def _finish(
        self, opcode: int, payload: bytes, compressed: bool, validated: bool = False
    ) -> bytes:
        if compressed:
            assert self._deflate is not None
            payload = self._deflate.decompress(payload, self.max_size)
        if opcode == OP_TEXT and not validated:
            try:
                payload.decode()
            except UnicodeDecodeError:
                raise WebSocketError(_INVALID_DATA, "text message is not valid UTF-8") from None
        return payload


def _check_text(
    decoder: codecs.IncrementalDecoder, fragment: bytes | memoryview, final: bool
) -> None:
    try:
        decoder.decode(fragment, final)
    except UnicodeDecodeError:
        raise WebSocketError(_INVALID_DATA, "text message is not valid UTF-8") from None
