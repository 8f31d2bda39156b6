"""The history store on Redis: a stream per topic, positions made by one Lua script.

Per topic, two keys (``<prefix>`` is the adapter's prefix):

* ``<prefix>:h:m:<topic>``, a hash: ``e`` the topic's epoch, ``o`` its last offset;
* ``<prefix>:h:s:<topic>``, a stream: one entry per stored message, fields
  ``o`` (its offset) and ``d`` (the message), trimmed by size (``MAXLEN``)
  and by age (``MINID``: stream IDs are Redis's clock in milliseconds).

One script (:data:`_APPEND`) increments the offset, adds the entry, trims,
and PUBLISHes the message with its position, atomically: every node
receives the messages of a topic in offset order, and a message that
anyone received is stored. The publishing node delivers its own broadcast
from that echo too, so it sees the same order as the others.

The epoch lives in the hash: when it vanishes (FLUSHALL, a restart without
persistence, eviction, the keys' expiry), the next write or read makes a
new epoch (a fresh token from the node) and drops any stale stream, so a
client holding an older position hears ``epoch_changed``. With a ``ttl``,
both keys expire after ``max(10 * ttl, 1 day)`` without writes, so idle
topics do not stay in Redis for ever.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import Hashable
from typing import Any, Protocol

from ..errors import BroadcastError
from ..protocol.messages import Broadcast
from ..pubsub import codec
from . import History, HistorySlice
from .memory import binary_refused

__all__ = ["RedisHistory"]


class RedisLink(Protocol):
    """What the store needs from the Redis adapter (``pubsub/redis.py``)."""

    url: str
    prefix: str
    node_name: str
    stats: Any

    def channel_for(self, topic: str) -> str: ...

    def skip_on_echo(self, from_: Any) -> int: ...

    async def history_command(self, *args: bytes | str | int) -> Any:
        """One command, bounded by the adapter's timeout; BroadcastError if the link is down."""
        ...


_INIT = """
local meta, stream = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', epoch, 'o', 0)
end
local ttl = tonumber(ARGV[3])
local function trim()
  if ttl > 0 then
    local t = redis.call('TIME')
    local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - ttl
    if oldest > 0 then redis.call('XTRIM', stream, 'MINID', oldest) end
  end
end
"""

# ARGV: candidate epoch, size, ttl ms (0: none), keep ms, head, body, channel
_APPEND = (
    _INIT
    + """
local offset = redis.call('HINCRBY', meta, 'o', 1)
redis.call('XADD', stream, 'MAXLEN', ARGV[2], '*', 'o', offset, 'd', ARGV[6])
trim()
if ttl > 0 then
  redis.call('PEXPIRE', meta, ARGV[4])
  redis.call('PEXPIRE', stream, ARGV[4])
end
local pos = epoch .. ':' .. offset
redis.call('PUBLISH', ARGV[7], ARGV[5] .. string.char(#pos) .. pos .. ARGV[6])
return pos
"""
)

# ARGV: candidate epoch, after (-1: bounds only), ttl ms (0: none), keep ms
_READ = (
    _INIT
    + """
if ttl > 0 then redis.call('PEXPIRE', meta, ARGV[4]) end
trim()
local top = tonumber(redis.call('HGET', meta, 'o'))
local len = redis.call('XLEN', stream)
local after = tonumber(ARGV[2])
local entries = {}
if after >= 0 and top > after then
  local n = math.min(top - after, len)
  if n > 0 then entries = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', n) end
end
return {epoch, top, top - len + 1, entries}
"""
)


class _Script:
    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    async def run(self, adapter: RedisLink, keys: list[str], args: list[Any]) -> Any:
        try:
            try:
                return await adapter.history_command("EVALSHA", self.sha, len(keys), *keys, *args)
            except BroadcastError:
                raise
            except Exception as exc:
                if "NOSCRIPT" not in str(exc):
                    raise
                return await adapter.history_command("EVAL", self.text, len(keys), *keys, *args)
        except BroadcastError:
            raise
        except Exception as exc:
            raise BroadcastError(f"redis at {adapter.url}: {exc}") from None


_APPEND_SCRIPT = _Script(_APPEND)
_READ_SCRIPT = _Script(_READ)


class RedisHistory:
    """Positions and stored messages in Redis, shared by every node of the cluster."""

    def __init__(self, adapter: RedisLink) -> None:
        self.adapter = adapter
        self._head = codec.positioned_head(adapter.node_name.encode())
        self._token = secrets.token_urlsafe(6).replace("-", "x").replace("_", "y")
        self._count = itertools.count()

    def _epoch(self) -> str:
        # Unique over time: this node's random token and a counter (a flush
        # must never bring an old epoch back).
        return f"r{self._token}{next(self._count):x}"

    def _keys(self, topic: str) -> list[str]:
        prefix = self.adapter.prefix
        return [f"{prefix}:h:m:{topic}", f"{prefix}:h:s:{topic}"]

    @staticmethod
    def _times(history: History) -> tuple[int, int]:
        if history.ttl is None:
            return 0, 0
        ttl = max(1, int(history.ttl * 1000))
        return ttl, max(10 * ttl, 86_400_000)

    async def append(
        self, topic: str, broadcast: Broadcast, history: History, from_: Hashable = None
    ) -> None:
        if type(broadcast.payload) is bytes:
            raise binary_refused(topic)
        adapter = self.adapter
        token = None if from_ is None else adapter.skip_on_echo(from_)
        try:
            body = codec.encode_value([topic, broadcast, token])
        except Exception as exc:
            raise BroadcastError(f"the message on {topic!r} cannot be sent: {exc}") from None
        ttl, keep = self._times(history)
        await _APPEND_SCRIPT.run(
            adapter,
            self._keys(topic),
            [
                self._epoch(),
                history.size,
                ttl,
                keep,
                self._head,
                body,
                adapter.channel_for(topic),
            ],
        )
        adapter.stats.published += 1
        return None

    async def read(self, topic: str, history: History, after: int | None) -> HistorySlice:
        ttl, keep = self._times(history)
        reply = await _READ_SCRIPT.run(
            self.adapter,
            self._keys(topic),
            [self._epoch(), -1 if after is None else after, ttl, keep],
        )
        epoch_raw, top, first, entries = reply
        epoch = epoch_raw.decode() if isinstance(epoch_raw, bytes) else str(epoch_raw)
        messages: list[Broadcast] = []
        for _id, fields in reversed(entries):
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            offset = int(values[b"o"])
            _topic, stored, _token = codec.decode_body(values[b"d"])
            messages.append(
                Broadcast(stored.topic, stored.event, stored.payload, f"{epoch}:{offset}")
            )
        return HistorySlice(epoch, int(top), int(first), messages)

    async def reset(self) -> None:
        """Delete every topic's history under this adapter's prefix (a new epoch follows)."""
        command = self.adapter.history_command
        cursor: Any = b"0"
        while True:
            cursor, keys = await command(
                "SCAN", cursor, "MATCH", f"{self.adapter.prefix}:h:*", "COUNT", 1000
            )
            if keys:
                await command("DEL", *keys)
            if cursor in (b"0", 0, "0"):
                return
