"""Origin checks for WebSocket upgrades and long-poll requests (cross-site hijacking).

A request without an ``Origin`` header (not from a browser) is always let
through. With one, ``check_origin`` decides:

* ``True`` (default): the origin's host must be the endpoint's ``host``;
* ``False``: no check;
* ``"conn"``: scheme, host and port must equal the request's own;
* a list such as ``["https://example.com", "//*.example.com", "//localhost:4000"]``:
  scheme and port are compared only where the entry has them (a scheme
  implies its default port), ``*.`` matches the domain and its subdomains;
* a callable ``(origin: urllib.parse.SplitResult) -> bool``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from urllib.parse import SplitResult, urlsplit

from .errors import ConfigurationError

__all__ = ["CheckOrigin", "OriginPolicy"]

CheckOrigin = bool | str | Sequence[str] | Callable[[SplitResult], bool]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _port(parts: SplitResult) -> int | None:
    try:
        port = parts.port
    except ValueError:
        return None
    return port if port is not None else _DEFAULT_PORTS.get(parts.scheme)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OriginPolicy:
    """A compiled ``check_origin`` setting."""

    __slots__ = ("_allowed", "_func", "_host", "_mode")

    def __init__(self, check_origin: CheckOrigin, host: str = "localhost") -> None:
        self._host = host.lower().removeprefix("[").removesuffix("]")
        self._func: Callable[[SplitResult], bool] | None = None
        self._allowed: list[tuple[str | None, str, int | None]] = []
        if check_origin is True or check_origin is False:
            self._mode = "host" if check_origin else "off"
        elif check_origin == "conn":
            self._mode = "conn"
        elif callable(check_origin):
            self._mode, self._func = "func", check_origin
        elif isinstance(check_origin, list | tuple):
            self._mode = "list"
            for entry in check_origin:
                parts = urlsplit(entry)
                if not parts.hostname:
                    raise ConfigurationError(
                        f"check_origin entry {entry!r} has no host; write it like "
                        "'https://example.com' or '//example.com'"
                    )
                port = (
                    parts.port
                    if parts.port is not None
                    else (_DEFAULT_PORTS.get(parts.scheme) if parts.scheme else None)
                )
                self._allowed.append((parts.scheme or None, parts.hostname.lower(), port))
        else:
            raise ConfigurationError(
                f"check_origin must be True, False, 'conn', a list of origins or a callable, "
                f"got {check_origin!r}"
            )

    def advice(self, origin: str) -> str:
        """What to change so that ``origin`` is allowed: one sentence for the error log."""
        parts = urlsplit(origin)
        origin_host = (parts.hostname or "").lower()
        allow = f"//{parts.netloc}" if parts.netloc else origin
        list_fix = f"allow it with Endpoint(check_origin=[{allow!r}, ...])"
        if self._mode == "host" and _is_loopback(origin_host):
            return (
                f"its host {origin_host!r} is not this endpoint's host {self._host!r}; "
                f"if this is where you serve, set Endpoint(host={origin_host!r}), or {list_fix}"
            )
        if self._mode == "host":
            return f"its host is not this endpoint's host {self._host!r}; {list_fix}"
        if self._mode == "conn":
            return (
                "it is not the request's own scheme, host and port (check_origin='conn'); "
                + list_fix
            )
        if self._mode == "func":
            return "the check_origin callable returned False"
        return f"it is not in the check_origin list; {list_fix}"

    @property
    def enabled(self) -> bool:
        return self._mode != "off"

    def allows(self, origin: str | None, scheme: str, host: str, port: int | None) -> bool:
        """Whether a request with this ``Origin`` header may connect.

        ``scheme``, ``host`` and ``port`` describe the request itself (for ``"conn"``).
        """
        if origin is None or self._mode == "off":
            return True
        parts = urlsplit(origin)
        if self._func is not None:
            return bool(self._func(parts))
        origin_host = (parts.hostname or "").lower()
        if not origin_host:
            return False
        if self._mode == "host":
            return origin_host == self._host
        if self._mode == "conn":
            http_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
            return (
                parts.scheme == http_scheme
                and origin_host == host.lower()
                and _port(parts) == (port or _DEFAULT_PORTS.get(http_scheme))
            )
        origin_port = _port(parts)
        for want_scheme, want_host, want_port in self._allowed:
            if want_scheme is not None and parts.scheme != want_scheme:
                continue
            if want_port is not None and origin_port != want_port:
                continue
            if want_host.startswith("*."):
                suffix = want_host[2:]
                if origin_host == suffix or origin_host.endswith("." + suffix):
                    return True
            elif origin_host == want_host:
                return True
        return False
