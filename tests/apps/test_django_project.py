"""examples/django_project under an ASGI server, driven by the official JS client.

The project runs as users run it (``manage.py migrate``, a user made with
``manage.py shell``, ``uvicorn mysite.asgi:application`` in the project's
folder). A browser-like cookie jar logs in through Django's login form
(CSRF included) and reads the socket token from the room page; a forged
token is refused; the channel reads and writes the database with the async
ORM; a plain sync view's broadcast reaches the joined client.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.apps.support import ROOT, child_env, js_client, server

PROJECT = ROOT / "examples" / "django_project"


class Browser:
    """Cookies and CSRF like a browser, redirects not followed."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect
        )

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def go(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        """(status, Location header, body)."""
        data = urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data)
        if form is not None:
            req.add_header("X-CSRFToken", self.cookie("csrftoken") or "")
            req.add_header("Referer", self.base + path)
        try:
            with self.opener.open(req, timeout=10) as response:
                return response.status, "", response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Location", ""), exc.read().decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


async def _manage(env: dict[str, str], *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "manage.py", *args, cwd=PROJECT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


APP = "mysite.asgi:application"
WAYS = {
    "uvicorn-asgi": [sys.executable, "-m", "uvicorn", APP, "--port", "{port}"],
    "uvicorn-fast-path": [sys.executable, "-m", "uvicorn", APP, "--port", "{port}",
                          "--http", "phoenix_channels.uvicorn:HttpProtocol"],
    "serve": [sys.executable, "-m", "phoenix_channels", "serve", APP, "--port", "{port}"],
}  # fmt: skip


@pytest.mark.parametrize("way", list(WAYS))
async def test_the_django_project(way: str, tmp_path: Path) -> None:
    pytest.importorskip("django")
    env = child_env(DJANGO_DB_PATH=str(tmp_path / "db.sqlite3"))
    env["PYTHONPATH"] += f":{PROJECT}"
    await _manage(env, "migrate", "--noinput", "-v", "0")
    await _manage(env, "shell", "-c", "from django.contrib.auth.models import User; "
                  "User.objects.create_user('ana', password='letmein')")  # fmt: skip
    async with server(WAYS[way], tmp_path, env=env, cwd=PROJECT) as srv:
        browser = Browser(srv.url("", "http"))
        status, location, _ = await asyncio.to_thread(browser.go, "/rooms/lobby/")
        assert (status, location) == (302, "/login/?next=/rooms/lobby/")  # no session, no token
        assert (await asyncio.to_thread(browser.go, "/login/"))[0] == 200
        status, location, _ = await asyncio.to_thread(
            browser.go, "/login/",
            {"username": "ana", "password": "letmein",
             "csrfmiddlewaretoken": browser.cookie("csrftoken") or ""},
        )  # fmt: skip
        assert (status, location) == (302, "/rooms/lobby/"), "login failed"
        status, _, page = await asyncio.to_thread(browser.go, "/rooms/lobby/")
        assert status == 200
        found = re.search(r'data-socket-token="([^"]+)"', page)
        assert found is not None, page
        socket_token = found.group(1)

        forged = socket_token[:-3] + ("AAA" if not socket_token.endswith("AAA") else "BBB")
        async with js_client(srv.url(), "room:lobby", {"token": forged}) as intruder:
            assert (await intruder.next("socket_error", "joined"))["kind"] == "socket_error"

        async with js_client(srv.url(), "room:lobby", {"token": socket_token}) as ana:
            joined = await ana.next("joined")
            assert joined["response"] == {"user": "ana", "history": []}
            answer = await ana.push("new_msg", {"body": "hello from the JS client"})
            assert answer["status"] == "ok"
            new = await ana.event("new_msg")
            assert new["payload"]["body"] == "hello from the JS client"
            assert new["payload"]["id"] == answer["response"]["id"]
            assert (await ana.push("new_msg", {"text": "x"}))["response"]["reason"] == (
                "invalid_payload"
            )

            status, _, body = await asyncio.to_thread(
                browser.go, "/rooms/lobby/announce", {"body": "doors close at 10"}
            )
            assert status == 200, body
            announcement = await ana.event("announcement")
            assert announcement["payload"]["body"] == "doors close at 10"
            assert announcement["payload"]["user"] == "ana"

        async with js_client(srv.url(), "room:lobby", {"token": socket_token}) as again:
            history = (await again.next("joined"))["response"]["history"]
            assert history == [
                {"user": "ana", "body": "hello from the JS client"},
                {"user": "ana", "body": "doors close at 10"},
            ]
    assert "Traceback" not in srv.output, srv.output
