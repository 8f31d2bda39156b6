"""The chat demo in a real headless Chromium: two tabs chat; presence, history, recovery."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from examples.chat.app import endpoint

from .support import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)"
)


# What a network that blocks WebSockets looks like to the page: every
# WebSocket fails before it opens.
BLOCK_WEBSOCKETS = """
window.WebSocket = class BlockedWebSocket extends EventTarget {
  constructor(url) {
    super();
    this.url = url; this.readyState = 0; this.binaryType = "arraybuffer";
    setTimeout(() => {
      this.readyState = 3;
      this.onerror && this.onerror(new Event("error"));
      this.onclose && this.onclose({ code: 1006, reason: "blocked", wasClean: false });
    }, 10);
  }
  send() { throw new Error("blocked"); }
  close() {}
};
window.WebSocket.CONNECTING = 0; window.WebSocket.OPEN = 1;
window.WebSocket.CLOSING = 2; window.WebSocket.CLOSED = 3;
"""


@pytest.mark.parametrize("websockets_blocked", [False, True], ids=["websocket", "fallback"])
async def test_two_tabs_chat(websockets_blocked: bool) -> None:
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    via = "longpoll" if websockets_blocked else "websocket"
    async with Server(endpoint) as srv, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            url = f"http://127.0.0.1:{srv.port}/"
            context = await browser.new_context()
            if websockets_blocked:
                await context.add_init_script(BLOCK_WEBSOCKETS)
            tabs = [await context.new_page() for _ in range(2)]
            for tab, nick in zip(tabs, ("ana", "bo"), strict=True):
                await tab.goto(url)
                await tab.wait_for_selector(f"body[data-connected={via}]", timeout=10000)
                await tab.fill("input[name=nick]", nick)
                await tab.click("#who button")
                await tab.wait_for_selector("body[data-joined]", timeout=5000)
            await tabs[0].fill("input[name=body]", "hello from ana")
            await tabs[0].press("input[name=body]", "Enter")
            for tab in tabs:
                await tab.wait_for_selector("#log p:has-text('ana: hello from ana')", timeout=5000)
            await tabs[1].wait_for_selector("#log p:has-text('bo joined')", timeout=5000)
            await tabs[1].screenshot(path=str(ARTIFACTS / f"chat-{via}.png"))
            assert endpoint.pubsub.subscribers("room:lobby") == 2
            assert len(endpoint.longpoll_sessions) == (2 if websockets_blocked else 0)
        finally:
            await browser.close()


# Its own room: the other tests' presences may still be listed in room:lobby
# (the Presence of the module outlives their endpoint runs).
ROOM = "room:recovery"


def cut(nick: str) -> None:
    """Close, from the server side, the connection of the tab joined as ``nick``."""
    from phoenix_channels import Channel

    subscribers = endpoint.pubsub._topics.get(ROOM, {})
    for owner in list(subscribers):
        if isinstance(owner, Channel) and owner.assigns.get("nick") == nick:
            owner.socket.close(1001, "cut by the test")
            return
    raise AssertionError(f"no channel of {nick!r} on {ROOM}")


async def test_presence_history_and_recovery() -> None:
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    async with Server(endpoint) as srv, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            url = f"http://127.0.0.1:{srv.port}/"
            context = await browser.new_context()

            async def open_tab(nick: str) -> object:
                tab = await context.new_page()
                await tab.goto(url)
                await tab.wait_for_selector("body[data-connected=websocket]", timeout=10000)
                await tab.fill("input[name=nick]", nick)
                await tab.fill("input[name=room]", ROOM.removeprefix("room:"))
                await tab.click("#who button")
                await tab.wait_for_selector("body[data-joined]", timeout=5000)
                return tab

            ana, bo = await open_tab("ana"), await open_tab("bo")
            # Presence: the online list, with every tab of a nick.
            await ana.wait_for_selector("#online li:text-is('bo')", timeout=5000)
            ana2 = await open_tab("ana")
            await bo.wait_for_selector("#online li:text-is('ana (2 tabs)')", timeout=5000)
            await ana2.close()
            await bo.wait_for_selector("#online li:text-is('ana')", timeout=5000)

            await ana.fill("input[name=body]", "before the cut")
            await ana.press("input[name=body]", "Enter")
            await bo.wait_for_selector("#log p:text-is('ana: before the cut')", timeout=5000)

            # Recovery: bo's connection is cut while three messages are sent.
            cut("bo")
            for i in range(3):
                await endpoint.broadcast(ROOM, "new_msg", {"nick": "ana", "body": f"missed {i}"})
            await bo.wait_for_selector("body[data-recovery=recovered]", timeout=10000)
            await ana.fill("input[name=body]", "after the cut")
            await ana.press("input[name=body]", "Enter")
            await bo.wait_for_selector("#log p:text-is('ana: after the cut')", timeout=5000)
            texts = await bo.locator("#log p").all_inner_texts()
            lines = [t for t in texts if t.startswith("ana:")]
            assert lines == [
                "ana: before the cut",
                "ana: missed 0",
                "ana: missed 1",
                "ana: missed 2",
                "ana: after the cut",
            ]
            assert await bo.locator("#log p:has-text('3 missed message(s) recovered')").count() == 1
            await bo.screenshot(path=str(ARTIFACTS / "chat-recovered.png"))

            # History from the framework: a late tab sees the last messages.
            cy = await open_tab("cy")
            await cy.wait_for_selector("#log p:text-is('ana: after the cut')", timeout=5000)
            assert await cy.locator("#log p:text-is('ana: missed 1')").count() == 1

            # More missed than the history holds: a visible note, the last messages again.
            cut("bo")
            for i in range(55):
                await endpoint.broadcast(ROOM, "new_msg", {"nick": "ana", "body": f"flood {i}"})
            await bo.wait_for_selector("body[data-recovery=too_old]", timeout=10000)
            await bo.wait_for_selector("#log p.note", timeout=5000)
            await bo.wait_for_selector("#log p:text-is('ana: flood 54')", timeout=5000)
            await bo.screenshot(path=str(ARTIFACTS / "chat-not-recovered.png"))
        finally:
            await browser.close()
