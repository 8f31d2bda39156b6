"""``endpoint.broadcast`` from a plain script, outside any server: it reaches every node.

    python -m tests.cluster.broadcast TOPIC EVENT '{"json": "payload"}'

Configured by the same environment as :mod:`tests.cluster.app`, whose
endpoint it imports, as an application's own scripts would.
"""

from __future__ import annotations

import asyncio
import json
import sys

from tests.cluster.app import endpoint


async def main(topic: str, event: str, payload: dict[str, object]) -> None:
    await endpoint.start()
    try:
        await endpoint.broadcast(topic, event, payload)
    finally:
        await endpoint.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
