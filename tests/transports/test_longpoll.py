"""Long polling over real HTTP on loopback: statuses, tokens, order, expiry, other nodes."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import pytest

from phoenix_channels import Channel, Endpoint, LongPoll, PubSub, Socket, reply, stop

from ..support import Server

ENDED: list[tuple[str, Any]] = []


class LPChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return {"joined": topic}

    async def handle_in(self, event: str, payload: Any) -> Any:
        match event:
            case "echo":
                return reply("ok", payload)
            case "shout":
                await self.broadcast("shout", payload)
            case "crash":
                raise RuntimeError("asked to crash")
            case "bytes_reply":
                return reply("ok", b"\x00\xff")
            case "bytes_push":
                await self.push("bin", b"\x00")
            case "leave_me":
                return stop("normal")
            case "whoami":
                return reply("ok", {"auth": self.socket.assigns["auth"]})
        return None

    async def terminate(self, reason: Any) -> None:
        ENDED.append((self.topic, reason if isinstance(reason, str) else type(reason).__name__))


class LPSocket(Socket):
    channels = {"room:*": LPChannel}
    longpoll = LongPoll(window=0.3, pubsub_timeout=0.5)

    async def connect(self, params: dict[str, Any], connect_info: dict[str, Any]) -> bool:
        self.assigns["user"] = params.get("user")
        self.assigns["auth"] = connect_info["auth_token"]
        return params.get("client") != "reject"

    def id(self) -> str | None:
        return f"user:{self.assigns['user']}" if self.assigns["user"] else None


class AuthSocket(LPSocket):
    auth_token = True


def make_endpoint(pubsub: PubSub | None = None) -> Endpoint:
    return Endpoint(
        sockets={"/socket": LPSocket, "/auth": AuthSocket},
        pubsub=pubsub,
        check_origin=["//allowed.example"],
        secret_key_base="s" * 40,
    )


class LP:
    """A long-poll client speaking the JS client's requests."""

    def __init__(
        self, http: httpx.AsyncClient, path: str = "/socket/longpoll", query: str = "vsn=2.0.0"
    ) -> None:
        self.http, self.path, self.query = http, path, query
        self.token: str | None = None

    def url(self) -> str:
        return f"{self.path}?{self.query}&token={self.token or ''}"

    async def get(self, **headers: str) -> dict[str, Any]:
        response = await self.http.get(self.url(), headers=headers)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        body = response.json()
        if "token" in body:
            self.token = body["token"]
        return body

    async def open(self) -> None:
        body = await self.get()
        assert body["status"] == 410 and body["messages"] == [] and body["token"]

    async def post(self, *frames: Any, ndjson: bool = True) -> dict[str, Any]:
        lines = [f if isinstance(f, str) else json.dumps(f) for f in frames]
        response = await self.http.post(
            self.url(),
            content="\n".join(lines),
            headers={"content-type": "application/x-ndjson" if ndjson else "text/plain"},
        )
        assert response.status_code == 200
        return response.json()  # type: ignore[no-any-return]

    async def messages(self, count: int) -> list[Any]:
        got: list[Any] = []
        async with asyncio.timeout(5):
            while len(got) < count:
                body = await self.get()
                assert body["status"] in (200, 204), body
                got += [json.loads(m) for m in body["messages"]]
        return got


@pytest.fixture
async def server():  # type: ignore[no-untyped-def]
    ENDED.clear()
    async with Server(make_endpoint()) as srv:
        yield srv


@pytest.fixture
async def http(server: Server):  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as c:
        yield c


async def test_a_session_from_open_to_replies(http: httpx.AsyncClient) -> None:
    lp = LP(http, query="vsn=2.0.0&client=lp1")
    await lp.open()
    assert await lp.post(["1", "1", "room:lp", "phx_join", {}]) == {"status": 200}
    assert await lp.messages(1) == [
        ["1", "1", "room:lp", "phx_reply", {"response": {"joined": "room:lp"}, "status": "ok"}]
    ]
    assert (await lp.get())["status"] == 204  # the window passes with nothing to say
    await lp.post(["1", "2", "room:lp", "echo", {"x": 1}], [None, "3", "phoenix", "heartbeat", {}])
    assert await lp.messages(2) == [
        ["1", "2", "room:lp", "phx_reply", {"response": {"x": 1}, "status": "ok"}],
        [None, "3", "phoenix", "phx_reply", {"response": {}, "status": "ok"}],
    ]
    await lp.post(["1", "4", "room:lp", "shout", {"s": "lp"}], ndjson=False)
    assert await lp.messages(1) == [[None, None, "room:lp", "shout", {"s": "lp"}]]


