"""docs/client.md's example, run as written against the chat demo's app."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.chat.app import endpoint

from ..support import Server, load_doc_example


async def test_the_chat_client_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = load_doc_example("docs/client.md", "chat_client.py", tmp_path)
    async with Server(endpoint) as srv:
        await example.main(f"ws://127.0.0.1:{srv.port}/socket")
        await example.main(f"ws://127.0.0.1:{srv.port}/socket")  # now there is history
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "0 earlier messages" and out[1] == "the server said ok"
    assert "joined {'nick': 'py-bot'}" in out
    assert out.count("new_msg {'nick': 'py-bot', 'body': 'hello from Python'}") == 2
    assert "1 earlier messages" in out
