"""The chat demo in a real headless Chromium: two tabs join a room and chat."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from examples.chat.app import endpoint

from .support import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")


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
