"""check_origin rules (token-and-security.md §3)."""

from __future__ import annotations

from urllib.parse import SplitResult

import pytest

from phoenix_channels import ConfigurationError
from phoenix_channels.origin import OriginPolicy


def allows(
    check: object,
    origin: str | None,
    request: tuple[str, str, int | None] = ("ws", "example.com", 80),
) -> bool:
    return OriginPolicy(check, host="example.com").allows(origin, *request)  # type: ignore[arg-type]


def test_requests_without_origin_always_pass() -> None:
    assert allows(True, None)
    assert allows(["//nothing.example"], None)


def test_true_compares_the_host_with_the_endpoint_host() -> None:
    assert allows(True, "https://example.com:8443")
    assert not allows(True, "https://evil.com")
    assert not allows(True, "null")


def test_false_allows_everything() -> None:
    assert allows(False, "https://evil.com")


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("https://example.com", True),
        ("http://example.com", False),  # entry has a scheme: compared
        ("https://example.com:4000", False),  # scheme implies port 443
        ("http://another.com:888", True),
        ("http://another.com", False),
        ("http://other.com:1234", True),  # no scheme, no port: anything goes
        ("https://org1.ex.com", True),
        ("https://ex.com", True),
        ("https://org1.prefix-ex.com", False),
        ("https://sub.other.com", False),  # no wildcard: subdomains do not match
        ("null", False),
        ("", False),
    ],
)
def test_allow_lists(origin: str, expected: bool) -> None:
    entries = ["https://example.com", "//another.com:888", "//other.com", "//*.ex.com"]
    assert allows(entries, origin) is expected


def test_conn_compares_with_the_request_itself() -> None:
    assert allows("conn", "http://example.com", ("ws", "example.com", None))
    assert allows("conn", "https://example.com:8443", ("wss", "example.com", 8443))
    assert not allows("conn", "https://example.com", ("ws", "example.com", None))
    assert not allows("conn", "http://example.com:81", ("ws", "example.com", 80))


def test_a_callable_sees_the_parsed_origin_even_without_host() -> None:
    seen: list[SplitResult] = []

    def check(origin: SplitResult) -> bool:
        seen.append(origin)
        return origin.geturl() == "null"

    assert allows(check, "null")
    assert not allows(check, "https://example.com")
    assert seen[0].geturl() == "null"


def test_entries_without_host_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="has no host"):
        OriginPolicy(["example.com"])
    with pytest.raises(ConfigurationError):
        OriginPolicy(42)  # type: ignore[arg-type]
