"""The HTTP side of long polling: one function per kind of request.

Requests carry the session's signed token (header ``x-phoenix-longpoll-token``
or query ``token``); :func:`serve_longpoll` reads it, finds the session on
this node (or, through :mod:`.relay`, on another one) and hands over to:

* :func:`_preflight`: ``OPTIONS``, the CORS preflight;
* :func:`_open`: ``GET`` without a live session creates one (body status
  410 and the new token);
* :func:`_poll`: ``GET`` with one returns the frames waiting (200), or waits
  up to ``window`` seconds for some (204 if none came);
* :func:`_post`: ``POST`` delivers the client's frames
  (``application/x-ndjson``: one frame a line, at most 100, base64 lines
  being binary frames; anything else: the whole body is one frame);
* any other method: 400.

Every response is HTTP 200 with the real status in the JSON body, as the JS
client expects.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable
from typing import Any

import orjson

from ... import token
from ..._asgi_types import ASGIReceive, ASGISend, Scope
from ...errors import PhoenixChannelsError
from ...handshake import Refused, SocketClass, check_origin, parse_params, split_host
from ...handshake import TransportHost as Endpoint
from .options import LongPoll
from .relay import RemoteSession
from .session import LongPollSession

__all__ = ["serve_longpoll"]

log = logging.getLogger("phoenix_channels.longpoll")

_SALT = "phoenix_channels longpoll session"
_MAX_BATCH = 100
_MAX_LINE = 10_000_000
_JSON_HEADERS = [
    (b"content-type", b"application/json; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"access-control-allow-origin", b"*"),
]
_CORS_ONLY = [(b"access-control-allow-origin", b"*")]


def _session_token(endpoint: Endpoint, session: LongPollSession, options: LongPoll) -> str:
    return token.sign(
        endpoint,
        _SALT,
        {"v": 1, "e": endpoint.instance_id, "s": session.id, "t": session.topic},
        max_age=options.max_age,
    )


def _read_token(endpoint: Endpoint, value: str | None, options: LongPoll) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        data = token.verify(endpoint, _SALT, value, max_age=options.max_age)
    except PhoenixChannelsError:
        return None
    if not isinstance(data, dict) or data.get("v") != 1 or not isinstance(data.get("t"), str):
        return None
    return data


# -- HTTP ------------------------------------------------------------------------------------


async def _respond(
    send: ASGISend, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    all_headers = list(headers if headers is not None else _JSON_HEADERS)
    all_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: ASGISend, body: dict[str, Any]) -> None:
    await _respond(send, 200, orjson.dumps(body))


async def _read_body(receive: ASGIReceive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _frames(body: bytes, content_type: str) -> list[tuple[bytes, bool]] | None:
    """The client's frames in a POST body; None if a line is unreadable."""
    if content_type.split(";")[0].strip().lower() != "application/x-ndjson":
        return [(body, False)]
    frames: list[tuple[bytes, bool]] = []
    for line in body.replace(b"\r\n", b"\n").split(b"\n")[:_MAX_BATCH]:
        if not line:
            continue
        if line[:1] == b"[":
            frames.append((line, False))
            continue
        if len(line) > _MAX_LINE:
            return None
        try:
            frames.append((base64.b64decode(line, validate=True), True))
        except (binascii.Error, ValueError):
            return None
    return frames


