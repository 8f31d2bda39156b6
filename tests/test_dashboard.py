"""The live dashboard in headless Chromium: its numbers follow the server's state,
its disconnect action closes the chosen socket, and the guard keeps others out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from phoenix_channels import Channel, Endpoint, Presence, Socket
from phoenix_channels.dashboard import Dashboard, DashboardRequest

from .pubsub.engines import wait_until
from .support import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TOKEN = "let-me-see"


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        self.send("track")
        return None

    async def handle_info(self, message: Any) -> None:
        await presence.track(self, self.socket.params.get("user", "anon"), {})

    async def handle_in(self, event: str, payload: Any) -> Any:
        await self.broadcast("shout", payload)
        return None


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}

    def id(self) -> str | None:
        user = self.params.get("user")
        return f"user:{user}" if user else None


def allowed(request: DashboardRequest) -> bool:
    return request.params.get("token") == TOKEN


dashboard = Dashboard(guard=allowed, interval=0.2)
endpoint = Endpoint(sockets={"/socket": UserSocket}, check_origin=False, dashboard=dashboard)
presence = Presence(endpoint)


def test_the_guard_is_required() -> None:
    with pytest.raises(TypeError):
        Dashboard()  # type: ignore[call-arg]


async def test_without_the_guards_approval_nothing() -> None:
    async with Server(endpoint) as server, httpx.AsyncClient() as http:
        base = f"http://127.0.0.1:{server.port}/dashboard"
        assert (await http.get(base)).status_code == 403
        assert (await http.get(base + "?token=wrong")).status_code == 403
        page = await http.get(base + f"?token={TOKEN}")
        assert page.status_code == 200 and b"/dashboard/dashboard.js" in page.content
        live = f"ws://127.0.0.1:{server.port}/dashboard/live/websocket?vsn=2.0.0"
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(live):
                pass
        assert refused.value.response.status_code == 403
        async with websockets.connect(live + f"&token={TOKEN}") as ws:
            await ws.send(json.dumps(["1", "1", "dashboard:live", "phx_join", {}]))
            assert json.loads(await ws.recv())[4]["status"] == "ok"
        # The public scripts: the official client with its license, the page's code.
        client = await http.get(base + "/phoenix.mjs")
        assert client.status_code == 200 and b"MIT License" in client.content
        assert (await http.get(base + "/dashboard.js")).status_code == 200


async def connect(server: Server, user: str, topic: str) -> Any:
    ws = await websockets.connect(server.url + f"?vsn=2.0.0&user={user}")
    await ws.send(json.dumps(["1", "1", topic, "phx_join", {}]))
    assert json.loads(await ws.recv())[4]["status"] == "ok"
    return ws


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
async def test_the_page_follows_the_server() -> None:
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    collector = dashboard.collector
    assert collector is not None
    async with Server(endpoint) as server, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        clients: list[Any] = []
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            await page.goto(f"http://127.0.0.1:{server.port}/dashboard?token={TOKEN}")
            await page.wait_for_selector("body[data-joined]", timeout=10000)

            async def shows(connections: int) -> None:
                assert len(collector.sockets) == connections  # the page's own socket included
                await page.wait_for_selector(
                    f"body[data-connections='{connections}']", timeout=10000
                )

            await shows(1)
            for n, topic in enumerate(["room:lobby", "room:lobby", "room:lobby", "room:2"]):
                clients.append(await connect(server, f"u{n}", topic))
            await shows(5)

            # A topic shows in "by rate" while it has traffic: shout until the page shows
            # it (a burst can fall between two of the page's updates on a loaded machine).
            async def shout() -> None:
                while True:
                    await clients[0].send(json.dumps(["1", "2", "room:lobby", "shout", {"n": 1}]))
                    await asyncio.sleep(0.05)

            shouting = asyncio.create_task(shout())
            try:
                await page.wait_for_selector("#by-rate td:text-is('room:lobby')")
            finally:
                shouting.cancel()
            row = page.locator("#by-subscribers tr", has_text="room:lobby")
            assert await row.locator("td.n").inner_text() == "3"
            await page.wait_for_selector("#presence td:text-is('room:lobby')")
            await page.wait_for_selector("#by-subscribers td:text-is('room:2')")
            subscribed = await page.locator("#by-subscribers td:not(.n)").all_inner_texts()
            assert sorted(subscribed) == ["dashboard:live", "room:2", "room:lobby"]
            updates = int(await page.get_attribute("body", "data-updates") or 0)
            await page.wait_for_function(
                f"Number(document.body.dataset.updates) >= {updates + 10}", timeout=10000
            )
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            await clients.pop().close()
            await shows(4)

            victim = clients[1]
            [sid] = [s for sock, (s, _, _) in collector.sockets.items() if sock._id == "user:u1"]
            await page.click(f"#sockets tr:has(td:text-is('{sid}')) button")
            async with asyncio.timeout(5):
                with contextlib.suppress(ConnectionClosed):
                    while True:  # read what it was sent, up to the close
                        await victim.recv()
            assert victim.close_code == 1000
            await shows(3)
            await page.wait_for_selector(f"#sockets td:text-is('{sid}')", state="detached")
        finally:
            for ws in clients:
                await ws.close()
            await browser.close()
    await wait_until(lambda: not collector.sockets, "every socket closed")


async def test_the_readme_example() -> None:
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [block] = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "Dashboard(" in b]
    names: dict[str, Any] = {"Endpoint": Endpoint, "UserSocket": UserSocket}
    names["DASHBOARD_TOKEN"] = "from-the-readme"
    exec(compile(block, "README.md", "exec"), names)
    async with Server(names["endpoint"]) as server, httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{server.port}/dashboard"
        assert (await http.get(url)).status_code == 403
        assert (await http.get(url + "?token=from-the-readme")).status_code == 200


async def test_three_nodes_see_each_other_and_act_on_each_other() -> None:
    from phoenix_channels import PubSub

    from .pubsub.engines import shared_url, unique_prefix

    url, prefix = shared_url("redis"), unique_prefix()
    nodes = []
    for name in ("n1", "n2", "n3"):
        board = Dashboard(guard=allowed, interval=0.1)
        node = Endpoint(
            sockets={"/socket": UserSocket},
            check_origin=False,
            dashboard=board,
            pubsub=PubSub.redis(url, node_name=name, prefix=prefix),
            secret_key_base="dashboard-test-secret-" + "x" * 24,
        )
        nodes.append((node, board))
    servers = [Server(node) for node, _ in nodes]
    for server in servers:
        await server.__aenter__()
    try:
        collectors = [board.collector for _, board in nodes]
        assert all(c is not None for c in collectors)
        await wait_until(
            lambda: all(set(c.others) == {"n1", "n2", "n3"} for c in collectors),  # type: ignore[union-attr]
            "every node hears the three",
        )
        ws = await connect(servers[2], "far", "room:far")
        await wait_until(
            lambda: collectors[0].others["n3"][1]["connections"] == 1,  # type: ignore[union-attr]
            "n1 sees n3's connection",
        )
        [far] = collectors[0].others["n3"][1]["sockets"]  # type: ignore[union-attr]
        assert far["name"] == "user:far"
        answer = await collectors[0].command(  # type: ignore[union-attr]
            "n3", "disconnect", {"node": "n3", "socket": far["id"]}
        )
        assert answer.status == "ok"
        async with asyncio.timeout(5):
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await ws.recv()
        assert ws.close_code == 1000
        missing = await collectors[0].command("n9", "drain", {"node": "n9"})  # type: ignore[union-attr]
        assert missing.status == "error"
    finally:
        for server in servers:
            await server.stop()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
async def test_the_page_under_load() -> None:
    """200 clients on one topic and a steady broadcast stream: the page keeps up."""
    from playwright.async_api import async_playwright

    collector = dashboard.collector
    assert collector is not None
    async with Server(endpoint) as server, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        clients: list[Any] = []
        readers: list[asyncio.Future[None]] = []
        stop = asyncio.Event()

        async def stream() -> None:
            while not stop.is_set():
                await endpoint.broadcast("room:load", "tick", {"at": 1})
                await asyncio.sleep(0.02)

        async def drain(ws: Any) -> None:
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass

        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            await page.goto(f"http://127.0.0.1:{server.port}/dashboard?token={TOKEN}")
            await page.wait_for_selector("body[data-joined]", timeout=10000)
            for n in range(200):
                clients.append(await connect(server, f"load{n}", "room:load"))
            readers.extend(asyncio.ensure_future(drain(ws)) for ws in clients)
            streamer = asyncio.ensure_future(stream())
            await page.wait_for_selector("body[data-connections='201']", timeout=15000)
            assert len(collector.sockets) == 201
            row = page.locator("#by-subscribers tr", has_text="room:load")
            await row.wait_for(timeout=10000)
            assert await row.locator("td.n").inner_text() == "200"
            await page.wait_for_function(
                "[...document.querySelectorAll('#nodes td.n')].some("
                "td => Number(td.textContent.replace(/,/g, '')) > 1000)",
                timeout=10000,
            )  # out/s: 200 deliveries per tick, ~50 ticks a second
            for ws in clients[100:]:
                await ws.close()
            await page.wait_for_selector("body[data-connections='101']", timeout=15000)
            assert len(collector.sockets) == 101
            stop.set()
            await streamer
        finally:
            stop.set()
            for ws in clients:
                await ws.close()
            await browser.close()
    for reader in readers:
        reader.cancel()
