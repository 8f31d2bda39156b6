"""Recovery at join: read the client's position, replay what it missed, then go live.

Called by the channel runtime (``channel.py``) at two points of a join:

* :func:`take_request` before the join callback: removes :data:`RECOVER_KEY`
  from the payload (apps never see it there; ``Channel.recovery`` holds the
  parsed position instead);
* :func:`recover` after the ok reply was sent and the channel subscribed.

How :func:`recover` keeps "every missed message, in order, once, before any
live message": it first swaps the channel's fast-lane subscription for a
*held* one, so live broadcasts wait in a list; then it reads the store
(which, for a live broadcast, has stored it before anyone could receive
it); pushes the :data:`RECOVERY_EVENT`; replays the stored messages after
the client's offset; hands on the held ones whose offset is past the last
replayed one (the others were just replayed); and restores the fast lane.
No await separates the reply and the swap, so no live frame slips ahead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from .. import telemetry
from ..protocol.messages import Broadcast
from ..telemetry import CHANNEL_RECOVER
from . import RECOVER_KEY, RECOVERY_EVENT, History, HistorySlice, Outcome, Position

__all__ = ["NOT_ASKED", "history_routes", "recover", "take_request"]

log = logging.getLogger("phoenix_channels.history")

NOT_ASKED: Any = object()
"""The client sent no :data:`RECOVER_KEY`: nothing is replayed and no outcome is pushed."""

_INVALID: Any = object()


def history_routes(socket_classes: Iterable[type]) -> list[tuple[str, History | None]]:
    """``(pattern, History or None)`` for every channel route of these Socket classes."""
    routes: list[tuple[str, History | None]] = []
    for socket_cls in socket_classes:
        for pattern, target in dict(getattr(socket_cls, "channels", {}) or {}).items():
            channel = target[0] if isinstance(target, tuple) else target
            routes.append((pattern, getattr(channel, "history", None)))
    return routes


def take_request(payload: Any) -> tuple[Any, Any]:
    """``(payload without the key, requested)``: requested is NOT_ASKED, None or a Position."""
    if type(payload) is not dict or RECOVER_KEY not in payload:
        return payload, NOT_ASKED
    payload = dict(payload)
    raw = payload.pop(RECOVER_KEY)
    if raw is None:
        return payload, None
    position = Position.parse(raw)
    return payload, _INVALID if position is None else position


def decide(requested: Position | None, found: HistorySlice) -> Outcome:
    """The outcome for a client at ``requested`` given what the store holds (no I/O)."""
    if requested is None:
        return Outcome(False, "no_position", found.position)
    if requested.epoch != found.epoch:
        return Outcome(False, "epoch_changed", found.position)
    if requested.offset > found.top:
        return Outcome(False, "not_found", found.position)
    if requested.offset + 1 < found.first:
        return Outcome(False, "too_old", found.position)
    # Never present a partial replay as complete: the store must have given
    # exactly the offsets after the client's, one by one, in this epoch.
    expected = requested.offset + 1
    for message in found.messages:
        position = _position(message)
        if position is None or position.epoch != found.epoch or position.offset != expected:
            log.error("the history of a topic has a gap at offset %d; not recovered", expected)
            return Outcome(False, "not_found", found.position)
        expected += 1
    if expected != found.top + 1:
        return Outcome(False, "not_found", found.position)
    return Outcome(True, None, found.position, found.top - requested.offset)


async def recover(channel: Any, requested: Any) -> None:
    """Push the outcome and replay; ``channel`` has just been joined (ok reply sent)."""
    if not CHANNEL_RECOVER.on:
        await _recover(channel, requested)
        return
    start = telemetry.now()
    await _recover(channel, requested)
    if channel.recovered is not None:
        telemetry.recover_done(channel, channel.recovered, start)


async def _recover(channel: Any, requested: Any) -> None:
    sock = channel.socket
    pubsub = sock.endpoint.pubsub
    topic = channel.topic
    encoder = sock._encoder
    history = pubsub.history_policy(topic)
    if history is None or pubsub.history_store is None:
        _push_outcome(channel, Outcome(False, "history_off", None))
        return
    if requested is _INVALID:
        requested = Position("invalid", -1)
        invalid = True
    else:
        invalid = False
    held: list[Any] = []
    swapped = pubsub.hold(topic, channel, held.append)
    if swapped is None:  # not subscribed (the join reply could not be sent): nothing to do
        return
    write, restore = swapped
    try:
        after = None if requested is None else max(requested.offset, 0)
        try:
            store = pubsub.history_store
            # A store whose engine may deliver out of order caps the replay at
            # what this node has delivered (see history/nats.py).
            read = getattr(store, "read_for_replay", store.read)
            found = await read(topic, history, after)
        except Exception:
            log.exception("reading the history of %r failed", topic)
            found = None
        if not channel.joined or sock._closed:
            return
        if found is None:
            outcome = Outcome(False, "not_found", None)
        elif invalid:
            outcome = Outcome(False, "invalid_position", found.position)
        else:
            outcome = decide(requested, found)
        replay = found.messages if (found is not None and outcome.recovered) else []
        last = outcome.position.offset if outcome.recovered and outcome.position else None
        if not outcome.recovered and held and outcome.position is not None:
            # Not recovered: the client starts just before the first held message
            # (one still on its way when the store was read may come after the read).
            here = outcome.position
            offsets = [p.offset for p in map(_position, held) if p and p.epoch == here.epoch]
            if offsets and min(offsets) <= here.offset:
                outcome = Outcome(False, outcome.reason, Position(here.epoch, min(offsets) - 1))
        _push_outcome(channel, outcome)
        for message in replay:
            _deliver(channel, write, encoder, message)
        epoch = None if outcome.position is None else outcome.position.epoch
        for message in held:
            if type(message) is not Broadcast:
                continue
            if last is not None:
                position = _position(message)
                if position is not None and position.offset <= last and position.epoch == epoch:
                    continue  # replayed already
            _deliver(channel, write, encoder, message)
        held.clear()
    finally:
        restore()
        if channel.joined and not sock._closed:
            # Anything held after the loop above (none: no await since) is lost otherwise.
            for message in held:
                if type(message) is Broadcast:
                    _deliver(channel, write, encoder, message)


def _push_outcome(channel: Any, outcome: Outcome) -> None:
    channel.recovered = outcome
    sock = channel.socket
    sock._send(
        sock._encoder.push(channel.join_ref, None, channel.topic, RECOVERY_EVENT, outcome.payload())
    )


def _deliver(channel: Any, write: Any, encoder: Any, message: Broadcast) -> None:
    intercepts = channel._intercepts
    if intercepts is not None and message.event in intercepts:
        channel._intercepted(message)
        return
    try:
        frame = encoder.broadcast(message)
    except Exception:
        log.exception("cannot encode a replayed broadcast on %r", message.topic)
        return
    if frame is not None:
        write(frame)


def _position(message: Any) -> Position | None:
    ref = getattr(message, "ref", None)
    return None if ref is None else Position.parse(ref)
