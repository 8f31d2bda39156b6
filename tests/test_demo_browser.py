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


async def test_two_tabs_chat_over_websocket() -> None:
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    async with Server(endpoint) as srv, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            url = f"http://127.0.0.1:{srv.port}/"
            tabs = [await browser.new_page() for _ in range(2)]
            for tab, nick in zip(tabs, ("ana", "bo"), strict=True):
                await tab.goto(url)
                await tab.wait_for_selector("body[data-connected]", timeout=5000)
                await tab.fill("input[name=nick]", nick)
                await tab.click("#who button")
                await tab.wait_for_selector("body[data-joined]", timeout=5000)
            await tabs[0].fill("input[name=body]", "hello from ana")
            await tabs[0].press("input[name=body]", "Enter")
            for tab in tabs:
                await tab.wait_for_selector("#log p:has-text('ana: hello from ana')", timeout=5000)
            await tabs[1].wait_for_selector("#log p:has-text('bo joined')", timeout=5000)
            await tabs[1].screenshot(path=str(ARTIFACTS / "chat-websocket.png"))
            assert endpoint.pubsub.subscribers("room:lobby") == 2
        finally:
            await browser.close()
