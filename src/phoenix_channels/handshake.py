"""The handshake: accept or refuse a connection, the same way for every transport.

This is the counterpart of Phoenix's ``Socket.Transport``: a transport
(WebSocket, long polling, your own) hands over what the client sent (method,
path, query, headers, peer) and gets back :class:`Accepted` (a connected
socket, the sub-protocol and compression to answer with) or :class:`Refused`
(an HTTP status). The checks run in Phoenix's order: method, per-address
limit, origin, auth token, sub-protocol, serializer (``vsn``),
``Socket.connect``, ``Socket.id``, the upgrade headers.

Layering: transports import this module; this module imports no transport
and neither the endpoint nor the socket classes. What it needs of them is
written down as the protocols :class:`HandshakeHost` (the endpoint) and
:class:`SocketClass` (a ``Socket`` or ``RawSocket`` subclass).

Every refusal leaves one INFO line on the logger ``phoenix_channels.handshake``
naming the socket path and the reason (never parameter values: they may hold
tokens). Refusals that are a configuration problem also log a WARNING or
ERROR that says what to change.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

from .origin import OriginPolicy
from .protocol import Serializer
from .pubsub import PubSub
from .registry import ConnectionRegistry
from .transports.base import SocketHandler
from .transports.rfc6455 import Deflate, negotiate_deflate

__all__ = [
    "Accepted",
    "HandshakeHost",
    "HandshakeSocket",
    "NotConnected",
    "Refused",
    "SocketClass",
    "TransportHost",
    "check_origin",
    "connected",
    "handshake",
    "parse_params",
    "socket_id",
    "split_host",
]

log = logging.getLogger("phoenix_channels.handshake")

_TOKEN_PREFIX = "base64url.bearer.phx."


class HandshakeSocket(SocketHandler, Protocol):
    """The side of a new socket that the handshake calls."""

    def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> Awaitable[bool]: ...

    def id(self) -> str | None: ...

    def handshake_done(self, sid: str | None, address: str | None) -> None: ...


class SocketClass(Protocol):
    """A ``Socket`` or ``RawSocket`` subclass, as the handshake uses it."""

    @property
    def auth_token(self) -> bool: ...

    def negotiate(self, params: dict[str, Any]) -> Serializer | None: ...

    def __call__(
        self, endpoint: Any, params: dict[str, Any], serializer: Serializer
    ) -> HandshakeSocket: ...


class _Prepare(Protocol):
    async def prepare(self, topic: str) -> None: ...


class HandshakeHost(Protocol):
    """What the handshake needs of the endpoint (the socket gets the endpoint itself)."""

    @property
    def origin_policy(self) -> OriginPolicy: ...

    @property
    def compress(self) -> bool: ...

    @property
    def registry(self) -> ConnectionRegistry: ...

    @property
    def pubsub(self) -> _Prepare: ...


class TransportHost(HandshakeHost, Protocol):
    """What transports need of the endpoint that serves them (they never import it)."""

    @property
    def pubsub(self) -> PubSub: ...

    @property
    def max_frame_size(self) -> int: ...

    @property
    def max_outbound_buffer(self) -> int: ...

    @property
    def instance_id(self) -> str: ...

    secret_key_base: str | bytes  # tokens of long-poll sessions (phoenix_channels.token)

    def websocket_socket(self, path: str) -> SocketClass | None: ...

    def begin_drain(self) -> asyncio.Task[None]: ...

    async def handshake(
        self,
        socket_cls: SocketClass,
        *,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[bytes, bytes]],
        scheme: str,
        peer: tuple[str, int] | None,
        websocket: bool = True,
    ) -> Accepted | Refused: ...


@dataclass(slots=True)
class Accepted:
    socket: SocketHandler
    subprotocol: str | None
    deflate: Deflate | None
    trace_context_headers: list[tuple[str, str]] = field(default_factory=list)
    """The client's ``traceparent``/``tracestate`` headers (for telemetry and tracing)."""


@dataclass(slots=True)
class Refused:
    status: int
    body: bytes = b""


def parse_params(query: str) -> dict[str, Any]:
    """Query string to connect params: the last value of a key wins, ``a[b]=1`` nests."""
    params: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if "[" in key and key.endswith("]"):
            head, _, rest = key.partition("[")
            parts = [head, *rest[:-1].split("][")]
            node = params
            for part in parts[:-1]:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
            node[parts[-1]] = value
        else:
            params[key] = value
    return params


