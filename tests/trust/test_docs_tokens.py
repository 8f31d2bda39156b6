"""The token example of docs/limits.md, run as written: extracted, served, connected to."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from phoenix_channels import Channel, token

from ..support import Server

DOC = Path(__file__).resolve().parents[2] / "docs" / "limits.md"


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return {"user_id": self.socket.assigns["user_id"]}


def load_example(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    block = re.search(r"```python\n(import os\n.*?TokenError.*?)```", DOC.read_text(), re.S)
    assert block, "docs/limits.md lost its token example"
    monkeypatch.setenv("SECRET_KEY_BASE", "a secret key base for the documentation test")
    namespace: dict[str, Any] = {"RoomChannel": RoomChannel, "__name__": "limits_example"}
    exec(compile(block.group(1), str(DOC), "exec"), namespace)
    return namespace


async def test_the_documented_token_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example(monkeypatch)
    signed = example["socket_token"](42)
    async with Server(example["endpoint"]) as srv:
        base = f"ws://127.0.0.1:{srv.port}/socket/websocket?vsn=2.0.0"
        encoded = base64.urlsafe_b64encode(signed.encode()).decode().rstrip("=")
        for options in (
            {"uri": f"{base}&token={signed}"},
            {"uri": base, "subprotocols": ["phoenix", f"base64url.bearer.phx.{encoded}"]},
        ):
            async with websockets.connect(**options) as ws:
                await ws.send('["1","1","room:1","phx_join",{}]')
                assert '"response":{"user_id":42}' in await ws.recv()
        forged = token.sign("someone else's secret key base", "user socket", 42)
        for query in (f"&token={forged}", ""):
            with pytest.raises(InvalidStatus) as info:
                async with websockets.connect(base + query):
                    pass
            assert info.value.response.status_code == 403
