"""The cross-node relay: reaching a long-poll session that lives on another node.

A session lives in the process whose endpoint created it. A request that
lands on another endpoint of the cluster drives it through PubSub on the
session's private topic (its token names the topic): the requesting node
sends *commands*, the owning node sends back *answers*, both on that topic.

Commands and answers are the frozen dataclasses below. They are turned into
plain dicts (what every PubSub adapter carries) by :func:`encode` and back by
:func:`decode`, and nowhere else; :func:`decode` rejects anything malformed
with a :class:`~phoenix_channels.errors.DecodeError` that says what is wrong.
The dicts, as they travel (``frames`` items are ``[text, is_base64]``)::

    commands  {"cmd": "ping" | "flush" | "expired", "ref": r}
              {"cmd": "dispatch", "ref": r, "frames": [[text, bool], ...]}
    answers   {"lp": "pong" | "ok" | "now_available", "ref": r}
              {"lp": "messages", "ref": r, "messages": [text, ...]}

``flush`` asks for the frames waiting; if none wait, the owner remembers the
ref and sends ``now_available`` once some arrive, and the requester sends a
fresh ``flush`` (or ``expired`` when its window closed first).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import DecodeError

if TYPE_CHECKING:
    from collections.abc import Hashable

    from ...pubsub import PubSub

__all__ = [
    "Answer",
    "AnswerSender",
    "Command",
    "Dispatch",
    "Expired",
    "Flush",
    "Messages",
    "NowAvailable",
    "Ok",
    "Ping",
    "Pong",
    "RemoteSession",
    "decode",
    "encode",
]

log = logging.getLogger("phoenix_channels.longpoll")

# -- commands: requesting node -> owning node ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Is the session alive? Answered with :class:`Pong`."""

    ref: str


@dataclass(frozen=True, slots=True)
class Flush:
    """A poll: :class:`Messages` now, or :class:`NowAvailable` once frames come."""

    ref: str


@dataclass(frozen=True, slots=True)
class Expired:
    """The poll ``ref`` gave up waiting: forget it."""

    ref: str


@dataclass(frozen=True, slots=True)
class Dispatch:
    """The client's frames from a POST, ``(data, binary)`` each, in order. Answered :class:`Ok`."""

    ref: str
    frames: tuple[tuple[bytes, bool], ...]


Command = Ping | Flush | Expired | Dispatch

# -- answers: owning node -> requesting node ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Pong:
    ref: str


@dataclass(frozen=True, slots=True)
class Ok:
    ref: str


@dataclass(frozen=True, slots=True)
class NowAvailable:
    ref: str


@dataclass(frozen=True, slots=True)
class Messages:
    ref: str
    messages: tuple[str, ...]


Answer = Pong | Ok | NowAvailable | Messages

_COMMANDS: dict[str, type[Ping | Flush | Expired]] = {
    "ping": Ping,
    "flush": Flush,
    "expired": Expired,
}
_ANSWERS: dict[str, type[Pong | Ok | NowAvailable]] = {
    "pong": Pong,
    "ok": Ok,
    "now_available": NowAvailable,
}
_COMMAND_NAMES = {cls: name for name, cls in _COMMANDS.items()}
_ANSWER_NAMES = {cls: name for name, cls in _ANSWERS.items()}

# -- the one boundary between the types and the dicts ----------------------------------------


def encode(item: Command | Answer) -> dict[str, Any]:
    """The dict that carries ``item`` over PubSub."""
    if isinstance(item, Dispatch):
        frames = [
            [base64.b64encode(data).decode(), True] if binary else [data.decode(), False]
            for data, binary in item.frames
        ]
        return {"cmd": "dispatch", "ref": item.ref, "frames": frames}
    if isinstance(item, Messages):
        return {"lp": "messages", "ref": item.ref, "messages": list(item.messages)}
    if isinstance(item, Ping | Flush | Expired):
        return {"cmd": _COMMAND_NAMES[type(item)], "ref": item.ref}
    return {"lp": _ANSWER_NAMES[type(item)], "ref": item.ref}


def decode(message: Any) -> Command | Answer:
    """The command or answer a PubSub message carries; DecodeError if it is malformed."""
    if not isinstance(message, dict):
        raise DecodeError(f"long-poll relay message must be a dict, got {type(message).__name__}")
    ref = message.get("ref")
    if not isinstance(ref, str):
        raise DecodeError(f"long-poll relay message without a str 'ref': {message!r:.200}")
    if "cmd" in message:
        name = message["cmd"]
        if name == "dispatch":
            return Dispatch(ref, _decode_frames(message.get("frames")))
        command = _COMMANDS.get(name) if isinstance(name, str) else None
        if command is None:
            raise DecodeError(f"unknown long-poll relay command {name!r}")
        return command(ref)
    if "lp" in message:
        name = message["lp"]
        if name == "messages":
            messages = message.get("messages")
            if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
                raise DecodeError("long-poll relay 'messages' must be a list of str")
            return Messages(ref, tuple(messages))
        answer = _ANSWERS.get(name) if isinstance(name, str) else None
        if answer is None:
            raise DecodeError(f"unknown long-poll relay answer {name!r}")
        return answer(ref)
    raise DecodeError(
        f"long-poll relay message is neither a command nor an answer: {message!r:.200}"
    )