def split_host(host_header: str) -> tuple[str, int | None]:
    """A ``Host`` header as (host, port): ``"[::1]:4000"`` -> ``("[::1]", 4000)``.

    The host keeps its form in the header (IPv6 literals keep their brackets);
    the port is None when absent or not a number.
    """
    host, colon, port_text = host_header.rpartition(":")
    if not colon or not port_text.isdigit() or (host.startswith("[") and not host.endswith("]")):
        return host_header, None
    if not host.startswith("[") and ":" in host:  # a bare IPv6 address, no port
        return host_header, None
    return host, int(port_text)


def check_origin(
    policy: OriginPolicy,
    origin: bytes | None,
    scheme: str,
    host: str,
    port: int | None,
    path: str,
) -> bool:
    """Whether the ``Origin`` header may connect; logs the fix when it may not.

    ``host`` and ``port`` are the request's own, as :func:`split_host` returns them.
    """
    if origin is None:
        return True
    text = origin.decode("latin-1")
    if policy.allows(text, scheme, host.removeprefix("[").removesuffix("]"), port):
        return True
    log.error("refused a connection to %s from origin %r: %s", path, text, policy.advice(text))
    refused(path, "origin not allowed by check_origin")
    return False


def refused(path: str, reason: str) -> None:
    """The one INFO line every refusal leaves (``reason`` names no parameter value)."""
    log.info("refused a connection to %s: %s", path, reason)


async def handshake(
    host: HandshakeHost,
    socket_cls: SocketClass,
    *,
    method: str,
    path: str,
    query: str,
    headers: list[tuple[bytes, bytes]],
    scheme: str,
    peer: tuple[str, int] | None,
    websocket: bool = True,
) -> Accepted | Refused:
    """Decide whether a connection request becomes a socket, in Phoenix's order of checks."""
    if method != "GET":
        refused(path, f"method {method} (GET expected)")
        return Refused(400)
    params = parse_params(query) if query else {}
    # One pass over the headers: the last value of a name wins.
    named: dict[bytes, bytes] = {}
    x_headers, trace_headers, ws_headers = [], [], []
    for key, value in headers:
        named[key] = value
        if key.startswith(b"x-"):
            x_headers.append((key.decode("latin-1"), value.decode("latin-1")))
        elif key.startswith(b"sec-websocket-"):
            ws_headers.append((key.decode("latin-1"), value.decode("latin-1")))
        elif key in (b"traceparent", b"tracestate"):
            trace_headers.append((key.decode("latin-1"), value.decode("latin-1")))
    host_name, port = split_host(named.get(b"host", b"").decode("latin-1"))
    registry = host.registry
    address = peer[0] if peer is not None else None
    if registry.full(address):
        log.warning(
            "refused a connection from %s: %d connections from that address are open "
            "(max_connections_per_client)",
            address,
            registry.max_per_address,
        )
        refused(path, "max_connections_per_client reached for the peer address")
        return Refused(429, b"too many connections from this address")
    if not check_origin(host.origin_policy, named.get(b"origin"), scheme, host_name, port, path):
        return Refused(403)
    auth_token: str | None = None
    protocols_header = named.get(b"sec-websocket-protocol")
    offered = (
        [p.strip() for p in protocols_header.decode("latin-1").split(",")]
        if protocols_header
        else []
    )
    subprotocol = None
    if socket_cls.auth_token:
        tokens = [p for p in offered if p.startswith(_TOKEN_PREFIX)]
        if len(tokens) == 1:
            encoded = tokens[0][len(_TOKEN_PREFIX) :]
            try:
                raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
                auth_token = raw.decode()
            except (binascii.Error, ValueError):
                log.warning("refused a connection: malformed auth token in Sec-WebSocket-Protocol")
                refused(path, "malformed auth token")
                return Refused(400, b"malformed auth token")
            offered = [p for p in offered if p is not tokens[0]]
        if offered:
            if "phoenix" not in offered:
                refused(path, "no 'phoenix' sub-protocol offered")
                return Refused(403)
            subprotocol = "phoenix"
    user_agent = named.get(b"user-agent")
    connect_info = {
        "peer_data": {"address": peer[0], "port": peer[1]} if peer else None,
        "uri": {"scheme": scheme, "host": host_name, "port": port, "path": path, "query": query},
        "x_headers": x_headers,
        "trace_context_headers": trace_headers,
        "sec_websocket_headers": ws_headers,
        "user_agent": user_agent.decode("latin-1") if user_agent is not None else None,
        "auth_token": auth_token,
    }
    name = getattr(socket_cls, "__name__", "Socket")
    serializer = socket_cls.negotiate(params)
    if serializer is None:
        log.warning(
            "refused a connection: unsupported vsn %r (1.0.x and 2.0.x are served)",
            params.get("vsn"),
        )
        refused(path, "unsupported vsn")
        return Refused(403)
    sock = socket_cls(host, params, serializer)
    try:
        try:
            accepted = await sock.connect(params, connect_info)
        except Exception as exc:
            raise NotConnected(
                "connect", 500, f"{name}.connect raised", f"{name}.connect raised", cause=exc
            ) from exc
        connected(name, accepted)
        sid = socket_id(sock, name)
    except NotConnected as exc:
        if exc.cause is not None:
            log.error("%s", exc.detail, exc_info=exc.cause)
        elif exc.stage == "id":
            log.error("%s", exc.detail)
        elif exc.value is not False:
            log.warning("%s", exc.detail)
        refused(path, exc.reason)
        return Refused(exc.status)
    deflate = None
    if websocket:
        problem = _upgrade_problem(named)
        if problem:
            refused(path, problem)
            return Refused(400, problem.encode())
        if host.compress:
            offer = named.get(b"sec-websocket-extensions")
            deflate = negotiate_deflate(offer.decode("latin-1") if offer else None)
    if sid is not None:  # a disconnect broadcast from any node must reach this socket
        await host.pubsub.prepare(sid)
    sock.handshake_done(sid, registry.counted(address))  # counted from attach() to closed()
    return Accepted(sock, subprotocol, deflate, trace_headers)