async def _unless_disconnected(
    poll: Awaitable[list[str]], receive: ASGIReceive
) -> list[str] | None:
    """The poll's frames, or None if the client disconnected first (the poll is cancelled)."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    polling = asyncio.ensure_future(poll)
    watching = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({polling, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
    if polling.done():
        return polling.result()
    polling.cancel()
    try:
        await polling
    except asyncio.CancelledError:
        pass
    return None


async def serve_longpoll(
    endpoint: Endpoint,
    socket_cls: SocketClass,
    options: LongPoll,
    scope: Scope,
    receive: ASGIReceive,
    send: ASGISend,
) -> None:
    """Answer one long-poll HTTP request (an ASGI ``http`` scope)."""
    method = scope["method"]
    headers: list[tuple[bytes, bytes]] = list(scope["headers"])
    named = dict(headers)
    if method == "OPTIONS":
        await _preflight(headers, send)
        return
    if method not in ("GET", "POST"):
        await _respond(send, 400, b"", _CORS_ONLY)
        return
    query = scope.get("query_string", b"").decode("latin-1")
    params = parse_params(query) if query else {}
    origin = named.get(b"origin")
    if origin is not None:
        host, port = split_host(named.get(b"host", b"").decode("latin-1"))
        if not check_origin(
            endpoint.origin_policy, origin, scope.get("scheme", "http"), host, port, scope["path"]
        ):
            await _json(send, {"status": 403})
            return
    header_token = named.get(b"x-phoenix-longpoll-token")
    raw_token = header_token.decode("latin-1") if header_token else params.get("token")
    found = _read_token(endpoint, raw_token if isinstance(raw_token, str) else None, options)
    session: LongPollSession | None = None
    remote: RemoteSession | None = None
    if found is not None:
        session = endpoint.registry.session(found["s"])
        if session is None and found.get("e") != endpoint.instance_id:
            remote = RemoteSession(endpoint.pubsub, found["t"], options.pubsub_timeout)

    if method == "POST":
        await _post(options, named, session, remote, receive, send)
    elif session is not None:
        await _poll(options, raw_token, session, receive, send)
    elif remote is None or not await _poll_remote(options, raw_token, remote, send):
        # no live session: open one
        await _open(endpoint, socket_cls, options, scope, query, headers, send)


async def _preflight(headers: list[tuple[bytes, bytes]], send: ASGISend) -> None:
    """``OPTIONS``: the CORS preflight, allowing the headers asked for."""
    allow = b", ".join(v for k, v in headers if k == b"access-control-request-headers")
    await _respond(
        send,
        200,
        b"",
        [
            (b"access-control-allow-origin", b"*"),
            (b"access-control-allow-headers", allow),
            (b"access-control-allow-methods", b"get, post, options"),
            (b"access-control-max-age", b"3600"),
        ],
    )


async def _post(
    options: LongPoll,
    named: dict[bytes, bytes],
    session: LongPollSession | None,
    remote: RemoteSession | None,
    receive: ASGIReceive,
    send: ASGISend,
) -> None:
    """``POST``: the client's frames to its session (200), or 410 if it is gone."""
    body = await _read_body(receive, options.max_body)
    frames = (
        None if body is None else _frames(body, named.get(b"content-type", b"").decode("latin-1"))
    )
    if frames is None:
        await _respond(send, 400, b"", _CORS_ONLY)
        return
    if session is not None:
        session.dispatch(frames)
        await _json(send, {"status": 200})
        return
    if remote is not None:
        async with remote:
            if await remote.alive():
                ok = await remote.dispatch(frames, options.window)
                await _json(send, {"status": 200 if ok else 408})
                return
    await _json(send, {"status": 410})


async def _poll(
    options: LongPoll,
    raw_token: Any,
    session: LongPollSession,
    receive: ASGIReceive,
    send: ASGISend,
) -> None:
    """``GET`` with a session here: its frames (200) or, after the window, 204."""
    messages = await _unless_disconnected(session.poll(options.window), receive)
    if messages is not None:
        await _messages(send, raw_token, messages)


async def _poll_remote(
    options: LongPoll, raw_token: Any, remote: RemoteSession, send: ASGISend
) -> bool:
    """``GET`` with a session on another node: as :func:`_poll`; False if it did not answer."""
    async with remote:
        if not await remote.alive():
            return False
        await _messages(send, raw_token, await remote.poll(options.window))
        return True


async def _messages(send: ASGISend, raw_token: Any, messages: list[str]) -> None:
    await _json(
        send, {"status": 200 if messages else 204, "token": raw_token, "messages": messages}
    )


async def _open(
    endpoint: Endpoint,
    socket_cls: SocketClass,
    options: LongPoll,
    scope: Scope,
    query: str,
    headers: list[tuple[bytes, bytes]],
    send: ASGISend,
) -> None:
    """``GET`` without a live session: run the handshake, open a session, send its token."""
    named = dict(headers)
    if socket_cls.auth_token and b"x-phoenix-authtoken" in named:
        headers = [(k, v) for k, v in headers if k != b"sec-websocket-protocol"]
        encoded = base64.b64encode(named[b"x-phoenix-authtoken"]).decode().rstrip("=")
        headers.append(
            (b"sec-websocket-protocol", f"phoenix, base64url.bearer.phx.{encoded}".encode())
        )
    client = scope.get("client")
    outcome = await endpoint.handshake(
        socket_cls,
        method="GET",
        path=scope["path"],
        query=query,
        headers=headers,
        scheme=scope.get("scheme", "http"),
        peer=(client[0], client[1]) if client else None,
        websocket=False,
    )
    if isinstance(outcome, Refused):
        await _json(send, {"status": 403})
        return
    new = LongPollSession(endpoint, outcome.socket, options)
    new.token = _session_token(endpoint, new, options)
    endpoint.registry.session_opened(new)
    endpoint.pubsub.subscribe(new.topic, new._on_command)
    await endpoint.pubsub.prepare(new.topic)  # reachable from other nodes before the client knows
    new.opened()
    outcome.socket.attach(new)
    await _json(send, {"status": 410, "token": new.token, "messages": []})
