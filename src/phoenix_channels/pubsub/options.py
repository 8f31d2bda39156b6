"""Every option of the Redis and NATS adapters, declared once.

:class:`EngineOptions` holds what both engines take (the Redis adapter takes
exactly these); :class:`NatsOptions` adds the NATS client's own. Each field
carries its default and, in the docstring under it, its meaning;
``__post_init__`` checks the values and says what to do when one is wrong.
``PubSub.redis(url, **options)``, ``PubSub.nats(...)`` and the adapters'
constructors take the same keywords (typed by :class:`EngineArgs` and
:class:`NatsArgs`, so editors complete them and mypy checks them). The table
in ``docs/cluster.md`` is checked against this declaration by a test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from ..errors import ConfigurationError

__all__ = ["EngineArgs", "EngineOptions", "NatsArgs", "NatsOptions"]

_PREFIX_RE = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*\Z")
_NATS_RESERVED = frozenset(
    {"servers", "allow_reconnect", "no_echo", "closed_cb", "disconnected_cb"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineOptions:
    """The options of an engine adapter (Redis's, and the base of NATS's)."""

    node_name: str | None = None
    """This node's name, unique in the cluster; ``direct_broadcast`` addresses it. None:
    ``<host>-<pid>-<random>``. On Redis a second live node with the same name is refused
    at start (``ConfigurationError``)."""
    prefix: str = "phx"
    """The first part of every engine channel name; the nodes of one cluster share it,
    other applications on the same engine use another one. Redis pub/sub ignores the
    database number in the URL: the prefix is what keeps two applications apart."""
    shards: int | None = None
    """None (one engine channel per topic) or N in 1..65536 (topics are hashed onto N
    channels: bounded subscriptions, some traffic a node does not need). Every node must
    use the same value."""
    timeout: float = 5.0
    """Bound of a connect, a publish, a subscription confirmation, in seconds."""
    max_backoff: float = 5.0
    """Longest wait between reconnection attempts, in seconds; they start at 0.1 s and
    double, with jitter."""
    health_interval: float = 5.0
    """An idle link is checked with a PING this often, in seconds."""

    def __post_init__(self) -> None:
        node_name = self.node_name
        if node_name is not None:
            if type(node_name) is not str or not node_name:
                raise ConfigurationError(f"node_name must be a non-empty str, got {node_name!r}")
            if len(node_name.encode()) > 255:
                raise ConfigurationError("node_name must be at most 255 bytes of UTF-8")
        prefix = self.prefix
        if type(prefix) is not str or not _PREFIX_RE.match(prefix):
            raise ConfigurationError(
                f"prefix must be letters, digits, '_' or '-' (dots between words allowed), "
                f"got {prefix!r}"
            )
        shards = self.shards
        if shards is not None and (type(shards) is not int or not 1 <= shards <= 65536):
            raise ConfigurationError(
                f"shards must be None (one engine channel per topic) or an int in 1..65536, "
                f"got {shards!r}"
            )
        for name in ("timeout", "max_backoff", "health_interval"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
            object.__setattr__(self, name, float(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsOptions(EngineOptions):
    """The options of the NATS adapter: :class:`EngineOptions`' and the client's own."""

    connect_options: Mapping[str, Any] | None = None
    """Extra keyword arguments for ``nats.connect`` (``user_credentials``, ``tls``, ...);
    not those the adapter manages (``servers``, ``allow_reconnect``, ``no_echo``, the
    callbacks)."""

    def __post_init__(self) -> None:
        EngineOptions.__post_init__(self)  # zero-argument super() fails in slotted dataclasses
        extra = self.connect_options
        if extra is not None and not isinstance(extra, Mapping):
            raise ConfigurationError(f"connect_options must be a dict, got {extra!r}")
        if extra and _NATS_RESERVED & set(extra):
            raise ConfigurationError(
                f"connect_options cannot set {sorted(_NATS_RESERVED & set(extra))}: "
                "the adapter manages those"
            )


class EngineArgs(TypedDict, total=False):
    """The keywords of ``PubSub.redis(...)`` and ``RedisAdapter(...)``: :class:`EngineOptions`.

    Defaults and meanings are in :class:`EngineOptions` (a test keeps the lists equal).
    """

    node_name: str | None
    prefix: str
    shards: int | None
    timeout: float
    max_backoff: float
    health_interval: float


class NatsArgs(EngineArgs, total=False):
    """The keywords of ``PubSub.nats(...)`` and ``NatsAdapter(...)``: :class:`NatsOptions`."""

    connect_options: Mapping[str, Any] | None
