"""The shared transition-table idiom: moves from the table, a named error otherwise."""

from __future__ import annotations

from enum import Enum

import pytest

from phoenix_channels.errors import InvalidTransition, UsageError
from phoenix_channels.protocol.transitions import advance


class Door(Enum):
    OPEN = "open"
    SHUT = "shut"


TABLE = {
    (Door.OPEN, "shut"): Door.SHUT,
    (Door.SHUT, "open"): Door.OPEN,
    (Door.SHUT, "shut"): Door.SHUT,
}


def test_a_move_in_the_table_gives_the_next_state() -> None:
    assert advance(TABLE, Door.OPEN, "shut", "door") is Door.SHUT
    assert advance(TABLE, Door.SHUT, "shut", "door") is Door.SHUT  # tolerated, no move


def test_a_move_not_in_the_table_names_machine_event_and_state() -> None:
    with pytest.raises(InvalidTransition) as caught:
        advance(TABLE, Door.OPEN, "open", "front door")
    assert str(caught.value) == "front door: event 'open' is not allowed in state 'open'"
    assert isinstance(caught.value, UsageError)  # a bug in our code, not the peer's doing
