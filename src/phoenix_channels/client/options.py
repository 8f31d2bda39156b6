"""Every option of the client :class:`~phoenix_channels.client.Socket`, declared once.

:class:`SocketOptions` holds each option with its default, its type and what
it means (the docstring under each field); ``__post_init__`` checks them all
and says what to do when one is wrong. ``Socket(url, **options)`` takes the
same keywords (typed by :class:`SocketArgs`, so editors complete them and
mypy checks them) and builds a ``SocketOptions`` from them; the client's
core (:mod:`._socket_machine`) reads its timings from the same object. The
table in ``docs/client.md`` is checked against this declaration by a test.

Times are in seconds; the defaults are the JS client's.
"""

from __future__ import annotations

import random
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from ..errors import ConfigurationError
from ._timers import default_reconnect_after, default_rejoin_after
from .codec import codec_for

if TYPE_CHECKING:
    from .transports import Transport

__all__ = [
    "Params",
    "SocketArgs",
    "SocketOptions",
    "TokenSource",
    "check_max_queued_events",
    "positive_seconds",
]

Params = Mapping[str, Any] | Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]
"""Connect params: a dict, or a function (sync or async) returning one."""
TokenSource = str | Callable[[], str | Awaitable[str]]
"""An auth token: a string, or a function (sync or async) returning one."""
Headers = Mapping[str, str] | Sequence[tuple[str, str]]

TRANSPORT_NAMES = ("websocket", "longpoll")