def _decode_frames(wire: Any) -> tuple[tuple[bytes, bool], ...]:
    if not isinstance(wire, list):
        raise DecodeError("long-poll relay 'frames' must be a list of [text, is_base64] pairs")
    frames: list[tuple[bytes, bool]] = []
    for item in wire:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], bool)
        ):
            raise DecodeError(f"long-poll relay frame must be [text, is_base64], got {item!r:.100}")
        text, binary = item
        if binary:
            try:
                frames.append((base64.b64decode(text, validate=True), True))
            except (binascii.Error, ValueError):
                raise DecodeError("long-poll relay binary frame is not valid base64") from None
        else:
            frames.append((text.encode(), False))
    return tuple(frames)


# -- the owning node's side ------------------------------------------------------------------


class AnswerSender:
    """Publishes a session's answers, holding each publish until it is done.

    A failed publish is logged (the requester times out as if the session
    were gone); nothing is left for the loop to report as "never retrieved".
    """

    __slots__ = ("_from", "_pubsub", "_tasks", "topic")

    def __init__(self, pubsub: PubSub, topic: str, from_: Hashable) -> None:
        self._pubsub = pubsub
        self.topic = topic
        self._from = from_
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, answer: Answer) -> None:
        task = asyncio.get_running_loop().create_task(
            self._pubsub.broadcast(self.topic, encode(answer), from_=self._from)
        )
        self._tasks.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.warning(
                "long-poll relay: could not answer on %s (%r); the other node will time out",
                self.topic,
                exc,
            )

    @property
    def pending(self) -> int:
        """Answers being published now."""
        return len(self._tasks)


# -- the requesting node's side ----------------------------------------------------------------


class RemoteSession:
    """A session on another node, driven through PubSub on its private topic.

    Use as ``async with RemoteSession(...) as remote``: it listens for
    answers on the topic while inside.
    """

    def __init__(self, pubsub: PubSub, topic: str, pubsub_timeout: float) -> None:
        self.pubsub = pubsub
        self.topic = topic
        self.pubsub_timeout = pubsub_timeout
        self._answers: dict[str, asyncio.Future[Answer]] = {}
        self._notices: asyncio.Queue[str] = asyncio.Queue()

    def _on_answer(self, message: Any) -> None:
        if not isinstance(message, dict) or "lp" not in message:
            return  # commands travel on the same topic
        try:
            answer = decode(message)
        except DecodeError as exc:
            log.warning("long-poll relay: dropped a malformed answer on %s: %s", self.topic, exc)
            return
        if isinstance(answer, NowAvailable):
            self._notices.put_nowait(answer.ref)
            return
        future = self._answers.get(answer.ref)
        if future is not None and not future.done() and isinstance(answer, Answer):
            future.set_result(answer)

    async def __aenter__(self) -> RemoteSession:
        self.pubsub.subscribe(self.topic, self._on_answer)
        # on a cluster adapter: be subscribed on the engine before asking anything
        await self.pubsub.prepare(self.topic)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.pubsub.unsubscribe(self.topic, self._on_answer)

    async def _send(self, command: Command) -> None:
        await self.pubsub.broadcast(self.topic, encode(command), from_=self._on_answer)

    async def call(self, command: Command, timeout: float) -> Answer | None:
        """Send ``command`` and wait up to ``timeout`` for its answer (None: none came)."""
        future = self._answers[command.ref] = asyncio.get_running_loop().create_future()
        try:
            await self._send(command)
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self._answers.pop(command.ref, None)

    async def alive(self) -> bool:
        return await self.call(Ping(_ref()), self.pubsub_timeout) is not None

    async def poll(self, window: float) -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        ref = _ref()
        future = self._answers[ref] = loop.create_future()
        try:
            await self._send(Flush(ref))
            while True:
                notice = asyncio.ensure_future(self._notices.get())
                done, _ = await asyncio.wait(
                    {future, notice},
                    timeout=deadline - loop.time(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if future in done:
                    notice.cancel()
                    return _messages(future.result())
                if notice in done and notice.result() == ref:
                    # frames arrived meanwhile: ask for them (a fresh window)
                    return _messages(await self.call(Flush(_ref()), window))
                if not done:
                    notice.cancel()
                    await self._send(Expired(ref))
                    return []
        finally:
            self._answers.pop(ref, None)

    async def dispatch(self, frames: list[tuple[bytes, bool]], timeout: float) -> bool:
        return await self.call(Dispatch(_ref(), tuple(frames)), timeout) is not None


def _ref() -> str:
    return secrets.token_hex(8)


def _messages(answer: Answer | None) -> list[str]:
    return list(answer.messages) if isinstance(answer, Messages) else []