async def test_binary_from_the_client_and_what_comes_back(http: httpx.AsyncClient) -> None:
    lp = LP(http)
    await lp.open()
    await lp.post(["1", "1", "room:lp", "phx_join", {}])
    await lp.messages(1)
    frame = bytes.fromhex("0001010704") + b"19room:lpecho" + b"\x01\x02\x03\x00\xff"
    await lp.post(base64.b64encode(frame).decode())
    await lp.post(["1", "5", "room:lp", "bytes_reply", {}], ["1", "6", "room:lp", "bytes_push", {}])
    replies = await lp.messages(3)
    # binary replies cannot travel over long polling: the client gets a clear error reply
    expected = {
        "response": {"reason": "binary payloads cannot be sent over long polling"},
        "status": "error",
    }
    assert replies[0] == ["1", "9", "room:lp", "phx_reply", expected]
    assert replies[1] == ["1", "5", "room:lp", "phx_reply", expected]
    # a binary push raises EncodeError in the channel: it crashes, the client is told
    assert replies[2] == ["1", "1", "room:lp", "phx_error", {"reason": "channel_crash"}]


async def test_crash_gives_phx_error(http: httpx.AsyncClient) -> None:
    lp = LP(http)
    await lp.open()
    await lp.post(["1", "1", "room:c", "phx_join", {}], ["1", "2", "room:c", "crash", {}])
    frames = await lp.messages(2)
    assert frames[1] == ["1", "1", "room:c", "phx_error", {"reason": "channel_crash"}]


@pytest.mark.parametrize(("method", "status"), [("PUT", 400), ("DELETE", 400)])
async def test_other_methods_are_400(http: httpx.AsyncClient, method: str, status: int) -> None:
    response = await http.request(method, "/socket/longpoll?vsn=2.0.0")
    assert response.status_code == status and response.content == b""


async def test_cors_preflight(http: httpx.AsyncClient) -> None:
    response = await http.options(
        "/socket/longpoll?vsn=2.0.0", headers={"access-control-request-headers": "content-type"}
    )
    assert response.status_code == 200 and response.content == b""
    assert response.headers["access-control-allow-headers"] == "content-type"
    assert response.headers["access-control-allow-methods"] == "get, post, options"
    assert response.headers["access-control-max-age"] == "3600"


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("vsn=2.0.0&client=reject", {}),
        ("vsn=3.0.0", {}),
        ("vsn=2.0.0", {"origin": "http://evil.example"}),
    ],
)
async def test_refusals_are_403_in_the_body(
    http: httpx.AsyncClient, query: str, headers: dict[str, str]
) -> None:
    response = await http.get(f"/socket/longpoll?{query}", headers=headers)
    assert response.status_code == 200 and response.json() == {"status": 403}


async def test_forged_tampered_and_expired_tokens_learn_nothing(http: httpx.AsyncClient) -> None:
    lp = LP(http)
    await lp.open()
    real = lp.token
    assert real is not None
    head, payload, signature = real.split(".")
    for bad in (
        "bogus",
        f"{head}.{payload}.{signature[:-3]}AAA",
        f"{head}.{base64.urlsafe_b64encode(b'[1,2,3]').decode()}.{signature}",
    ):
        post = await http.post(
            f"/socket/longpoll?vsn=2.0.0&token={bad}",
            content="[]",
            headers={"content-type": "application/x-ndjson"},
        )
        assert post.json() == {"status": 410}
        fresh = (await http.get(f"/socket/longpoll?vsn=2.0.0&token={bad}")).json()
        assert fresh["status"] == 410 and fresh["token"] not in (bad, real)
    from phoenix_channels import token

    expired = token.sign(
        "s" * 40,
        "phoenix_channels longpoll session",
        token.verify("s" * 40, "phoenix_channels longpoll session", real),
        signed_at=time.time() - 15 * 86_400,
    )  # older than the 14-day max age
    assert (await http.get(f"/socket/longpoll?vsn=2.0.0&token={expired}")).json()["status"] == 410
    assert (await http.post("/socket/longpoll?vsn=2.0.0", content="[]")).json() == {"status": 410}