class NotConnected(Exception):
    """``Socket.connect`` did not accept, or ``Socket.id`` gave no usable id.

    ``reason`` names no value (it is logged at INFO for every refusal);
    ``detail`` says what to change; ``value`` is what the callback returned,
    ``cause`` what it raised; ``status`` the HTTP status the client gets.
    """

    def __init__(
        self,
        stage: str,
        status: int,
        reason: str,
        detail: str,
        value: Any = None,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(detail)
        self.stage = stage
        self.status = status
        self.reason = reason
        self.detail = detail
        self.value = value
        self.cause = cause


def connected(name: str, accepted: object) -> None:
    """Check what ``Socket.connect`` returned: True accepts, anything else is NotConnected.

    With :func:`socket_id`, the one connect path: :func:`handshake` and
    :class:`phoenix_channels.testing.ChannelTest` both use them (synchronous,
    so the handshake awaits ``connect`` itself and creates no extra coroutine).
    """
    if accepted is not True:
        raise NotConnected(
            "connect",
            403,
            f"{name}.connect returned {accepted!r}"
            if type(accepted) is bool
            else f"{name}.connect returned a {type(accepted).__name__}",
            f"{name}.connect returned {accepted!r}; return True to accept, False to refuse",
            accepted,
        )


def socket_id(sock: HandshakeSocket, name: str) -> str | None:
    """``sock.id()``, checked: a str or None, else NotConnected (also if it raises)."""
    try:
        sid = sock.id()
    except Exception as exc:
        raise NotConnected("id", 500, f"{name}.id raised", f"{name}.id raised", cause=exc) from exc
    if sid is not None and type(sid) is not str:
        raise NotConnected(
            "id",
            403,
            f"{name}.id returned a {type(sid).__name__}",
            f"{name}.id returned {sid!r}; it must return a str or None",
            sid,
        )
    return sid


def _upgrade_problem(named: dict[bytes, bytes]) -> str | None:
    connection = named.get(b"connection", b"").lower()
    if b"upgrade" not in [part.strip() for part in connection.split(b",")]:
        return "'connection' header must contain 'upgrade'"
    if named.get(b"upgrade", b"").lower() != b"websocket":
        return "'upgrade' header must contain 'websocket'"
    if not named.get(b"sec-websocket-key"):
        return "'sec-websocket-key' header is missing"
    if named.get(b"sec-websocket-version") != b"13":
        return "'sec-websocket-version' header must be '13'"
    return None
