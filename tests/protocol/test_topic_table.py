"""Routing and the per-socket topic table, without I/O."""

from __future__ import annotations

import pytest

from phoenix_channels import ConfigurationError, Message, UsageError
from phoenix_channels.protocol.router import Router
from phoenix_channels.protocol.topic_table import Action, EntryState, TopicTable


def test_routes_match_in_declaration_order_with_prefix_wildcards() -> None:
    router = Router({"food*": "Food", "foo*": "Foo", "room:lobby": "Lobby", "room:*": "Room"})
    assert router.match("food:1") == "Food"
    assert router.match("foodie") == "Food"
    assert router.match("foo:1") == "Foo"
    assert router.match("room:lobby") == "Lobby"
    assert router.match("room:") == "Room"
    assert router.match("room") is None
    assert router.match("other") is None


def test_star_must_be_last() -> None:
    with pytest.raises(ConfigurationError, match="last character"):
        Router({"room:*:x": "X"})


def msg(event: str, topic: str = "room:1", join_ref: object = "1", ref: object = "2") -> Message:
    return Message(join_ref, ref, topic, event, {})


def table(max_channels: int = 100) -> TopicTable[str]:
    return TopicTable(Router({"room:*": "Room"}), max_channels)


def test_heartbeat_comes_first_even_if_phoenix_is_routed() -> None:
    t = TopicTable(Router({"phoenix": "P"}), 10)
    assert t.classify(msg("heartbeat", "phoenix")).action is Action.HEARTBEAT


def test_join_unmatched_and_too_many() -> None:
    t = table(max_channels=1)
    assert t.classify(msg("phx_join", "nochannel:x")).action is Action.UNMATCHED
    decision = t.classify(msg("phx_join"))
    assert decision.action is Action.JOIN and decision.route == "Room" and decision.entry is None
    t.add("room:1", "1", object())
    assert t.classify(msg("phx_join", "room:2")).action is Action.TOO_MANY
    # a duplicate join of a joined topic does not count against the limit
    assert t.classify(msg("phx_join", "room:1")).action is Action.JOIN


def test_messages_to_an_entry_follow_the_join_ref_rule() -> None:
    t = table()
    entry = t.add("room:1", "1", object())
    entry.advance("joined")
    assert t.classify(msg("echo", join_ref="1")).action is Action.FORWARD
    assert t.classify(msg("echo", join_ref=None)).action is Action.FORWARD
    assert t.classify(msg("echo", join_ref="999")).action is Action.STALE
    assert t.classify(msg("phx_leave", join_ref="999")).action is Action.STALE
    assert t.classify(msg("phx_leave")).action is Action.LEAVE
    assert entry.state is EntryState.LEAVING


def test_messages_without_an_entry() -> None:
    t = table()
    assert t.classify(msg("phx_leave")).action is Action.LEAVE_UNJOINED
    assert t.classify(msg("echo")).action is Action.UNMATCHED
    assert t.classify(msg("other_event", "phoenix")).action is Action.UNMATCHED


def test_illegal_entry_transitions_name_state_and_event() -> None:
    entry = table().add("room:1", "1", object())
    with pytest.raises(UsageError, match="'leave' is not allowed in state 'joining'"):
        entry.advance("leave")


def test_remove_only_removes_the_current_entry() -> None:
    t = table()
    old = t.add("room:1", "1", object())
    assert t.remove(old)
    t.add("room:1", "2", object())
    assert not t.remove(old)
    assert t.entries["room:1"].join_ref == "2"