async def test_the_last_token_in_the_query_wins_and_the_header_wins_over_it(
    http: httpx.AsyncClient,
) -> None:
    lp = LP(http)
    await lp.open()
    token = lp.token
    stale = "stale-value"
    body = (await http.get(f"/socket/longpoll?token={stale}&vsn=2.0.0&token={token}")).json()
    assert body["status"] == 204 and body["token"] == token
    body = (
        await http.get(
            f"/socket/longpoll?vsn=2.0.0&token={stale}",
            headers={"x-phoenix-longpoll-token": token or ""},
        )
    ).json()
    assert body["status"] == 204


async def test_auth_token_header(http: httpx.AsyncClient) -> None:
    lp = LP(http, path="/auth/longpoll")
    await lp.get(**{"x-phoenix-authtoken": "s3cr3t"})
    await lp.post(["1", "1", "room:a", "phx_join", {}], ["1", "2", "room:a", "whoami", {}])
    assert (await lp.messages(2))[1][4] == {"response": {"auth": "s3cr3t"}, "status": "ok"}


async def test_concurrent_posts_keep_each_batch_in_order_and_lose_nothing(
    http: httpx.AsyncClient,
) -> None:
    lp = LP(http)
    await lp.open()
    await lp.post(["1", "1", "room:o", "phx_join", {}])
    await lp.messages(1)
    batches = [
        [["1", f"{b}-{i}", "room:o", "echo", {"b": b, "i": i}] for i in range(20)] for b in range(5)
    ]
    statuses = await asyncio.gather(*(lp.post(*batch) for batch in batches))
    assert all(s == {"status": 200} for s in statuses)
    replies = await lp.messages(100)
    refs = [r[1] for r in replies]
    assert sorted(refs) == sorted(f"{b}-{i}" for b in range(5) for i in range(20))
    for b in range(5):
        mine = [int(ref.split("-")[1]) for ref in refs if ref.startswith(f"{b}-")]
        assert mine == list(range(20))


async def test_broadcasts_between_polls_arrive_in_order_exactly_once(
    server: Server, http: httpx.AsyncClient
) -> None:
    lp = LP(http)
    await lp.open()
    await lp.post(["1", "1", "room:b", "phx_join", {}])
    await lp.messages(1)

    async def publish() -> None:
        for n in range(300):
            await server.endpoint.broadcast("room:b", "n", {"n": n})
            if n % 7 == 0:
                await asyncio.sleep(0.001)

    publisher = asyncio.ensure_future(publish())
    got = await lp.messages(300)
    await publisher
    assert [m[4]["n"] for m in got] == list(range(300))


async def test_an_abandoned_session_is_closed_and_cleaned_up(
    server: Server, http: httpx.AsyncClient
) -> None:
    endpoint = server.endpoint
    tasks_before = len(asyncio.all_tasks())
    lp = LP(http)
    await lp.open()
    await lp.post(["1", "1", "room:gone", "phx_join", {}])
    await lp.messages(1)
    assert len(endpoint.longpoll_sessions) == 1 and endpoint.pubsub.subscribers("room:gone") == 1
    async with asyncio.timeout(5):
        while endpoint.longpoll_sessions:
            await asyncio.sleep(0.05)
    assert ENDED == [("room:gone", "shutdown:inactive")]
    assert endpoint.pubsub.subscribers("room:gone") == 0
    assert endpoint.pubsub.topics() == 0
    assert not [c for c in endpoint.connections if getattr(c, "name", "") == "longpoll"]
    assert len(asyncio.all_tasks()) <= tasks_before
    body = await lp.get()
    assert body["status"] == 410  # the client learns its session is gone


async def test_disconnect_by_id_ends_the_session(server: Server, http: httpx.AsyncClient) -> None:
    lp = LP(http, query="vsn=2.0.0&user=9")
    await lp.open()
    await lp.post(["1", "1", "room:d", "phx_join", {}])
    await lp.messages(1)
    await server.endpoint.broadcast("user:9", "disconnect", {})
    assert (await lp.get())["status"] == 410
    assert ENDED == [("room:d", "shutdown:disconnected")]


async def test_a_request_on_another_endpoint_reaches_the_session_through_pubsub() -> None:
    shared = PubSub()
    async with (
        Server(make_endpoint(shared)) as a,
        Server(make_endpoint(shared)) as b,
        httpx.AsyncClient(timeout=10) as http,
    ):
        first = LP(http, path=f"http://127.0.0.1:{a.port}/socket/longpoll")
        await first.open()
        other = LP(http, path=f"http://127.0.0.1:{b.port}/socket/longpoll")
        other.token = first.token
        assert await other.post(["1", "1", "room:x", "phx_join", {}]) == {"status": 200}
        assert (await other.messages(1))[0][4]["status"] == "ok"
        await a.endpoint.broadcast("room:x", "hello", {"from": "a"})
        assert await other.messages(1) == [[None, None, "room:x", "hello", {"from": "a"}]]
        assert (await other.get())["status"] == 204
        assert len(a.endpoint.longpoll_sessions) == 1 and not b.endpoint.longpoll_sessions


