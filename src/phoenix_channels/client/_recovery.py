"""Recovery on rejoin for the Python client: positions tracked per channel.

A phoenix-channels server gives each broadcast on a topic with history a
position in its ``ref`` (``"<epoch>:<offset>"``, see ``docs/recovery.md``).
Each :class:`~phoenix_channels.client.Channel` remembers the last position
it saw and, at every rejoin, adds it to its join params under the reserved
key ``phx_recover``; the server then replays what the channel missed, in
order and once, and first pushes ``phx_recovery`` with the outcome, which
the channel keeps in ``channel.recovery`` and hands to ``on_recovery``
callbacks.

Nothing is added to the join params until a position was seen, so against
a server without history (real Phoenix included) the client behaves as
before; ``recover=True`` asks from the first join on (``phx_recover: null``),
so a channel that saw no message yet still learns where it stands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..history import RECOVER_KEY, RECOVERY_EVENT, Position

__all__ = ["Tracker"]


class Tracker:
    """The position and last outcome of one channel; wraps its join params."""

    __slots__ = ("ask", "outcome", "params", "position")

    def __init__(self, params: Any, ask: bool) -> None:
        self.params = params
        self.ask = ask
        self.position: str | None = None
        self.outcome: dict[str, Any] | None = None

    def join_params(self) -> Any:
        base = self.params() if callable(self.params) else self.params
        if self.position is None and not self.ask:
            return base
        merged = dict(base or {})
        merged[RECOVER_KEY] = self.position
        return merged

    def observe(self, event: str, payload: Any, ref: Any) -> bool:
        """Track one incoming message; True if it is the recovery outcome."""
        if event == RECOVERY_EVENT and type(payload) is dict:
            self.outcome = payload
            if not payload.get("recovered"):
                self.position = payload.get("position")
            return True
        if type(ref) is str:
            seen = Position.parse(ref)
            if seen is not None:
                now = Position.parse(self.position)
                if now is None or now.epoch != seen.epoch or seen.offset > now.offset:
                    self.position = ref
        return False


Callback = Callable[[dict[str, Any]], object]
