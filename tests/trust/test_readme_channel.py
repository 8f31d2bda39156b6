"""The README's example channel, tested in process with phoenix_channels.testing.

This is the test the README shows; keep the two in step.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from phoenix_channels import JoinError
from phoenix_channels.testing import ChannelTest

from ..support import load_doc_example


@pytest.fixture
def app(tmp_path: Path) -> Any:
    return load_doc_example("README.md", "app.py", tmp_path)


async def test_the_readme_channel(app: Any) -> None:
    async with ChannelTest(app.endpoint) as ct:
        room = await ct.subscribe_and_join(app.UserSocket, "room:lobby", {"nick": "ana"})
        assert room.reply == {"welcome": "room:lobby"}
        assert room.socket.assigns["nick"] == "ana"

        ref = room.push("echo", {"hi": 1})
        await ct.assert_reply(ref, "ok", {"hi": 1})

        room.push("shout", {"msg": "hey"})
        await ct.assert_broadcast("shout", {"msg": "hey"})  # on the topic
        await ct.assert_push("shout", {"msg": "hey"})  # to the joined client

        with pytest.raises(JoinError) as refused:
            await ct.join(app.UserSocket, "room:secret")
        assert refused.value.response == {"reason": "unauthorized"}


PLUGIN_CONFTEST = """
import importlib.util, sys, pytest
spec = importlib.util.spec_from_file_location("readme_app", {path!r})
app = importlib.util.module_from_spec(spec)
sys.modules["readme_app"] = app
spec.loader.exec_module(app)

@pytest.fixture
def phoenix_endpoint():
    return app.endpoint
"""

PLUGIN_TESTS = """
import pytest
from readme_app import UserSocket

@pytest.mark.asyncio
async def test_echo(channel_test):
    room = await channel_test.subscribe_and_join(UserSocket, "room:lobby", {"nick": "ana"})
    await channel_test.assert_reply(room.push("echo", {"hi": 1}), "ok", {"hi": 1})

@pytest.mark.asyncio
async def test_waits_for_a_reply_that_never_comes(channel_test):
    room = await channel_test.join(UserSocket, "room:lobby")
    room.push("shout", {"msg": "no reply to a shout"})
    await channel_test.assert_reply("2", "ok", timeout=0.2)
"""


# The test the README shows, taken from README.md itself, run in a project of
# its own with pytest-asyncio's auto mode.
def readme_test() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = re.search(r"```python\n# test_app\.py[^\n]*\n(.*?)```", readme, re.S)
    assert found, "README.md lost its test_app.py example"
    return found.group(1).replace("from app import", "from readme_app import")


def run_pytest(project: Path, *options: str) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            *options,
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CI": ""},
    )
    return result.stdout + result.stderr


def test_the_pytest_plugin_in_a_project_of_its_own(app: Any, tmp_path: Path) -> None:
    """A user's project: one fixture in conftest.py, the plugin found by its entry point;
    pytest-asyncio in its default (strict) mode, then in auto mode for the README's test."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(PLUGIN_CONFTEST.format(path=app.__file__))
    (project / "test_room.py").write_text(PLUGIN_TESTS)
    out = run_pytest(project)
    assert "1 failed, 1 passed" in out, out
    assert "assert_reply('2', 'ok', ANY): nothing matching arrived within 0.2 s" in out, out
    assert "push    'room:lobby' 'shout'" in out, out  # what did arrive is listed
    (project / "test_room.py").unlink()
    (project / "test_readme.py").write_text(readme_test())
    out = run_pytest(project, "-o", "asyncio_mode=auto")
    assert "1 passed" in out and "failed" not in out, out