async def test_shutdown_answers_waiting_polls_at_once() -> None:
    class SlowWindow(LPSocket):
        longpoll = LongPoll(window=10.0)

    endpoint = Endpoint(sockets={"/socket": SlowWindow}, check_origin=False, drain_interval=0.0)
    srv = Server(endpoint)
    await srv.__aenter__()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.port}", timeout=20) as http:
        lp = LP(http)
        await lp.open()
        await lp.post(["1", "1", "room:s", "phx_join", {}])
        await lp.messages(1)
        waiting = asyncio.ensure_future(lp.get())
        await asyncio.sleep(0.2)
        stopping = asyncio.ensure_future(srv.stop())
        async with asyncio.timeout(5):  # well inside the 10 s window
            body = await waiting
            await stopping
        assert body["status"] in (200, 204)
    assert [e for e in ENDED if e[0] == "room:s"] == [("room:s", "shutdown:draining")]


async def test_a_poll_the_client_abandons_loses_nothing(
    server: Server, http: httpx.AsyncClient
) -> None:
    lp = LP(http)
    await lp.open()
    await lp.post(["1", "1", "room:a", "phx_join", {}])
    await lp.messages(1)
    abandoned = asyncio.ensure_future(lp.get())
    await asyncio.sleep(0.05)
    abandoned.cancel()  # the client gives up on this request and closes its connection
    await asyncio.sleep(0.05)
    await server.endpoint.broadcast("room:a", "after", {"n": 1})
    assert await lp.messages(1) == [[None, None, "room:a", "after", {"n": 1}]]


async def test_a_binary_broadcast_skips_long_poll_clients_with_one_warning(
    server: Server, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    clients = [LP(http) for _ in range(3)]
    for lp in clients:
        await lp.open()
        await lp.post(["1", "1", "room:bin", "phx_join", {}])
        await lp.messages(1)
    await server.endpoint.broadcast("room:bin", "blob", b"\x00\x01")
    await server.endpoint.broadcast("room:bin", "json", {"ok": True})
    for lp in clients:
        assert await lp.messages(1) == [[None, None, "room:bin", "json", {"ok": True}]]
    warnings = [r for r in caplog.records if "binary broadcast" in r.getMessage()]
    assert len(warnings) == 1


async def test_a_session_is_reached_across_processes_sharing_redis() -> None:
    from ..pubsub.engines import shared_url, unique_prefix

    url, prefix = shared_url("redis"), unique_prefix()
    one = make_endpoint(PubSub.redis(url, node_name=f"{prefix}-a", prefix=prefix))
    two = make_endpoint(PubSub.redis(url, node_name=f"{prefix}-b", prefix=prefix))
    async with Server(one) as a, Server(two) as b, httpx.AsyncClient(timeout=10) as http:
        first = LP(http, path=f"http://127.0.0.1:{a.port}/socket/longpoll")
        await first.open()
        other = LP(http, path=f"http://127.0.0.1:{b.port}/socket/longpoll")
        other.token = first.token
        assert await other.post(["1", "1", "room:r", "phx_join", {}]) == {"status": 200}
        assert (await other.messages(1))[0][4]["status"] == "ok"
        await b.endpoint.broadcast("room:r", "from_b", {"via": "redis"})
        assert await other.messages(1) == [[None, None, "room:r", "from_b", {"via": "redis"}]]
        assert len(a.endpoint.longpoll_sessions) == 1 and not b.endpoint.longpoll_sessions


async def test_a_session_moves_along_its_table_and_refuses_other_events(
    server: Server, http: httpx.AsyncClient
) -> None:
    from phoenix_channels.errors import InvalidTransition
    from phoenix_channels.transports.longpoll.session import SessionState

    lp = LP(http)
    await lp.open()
    (session,) = server.endpoint.longpoll_sessions.values()
    assert session.state is SessionState.OPEN
    refused = r"long-poll session .+: event 'opened' is not allowed in state 'open'"
    with pytest.raises(InvalidTransition, match=refused):
        session.opened()
    session.close()
    session.close()  # closing twice is fine
    assert session.state is SessionState.CLOSED and session.closed
    assert (await lp.get())["status"] == 410
