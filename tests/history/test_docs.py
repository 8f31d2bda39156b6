"""The examples of docs/recovery.md, run as written."""

from __future__ import annotations

from pathlib import Path

from ..support import connect, load_doc_example


async def test_the_history_example_gives_positions_and_reads_back(tmp_path: Path) -> None:
    app = load_doc_example("docs/recovery.md", "history_app.py", tmp_path)
    read = load_doc_example("docs/recovery.md", "history_read.py", tmp_path)
    client = await connect(app.endpoint, app.UserSocket)
    client.send("1", "1", "room:lobby", "phx_join", {"phx_recover": None})
    client.send("1", "2", "room:lobby", "new_msg", {"body": "hi"})
    frames = await client.frames(3)
    assert [f[3] for f in frames] == ["phx_reply", "phx_recovery", "new_msg"]
    page = await read.first_page(app.endpoint, "room:lobby")
    assert page == [{"event": "new_msg", "payload": {"body": "hi"}, "position": frames[2][1]}]


def test_the_js_helper_ships_in_the_package() -> None:
    from importlib.resources import files

    helper = files("phoenix_channels") / "static" / "recovery.mjs"
    text = helper.read_text()
    assert "export function recoverable" in text and '"phx_recover"' in text
