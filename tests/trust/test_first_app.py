"""docs/first-app.md, run as written: its files extracted into a project of their own,
its tests run by pytest there, the app served by ``phoenix-channels serve``, and its
Node snippet and its browser snippet (in headless Chromium, in a page the app serves)
run against it with the official client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.apps.support import Server, server

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "first-app.md"
NODE_MODULES = ROOT / "tests" / "js" / "node_modules"
SECRET = "first-app-test-secret-" + "s" * 32


def block(lang: str, first_line: str) -> str:
    found = re.search(rf"```{lang}\n({re.escape(first_line)}\n.*?)```", DOC.read_text(), re.S)
    assert found, f"docs/first-app.md lost its {first_line!r} block"
    return found.group(1)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("chat.py", "conftest.py", "test_chat.py"):
        (tmp_path / name).write_text(block("python", f"# {name}"))
    (tmp_path / "pyproject.toml").write_text(block("toml", "# pyproject.toml"))
    (tmp_path / "client.mjs").write_text(block("js", "// client.mjs"))
    return tmp_path


def env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PHX_"))}
    return {**base, "PYTHONPATH": str(ROOT / "src"), "SECRET_KEY_BASE": SECRET, "CI": ""}


def test_its_tests_pass_with_the_settings_it_gives(project: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=project, env=env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "3 passed" in out, out


def serving(project: Path, app: str) -> contextlib.AbstractAsyncContextManager[Server]:
    """``phoenix-channels serve app`` from the project's folder (stopped after the block)."""
    args = [sys.executable, "-m", "phoenix_channels", "serve", app, "--port", "{port}",
            "--app-dir", str(project), "--log-level", "warning"]  # fmt: skip
    return server(args, project, env=env(), cwd=ROOT)


async def test_the_node_snippet_talks_to_the_served_app(project: Path) -> None:
    if not (NODE_MODULES / "phoenix").is_dir() or not (NODE_MODULES / "ws").is_dir():
        pytest.skip("the npm packages are not installed (make bootstrap)")
    (project / "node_modules").symlink_to(NODE_MODULES)
    async with serving(project, "chat:endpoint") as srv:
        node = await asyncio.to_thread(
            subprocess.run, ["node", "client.mjs"],
            cwd=project, env={**env(), "CHAT_URL": f"http://127.0.0.1:{srv.port}"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    out = node.stdout + node.stderr
    assert node.returncode == 0, out
    assert "online: node-bot" in out, out
    assert "node-bot: hello from Node" in out, out


# What the page asks the reader to add: a Route("/") serving a page with the snippet.
# No bundler here: an import map gives `import ... from "phoenix"` the client's ES module.
PAGE_APP = """
from pathlib import Path

from starlette.responses import FileResponse, HTMLResponse
from starlette.routing import Route

from chat import endpoint, routes

HERE = Path(__file__).parent
PAGE = (
    '<!doctype html><title>chat</title>'
    '<script type="importmap">{"imports": {"phoenix": "/phoenix.mjs"}}</script>'
    '<script type="module">' + (HERE / "browser.js").read_text() + '</script>'
)


async def index(request):
    return HTMLResponse(PAGE)


async def phoenix_module(request):
    return FileResponse(HERE / "phoenix.mjs", media_type="text/javascript")


routes.router.routes += [Route("/", index), Route("/phoenix.mjs", phoenix_module)]
"""

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)"
)
async def test_the_browser_snippet_in_a_page_the_app_serves(project: Path) -> None:
    from playwright.async_api import async_playwright

    if not (NODE_MODULES / "phoenix").is_dir():
        pytest.skip("the npm packages are not installed (make bootstrap)")
    (project / "browser.js").write_text(block("js", 'import { Socket, Presence } from "phoenix";'))
    (project / "page.py").write_text(PAGE_APP)
    shutil.copy(NODE_MODULES / "phoenix" / "priv" / "static" / "phoenix.mjs", project)
    lines: list[str] = []
    errors: list[str] = []
    async with serving(project, "page:endpoint") as srv, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = await browser.new_page()
            page.on("console", lambda message: lines.append(message.text))
            page.on("pageerror", lambda error: errors.append(str(error)))
            # localhost, as the page says: the endpoint's default host.
            await page.goto(f"http://localhost:{srv.port}/")
            expected = {"online: ana", "ana: hi all"}
            with contextlib.suppress(TimeoutError):  # the asserts below tell what was seen
                async with asyncio.timeout(20):
                    while not expected <= set(lines) and not errors:
                        await asyncio.sleep(0.05)
        finally:
            await browser.close()
    assert not errors, errors
    assert expected <= set(lines), lines


def test_the_readme_links_it() -> None:
    assert "docs/first-app.md" in (ROOT / "README.md").read_text()


def test_the_readme_lists_every_endpoint_option_with_its_default() -> None:
    import inspect

    from phoenix_channels import Endpoint

    readme = (ROOT / "README.md").read_text()
    for name, param in inspect.signature(Endpoint.__init__).parameters.items():
        if name == "self":
            continue
        row = re.search(rf"^\| `{name}` \| ([^|]+) \|", readme, re.M)
        assert row, f"README's Endpoint table lacks {name}"
        shown = re.match(r"`([^`]+)`", row.group(1).strip())
        if param.default is inspect.Parameter.empty or name == "pubsub":
            continue  # required, or a default built at call time (PubSub())
        assert shown, f"README's row for {name} shows no default"
        assert eval(shown.group(1)) == param.default, name  # our own README
