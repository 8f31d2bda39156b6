"""Signed tokens, with the semantics of ``Phoenix.Token``.

A token carries a small JSON value that anyone can read but nobody can
forge or alter without the secret. Sign on the server (for example when
rendering the page that opens the socket), verify in ``Socket.connect``::

    from phoenix_channels import token

    t = token.sign(SECRET, "user socket", user_id)           # into the page
    user_id = token.verify(SECRET, "user socket", t, max_age=86_400)  # in connect

``verify`` raises :class:`~phoenix_channels.errors.MissingToken` (no token),
:class:`~phoenix_channels.errors.InvalidToken` (forged, tampered, another
salt or secret, garbage, signed in the future) or
:class:`~phoenix_channels.errors.ExpiredToken` (older than ``max_age``).

The format follows Plug.Crypto's signed tokens:
``SFMyNTY.<payload>.<signature>``, the key derived from the secret and the
salt by PBKDF2-HMAC (1,000 iterations, 32 bytes, SHA-256 by default), the
signature an HMAC-SHA256 of the first two parts, compared in constant time.
The payload is ``[data, signed_at_ms, max_age_s]`` encoded as JSON rather
than in Erlang's term format, so tokens are not interchangeable with an
Elixir app's (the semantics are the same).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import math
import time
from typing import Any, Protocol

import orjson

from .errors import ConfigurationError, EncodeError, ExpiredToken, InvalidToken, MissingToken

__all__ = ["DEFAULT_MAX_AGE", "sign", "verify"]

DEFAULT_MAX_AGE = 86_400.0
"""Seconds a token stays valid when neither ``sign`` nor ``verify`` says otherwise."""

_PROTECTED = {"sha256": "SFMyNTY", "sha384": "SFMzODQ", "sha512": "SFM1MTI"}


class _HasSecret(Protocol):
    secret_key_base: str | bytes


Secret = str | bytes | _HasSecret


def _secret_bytes(secret: Secret) -> bytes:
    value = getattr(secret, "secret_key_base", secret)
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        raise ConfigurationError("a token secret must be str, bytes or an Endpoint")
    if len(value) < 20:
        raise ConfigurationError("a token secret must be at least 20 bytes long")
    return value


@functools.lru_cache(maxsize=256)
def _key(secret: bytes, salt: str, iterations: int, length: int, digest: str) -> bytes:
    return hashlib.pbkdf2_hmac(digest, secret, salt.encode(), iterations, length)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(
    secret: Secret,
    salt: str,
    data: Any,
    *,
    signed_at: float | None = None,
    max_age: float = DEFAULT_MAX_AGE,
    key_iterations: int = 1000,
    key_length: int = 32,
    key_digest: str = "sha256",
) -> str:
    """A token carrying ``data`` (any JSON value), stamped now or at ``signed_at`` (seconds).

    ``max_age`` (seconds, ``math.inf`` for none) is stored in the token and
    applies when ``verify`` is not given one.
    """
    if key_digest not in _PROTECTED:
        raise ConfigurationError(f"key_digest must be one of {sorted(_PROTECTED)}")
    stamp_ms = int((time.time() if signed_at is None else signed_at) * 1000)
    stored_age = None if math.isinf(max_age) else max_age
    try:
        payload = orjson.dumps([data, stamp_ms, stored_age])
    except TypeError as exc:
        raise EncodeError(f"token data must be JSON-serializable: {exc}") from None
    head = f"{_PROTECTED[key_digest]}.{_b64(payload)}"
    key = _key(_secret_bytes(secret), salt, key_iterations, key_length, key_digest)
    signature = hmac.new(key, head.encode(), hashlib.sha256).digest()
    return f"{head}.{_b64(signature)}"


def verify(
    secret: Secret,
    salt: str,
    token: str | None,
    *,
    max_age: float | None = None,
    key_iterations: int = 1000,
    key_length: int = 32,
    key_digest: str = "sha256",
) -> Any:
    """The data of a genuine, fresh token; raises a :class:`TokenError` otherwise.

    ``max_age`` (seconds) overrides the one stored in the token;
    ``math.inf`` turns the age check off.
    """
    if token is None:
        raise MissingToken("no token given")
    if not isinstance(token, str) or key_digest not in _PROTECTED:
        raise InvalidToken("not a token")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _PROTECTED[key_digest]:
        raise InvalidToken("not a token signed with this scheme")
    key = _key(_secret_bytes(secret), salt, key_iterations, key_length, key_digest)
    expected = hmac.new(key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        given = _unb64(parts[2])
        value = orjson.loads(_unb64(parts[1])) if hmac.compare_digest(expected, given) else None
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise InvalidToken("token is not well formed") from None
    if not isinstance(value, list) or len(value) != 3 or not isinstance(value[1], int):
        raise InvalidToken("signature does not match (wrong secret or salt, or altered)")
    data, signed_ms, stored_age = value
    age = (
        max_age if max_age is not None else (math.inf if stored_age is None else float(stored_age))
    )
    if math.isinf(age):
        return data
    now_ms = time.time() * 1000
    if signed_ms > now_ms + 1000:  # a second of leeway for clocks across nodes
        raise InvalidToken("token is signed in the future")
    if age <= 0 or signed_ms + age * 1000 < now_ms:
        raise ExpiredToken(f"token is older than {age:g} s")
    return data