def positive_seconds(name: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _positive_int(name: str, value: object) -> None:
    if type(value) is not int or value < 1:
        raise ConfigurationError(f"{name} must be a positive int, got {value!r}")


def check_max_queued_events(value: object) -> int:
    """The check of ``max_queued_events``, for the socket's default and a channel's own."""
    if type(value) is not int or value < 0:
        raise ConfigurationError(f"max_queued_events must be an int >= 0, got {value!r}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class SocketOptions:
    """The options of a client socket, checked when it is built (see the module doc)."""

    params: Params | None = None
    """Connect params: a dict, or a function (sync or async) returning one, called at every
    connect."""
    transport: Literal["websocket", "longpoll"] | type[Transport] = "websocket"
    """``"websocket"``, ``"longpoll"``, or a :class:`~.transports.Transport` class."""
    vsn: str = "2.0.0"
    """Protocol version: ``"2.0.0"`` (JSON arrays and binary frames) or ``"1.0.0"``."""
    timeout: float = 10.0
    """Default timeout of joins, pushes and leaves."""
    heartbeat_interval: float = 30.0
    """Seconds between heartbeats, and how long one may wait for its reply before the
    connection is treated as dead and replaced. Long polling has no heartbeats."""
    reconnect_after: Callable[[int], float] = default_reconnect_after
    """Reconnect backoff: seconds before try ``n`` (0.01, 0.05, 0.1, 0.15, 0.2, 0.25,
    0.5, 1, 2, then 5)."""
    rejoin_after: Callable[[int], float] = default_rejoin_after
    """Rejoin backoff of a channel the server refused or crashed (1, 2, 5, then 10)."""
    jitter: float = 0.2
    """Each backoff is multiplied by a random factor in ``[1 - jitter, 1 + jitter]``, so
    clients that lost the same server do not come back in lockstep; in ``[0, 1)``."""
    auth_token: TokenSource | None = None
    """Sent as the JS client's ``authToken``: in ``Sec-WebSocket-Protocol``, or the
    ``X-Phoenix-AuthToken`` header of long-poll requests."""
    headers: Headers | None = None
    """Extra HTTP headers for the handshake and long-poll requests."""
    connect_timeout: float | None = None
    """Bound of one connection attempt, and of ``connect()``; None means ``timeout``."""
    longpoll_timeout: float = 20.0
    """Bound of each long-poll request (twice the server's window)."""
    max_frame_size: int = 10_000_000
    """Largest frame accepted from the server, in bytes."""
    max_buffered_pushes: int = 10_000
    """Pushes one channel may hold while not joined; past it ``push`` raises
    :class:`~.errors.PushBufferFull`."""
    max_queued_events: int = 1000
    """Size of each channel's event queue (0: read only through handlers); a channel can
    set its own: ``socket.channel(..., max_queued_events=n)``."""
    compress: bool = False
    """Offer permessage-deflate."""
    ssl: ssl_module.SSLContext | None = None
    """The TLS context for ``wss`` and ``https`` (None: the default context)."""
    rng: random.Random | None = None
    """The random source of the jitter (tests pass a seeded one)."""

    def __post_init__(self) -> None:
        transport = self.transport
        if isinstance(transport, str):
            if transport not in TRANSPORT_NAMES:
                raise ConfigurationError(
                    f"transport must be 'websocket', 'longpoll' or a Transport class, "
                    f"got {transport!r}"
                )
        elif not isinstance(transport, type):
            raise ConfigurationError(
                f"transport must be 'websocket', 'longpoll' or a Transport class, got {transport!r}"
            )
        codec_for(self.vsn)  # an unsupported vsn fails here, with what is supported
        params = self.params
        if params is not None and not callable(params) and not isinstance(params, Mapping):
            raise ConfigurationError(f"params must be a dict or a function, got {params!r}")
        token = self.auth_token
        if token is not None and not callable(token) and type(token) is not str:
            raise ConfigurationError(f"auth_token must be a str or a function, got {token!r}")
        for name in ("reconnect_after", "rejoin_after"):
            if not callable(getattr(self, name)):
                raise ConfigurationError(
                    f"{name} must be a function of the try number returning seconds"
                )
        jitter = self.jitter
        if not isinstance(jitter, int | float) or isinstance(jitter, bool) or not 0 <= jitter < 1:
            raise ConfigurationError(f"jitter must be in [0, 1), got {jitter!r}")
        _positive_int("max_frame_size", self.max_frame_size)
        _positive_int("max_buffered_pushes", self.max_buffered_pushes)
        check_max_queued_events(self.max_queued_events)
        timeout = positive_seconds("timeout", self.timeout)
        connect_timeout = timeout if self.connect_timeout is None else self.connect_timeout
        headers = self.headers
        items = headers.items() if isinstance(headers, Mapping) else (headers or ())
        fix = object.__setattr__  # frozen: normalise the values once, here
        fix(self, "timeout", timeout)
        fix(
            self,
            "heartbeat_interval",
            positive_seconds("heartbeat_interval", self.heartbeat_interval),
        )
        fix(self, "connect_timeout", positive_seconds("connect_timeout", connect_timeout))
        fix(self, "longpoll_timeout", positive_seconds("longpoll_timeout", self.longpoll_timeout))
        fix(self, "jitter", float(jitter))
        fix(self, "headers", tuple((str(k), str(v)) for k, v in items))
        fix(self, "compress", bool(self.compress))

    @property
    def header_pairs(self) -> tuple[tuple[str, str], ...]:
        """The headers as ``(name, value)`` pairs."""
        headers = self.headers
        return headers if isinstance(headers, tuple) else ()

    @property
    def resolved_connect_timeout(self) -> float:
        """``connect_timeout``, which ``__post_init__`` has set to ``timeout`` when None."""
        assert self.connect_timeout is not None
        return self.connect_timeout


class SocketArgs(TypedDict, total=False):
    """The keywords of ``Socket(url, **options)``: :class:`SocketOptions`' fields.

    Defaults and meanings are in :class:`SocketOptions` (a test keeps the two
    lists equal).
    """

    params: Params | None
    transport: Literal["websocket", "longpoll"] | type[Transport]
    vsn: str
    timeout: float
    heartbeat_interval: float
    reconnect_after: Callable[[int], float]
    rejoin_after: Callable[[int], float]
    jitter: float
    auth_token: TokenSource | None
    headers: Headers | None
    connect_timeout: float | None
    longpoll_timeout: float
    max_frame_size: int
    max_buffered_pushes: int
    max_queued_events: int
    compress: bool
    ssl: ssl_module.SSLContext | None
    rng: random.Random | None
