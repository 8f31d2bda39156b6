"""The echo server the Autobahn|Testsuite fuzzes: a RawSocket on the fast path.

Every text or binary message comes back unchanged, with its opcode. The
WebSocket work (framing, fragmentation, UTF-8 checks, control frames,
closing handshake, permessage-deflate) is all ours: the fast path's protocol
and its frame parser (``transports/rfc6455.py``), reached through the
Transport API like any custom socket.

    python -m phoenix_channels serve tests.autobahn.echo_app:endpoint --port 9001
    # ws://127.0.0.1:9001/echo/websocket
"""

from __future__ import annotations

from phoenix_channels import Endpoint, RawSocket


class EchoSocket(RawSocket):
    async def handle_in(self, data: bytes, binary: bool) -> None:
        self.send(data, binary)


endpoint = Endpoint(
    sockets={"/echo": EchoSocket},
    check_origin=False,
    compress=True,  # sections 12 and 13 offer permessage-deflate
    max_frame_size=64 * 1024 * 1024,  # section 9 sends messages of up to 16 MiB
    max_outbound_buffer=128 * 1024 * 1024,  # and reads the echoes back at its own pace
)
