"""The Presence helper: the JS helper's sync rules, on frames Phoenix really sent.

Transcript 11 was recorded from a Phoenix 1.8 server with Phoenix.Presence:
three clients (A, B, C) join ``room:p1``, B leaves and rejoins, B and C go
away. Replaying what A and B received must give what the JS helper gives.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from phoenix_channels.client import Presence, list_presences, sync_diff, sync_state

TRANSCRIPT = Path(__file__).parent / "transcripts" / "11_ws_presence.txt"
LINE = re.compile(r"^\[\s*\d+ms\] ([A-Z])< (.*)$")


class StubChannel:
    """What Presence uses of a channel: ``on`` and ``join_ref``."""

    def __init__(self) -> None:
        self.join_ref: str | None = None
        self.handlers: dict[str, list[Any]] = {}

    def on(self, event: str, handler: Any) -> int:
        self.handlers.setdefault(event, []).append(handler)
        return len(self.handlers[event])

    def deliver(self, join_ref: Any, event: str, payload: Any) -> None:
        if join_ref and join_ref != self.join_ref:
            return  # an outdated message never reaches the channel
        for handler in self.handlers.get(event, []):
            handler(payload)


def received_by(client: str) -> list[list[Any]]:
    frames = []
    for line in TRANSCRIPT.read_text().splitlines():
        match = LINE.match(line)
        if match and match[1] == client:
            frames.append(orjson.loads(match[2]))
    return frames


def refs(presence: Any) -> list[str]:
    return [meta["phx_ref"] for meta in presence["metas"]]


def test_replaying_what_client_a_received() -> None:
    channel = StubChannel()
    presence = Presence(channel)  # type: ignore[arg-type]
    syncs: list[dict[str, list[str]]] = []
    joins: list[tuple[str, Any, list[str]]] = []
    leaves: list[tuple[str, list[str], list[str]]] = []
    presence.on_sync(lambda: syncs.append({k: refs(p) for k, p in presence.state.items()}))
    presence.on_join(lambda key, cur, new: joins.append((key, cur and refs(cur), refs(new))))
    presence.on_leave(lambda key, cur, left: leaves.append((key, refs(cur), refs(left))))
    for join_ref, _ref, _topic, event, payload in received_by("A"):
        if event == "phx_reply":
            channel.join_ref = join_ref
            assert presence.in_pending_sync_state()
            continue
        channel.deliver(join_ref, event, payload)
    alice1, bob1, alice2, bob2 = (
        "GOwAZeYmVC5lfAih",
        "GOwAZfLjmphlfACS",
        "GOwAZguNqoFlfAjB",
        "GOwAZjv55oZlfAjh",
    )
    # The diff that came before the state waited for it (one sync for both).
    assert syncs == [
        {"alice": [alice1]},
        {"alice": [alice1], "bob": [bob1]},
        {"alice": [alice1, alice2], "bob": [bob1]},  # existing metas first
        {"alice": [alice1, alice2]},
        {"alice": [alice1, alice2], "bob": [bob2]},
        {"alice": [alice1, alice2]},
        {"alice": [alice1]},
    ]
    assert joins == [
        ("alice", None, [alice1]),
        ("alice", [alice1], [alice1]),  # the buffered diff repeats the state's meta
        ("bob", None, [bob1]),
        ("alice", [alice1], [alice2]),
        ("bob", None, [bob2]),
    ]
    assert leaves == [("bob", [], [bob1]), ("bob", [], [bob2]), ("alice", [alice1], [alice2])]
    assert presence.list(lambda key, p: (key, len(p["metas"]))) == [("alice", 1)]


def test_replaying_client_b_across_its_rejoin() -> None:
    channel = StubChannel()
    presence = Presence(channel)  # type: ignore[arg-type]
    events: list[tuple[str, str, list[str]]] = []
    presence.on_join(lambda key, cur, new: events.append(("join", key, refs(new))))
    presence.on_leave(lambda key, cur, left: events.append(("leave", key, refs(left))))
    rejoined = False
    for join_ref, ref, _topic, event, payload in received_by("B"):
        if event == "phx_reply" and join_ref == ref:  # a join reply
            channel.join_ref = join_ref
            rejoined = join_ref == "3"
            if rejoined:
                events.clear()
            continue
        channel.deliver(join_ref, event, payload)
    assert rejoined
    # After the rejoin the new state replaces bob's old meta (joins before leaves), then
    # the diff that came before the state is applied again on top.
    assert events == [
        ("join", "bob", ["GOwAZjv55oZlfAjh"]),
        ("leave", "bob", ["GOwAZfLjmphlfACS"]),
        ("join", "bob", ["GOwAZjv55oZlfAjh"]),
    ]
    assert {k: refs(p) for k, p in presence.state.items()} == {
        "alice": ["GOwAZeYmVC5lfAih", "GOwAZguNqoFlfAjB"],
        "bob": ["GOwAZjv55oZlfAjh"],
    }


def test_diffs_wait_for_the_state_of_the_current_join() -> None:
    channel = StubChannel()
    presence = Presence(channel)  # type: ignore[arg-type]
    synced = []
    presence.on_sync(lambda: synced.append(sorted(presence.state)))
    channel.join_ref = "1"
    channel.deliver(
        None, "presence_diff", {"joins": {"b": {"metas": [{"phx_ref": "b1"}]}}, "leaves": {}}
    )
    assert synced == [] and presence.pending_diffs
    channel.deliver("1", "presence_state", {"a": {"metas": [{"phx_ref": "a1"}]}})
    assert synced == [["a", "b"]]
    channel.join_ref = "7"  # rejoined: pending again until the new state
    channel.deliver(
        None, "presence_diff", {"joins": {}, "leaves": {"a": {"metas": [{"phx_ref": "a1"}]}}}
    )
    assert synced == [["a", "b"]]
    channel.deliver("7", "presence_state", {"b": {"metas": [{"phx_ref": "b1"}]}})
    assert synced[-1] == ["b"]


def test_an_update_is_a_join_and_a_leave_of_the_same_key() -> None:
    state = {"u": {"metas": [{"phx_ref": "1", "status": "away"}]}}
    diff = {
        "joins": {"u": {"metas": [{"phx_ref": "2", "status": "online"}]}},
        "leaves": {"u": {"metas": [{"phx_ref": "1", "status": "away"}]}},
    }
    assert sync_diff(state, diff) == {"u": {"metas": [{"phx_ref": "2", "status": "online"}]}}


def test_leaves_of_unknown_keys_are_ignored_and_empty_keys_removed() -> None:
    state = {"a": {"metas": [{"phx_ref": "1"}]}}
    left = []
    result = sync_diff(
        state,
        {
            "joins": {},
            "leaves": {"ghost": {"metas": [{"phx_ref": "9"}]}, "a": {"metas": [{"phx_ref": "1"}]}},
        },
        on_leave=lambda key, cur, gone: left.append((key, cur["metas"])),
    )
    assert result == {} and left == [("a", [])]


def test_sync_state_does_not_modify_its_arguments() -> None:
    current = {"a": {"metas": [{"phx_ref": "1"}]}}
    new = {"a": {"metas": [{"phx_ref": "2"}]}, "__proto__": {"metas": [{"phx_ref": "3"}]}}
    before = (orjson.dumps(current), orjson.dumps(new))
    result = sync_state(current, new)
    assert (orjson.dumps(current), orjson.dumps(new)) == before
    assert result == new
    assert list_presences(result, lambda key, _: key) == ["a", "__proto__"]


metas = st.lists(
    st.integers(0, 30).map(lambda n: {"phx_ref": str(n), "n": n}),
    max_size=4,
    unique_by=lambda m: m["phx_ref"],
)
states = st.dictionaries(
    st.sampled_from("abcdef"), metas.filter(bool).map(lambda ms: {"metas": ms}), max_size=5
)


@given(states, states)
def test_syncing_a_state_always_ends_with_that_state(current: Any, new: Any) -> None:
    result = sync_state(current, new)
    assert {k: sorted(refs(p)) for k, p in result.items()} == {
        k: sorted(refs(p)) for k, p in new.items()
    }


@given(states, states)
def test_callbacks_describe_exactly_the_change(current: Any, new: Any) -> None:
    """Applying the reported joins and leaves to the old refs gives the new refs."""
    seen = {k: set(refs(p)) for k, p in current.items()}

    def joined(key: str, cur: Any, new_presence: Any) -> None:
        seen.setdefault(key, set()).update(refs(new_presence))

    def left(key: str, cur: Any, left_presence: Any) -> None:
        seen[key] -= set(refs(left_presence))
        if not seen[key]:
            del seen[key]

    sync_state(current, new, joined, left)
    assert seen == {k: set(refs(p)) for k, p in new.items()}
