"""docs/first-app.md, run as written: its files extracted into a project of their own,
its tests run by pytest there, the app served by ``phoenix-channels serve``, and its
Node snippet run against it with the official client."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pubsub.engines import free_port

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


def test_the_node_snippet_talks_to_the_served_app(project: Path) -> None:
    if not (NODE_MODULES / "phoenix").is_dir() or not (NODE_MODULES / "ws").is_dir():
        pytest.skip("the npm packages are not installed (make bootstrap)")
    (project / "node_modules").symlink_to(NODE_MODULES)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "phoenix_channels", "serve", "chat:endpoint", "--port", str(port),
         "--app-dir", str(project), "--log-level", "warning"],
        cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"the app did not start:\n{server.stdout.read()}")  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the app did not start within 30 s"
                time.sleep(0.1)
        node = subprocess.run(
            ["node", "client.mjs"],
            cwd=project, env={**env(), "CHAT_URL": f"http://127.0.0.1:{port}"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        out = node.stdout + node.stderr
        assert node.returncode == 0, out
        assert "online: node-bot" in out, out
        assert "node-bot: hello from Node" in out, out
    finally:
        server.terminate()
        server.wait(timeout=30)


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
