"""docs/client.md's example, run as written against the chat demo's app."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from examples.chat.app import endpoint

from ..support import Server

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def load_example(tmp_path: Path) -> Any:
    code = re.search(r"```python\n(# chat_client\.py.*?)```", DOC.read_text(), re.S)
    assert code, "docs/client.md lost its chat_client.py example"
    path = tmp_path / "chat_client.py"
    path.write_text(code.group(1))
    spec = importlib.util.spec_from_file_location("chat_client", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["chat_client"] = module
    spec.loader.exec_module(module)
    return module


async def test_the_chat_client_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example(tmp_path)
    async with Server(endpoint) as srv:
        await example.main(f"ws://127.0.0.1:{srv.port}/socket")
        await example.main(f"ws://127.0.0.1:{srv.port}/socket")  # now there is history
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "0 earlier messages" and out[1] == "the server said ok"
    assert "joined {'nick': 'py-bot'}" in out
    assert out.count("new_msg {'nick': 'py-bot', 'body': 'hello from Python'}") == 2
    assert "1 earlier messages" in out
