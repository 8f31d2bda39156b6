"""Signed tokens: the verification rules Phoenix.Token's tests pin."""

from __future__ import annotations

import math
import time

import pytest

from phoenix_channels import (
    ConfigurationError,
    Endpoint,
    ExpiredToken,
    InvalidToken,
    MissingToken,
    Socket,
    token,
)

SECRET = "a secret key base of more than twenty bytes"


def test_round_trip_and_the_data_is_readable_but_bound_to_the_salt() -> None:
    signed = token.sign(SECRET, "user socket", {"id": 42})
    assert token.verify(SECRET, "user socket", signed) == {"id": 42}
    with pytest.raises(InvalidToken):
        token.verify(SECRET, "another salt", signed)
    with pytest.raises(InvalidToken):
        token.verify(SECRET + "!", "user socket", signed)


@pytest.mark.parametrize(
    "bad", ["", "garbage", "a.b", "SFMyNTY.e30.AAAA", "SFMyNTY.!!.??", "x.y.z.w"]
)
def test_garbage_is_invalid(bad: str) -> None:
    with pytest.raises(InvalidToken):
        token.verify(SECRET, "s", bad)


def test_tampering_is_invalid() -> None:
    head, payload, signature = token.sign(SECRET, "s", 1).split(".")
    forged = token.sign(SECRET, "s", 2).split(".")[1]
    with pytest.raises(InvalidToken):
        token.verify(SECRET, "s", f"{head}.{forged}.{signature}")
    with pytest.raises(InvalidToken):
        token.verify(SECRET, "s", f"{head}.{payload}.{signature[:-2]}AA")


def test_missing() -> None:
    with pytest.raises(MissingToken):
        token.verify(SECRET, "s", None)


def test_max_age_rules() -> None:
    signed = token.sign(SECRET, "s", 1)
    assert token.verify(SECRET, "s", signed, max_age=1000) == 1
    for age in (-1000, 0):
        with pytest.raises(ExpiredToken):
            token.verify(SECRET, "s", signed, max_age=age)
    assert token.verify(SECRET, "s", signed, max_age=0.1) == 1
    time.sleep(0.15)
    with pytest.raises(ExpiredToken):
        token.verify(SECRET, "s", signed, max_age=0.1)


def test_signed_at_and_the_stored_max_age() -> None:
    day = 86_400
    old = token.sign(SECRET, "s", 1, signed_at=time.time() - day)
    assert token.verify(SECRET, "s", old, max_age=day + 1) == 1
    with pytest.raises(ExpiredToken):
        token.verify(SECRET, "s", old, max_age=day - 1)
    with pytest.raises(ExpiredToken):  # the default max age stored in the token: one day
        token.verify(SECRET, "s", old)
    short = token.sign(SECRET, "s", 1, max_age=-1)
    with pytest.raises(ExpiredToken):
        token.verify(SECRET, "s", short)
    forever = token.sign(SECRET, "s", 1, signed_at=0, max_age=math.inf)
    assert token.verify(SECRET, "s", forever) == 1
    with pytest.raises(InvalidToken):
        token.verify(SECRET, "s", token.sign(SECRET, "s", 1, signed_at=time.time() + 60))


def test_key_options_change_the_token_and_explicit_defaults_do_not() -> None:
    at = 1_700_000_000
    plain = token.sign(SECRET, "s", 1, signed_at=at)
    assert plain == token.sign(
        SECRET, "s", 1, signed_at=at, key_iterations=1000, key_length=32, key_digest="sha256"
    )
    assert plain != token.sign(SECRET, "s", 1, signed_at=at, key_iterations=2000)
    other = token.sign(SECRET, "s", 1, signed_at=at, key_digest="sha512")
    assert other.startswith("SFM1MTI.") and other != plain
    assert token.verify(SECRET, "s", other, key_digest="sha512", max_age=math.inf) == 1


def test_secrets_must_be_long_enough_and_endpoints_work_as_secrets() -> None:
    with pytest.raises(ConfigurationError, match="20 bytes"):
        token.sign("short", "s", 1)

    class S(Socket):
        pass

    endpoint = Endpoint(sockets={"/socket": S}, secret_key_base=SECRET)
    assert token.verify(endpoint, "s", token.sign(SECRET, "s", 7)) == 7
