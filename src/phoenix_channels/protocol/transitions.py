"""The one way state machines are written here: a transition table as data.

A machine names its states (an ``Enum``) and writes its moves as a dict
``{(state, event): next_state}`` at the top of its module, with the table
drawn in the module docstring. Every move goes through :func:`advance`,
which looks the pair up; a pair that is not in the table is a bug in our
code and raises :class:`~phoenix_channels.errors.InvalidTransition` naming
the machine, the event and the state. Events a state tolerates without
moving (closing twice, a late send) are rows that lead back to the same
state, so the table lists everything that can happen (``h11/_state.py``
works the same way).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import TypeVar

from ..errors import InvalidTransition

__all__ = ["InvalidTransition", "advance"]

S = TypeVar("S", bound=Enum)


def advance(table: Mapping[tuple[S, str], S], state: S, event: str, machine: str) -> S:
    """The state after ``event`` in ``state``; InvalidTransition if the table has no such move."""
    try:
        return table[state, event]
    except KeyError:
        raise InvalidTransition(
            f"{machine}: event {event!r} is not allowed in state {state.value!r}"
        ) from None
