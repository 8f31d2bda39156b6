"""The presence CRDT, clocks and delta generations, case by case (no I/O)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from phoenix_channels.presence import generations as gens
from phoenix_channels.presence.clock import (
    append_clock,
    dominates,
    dominates_or_equal,
    lowerbound,
    upperbound,
)
from phoenix_channels.presence.state import Delta, Entry, State, merge_deltas

A, B, C = ("a", 1), ("b", 1), ("c", 1)


def cluster(*refs: tuple[str, int]) -> list[State]:
    states = [State(r) for r in refs]
    for s in states:
        for r in refs:
            s.replica_up(r)
    return states


def keys(entries: list[Entry]) -> list[tuple[str, object]]:
    return sorted((e.topic, e.key) for e in entries)


def visible(state: State, topic: str = "t") -> list[object]:
    return sorted(e.key for e in state.get_by_topic(topic))


def transfer(to: State, source: State) -> tuple[list[Entry], list[Entry]]:
    ref, context = to.clocks()
    return to.merge(source.extract(ref, context))


# -- clocks -------------------------------------------------------------------------


def test_dominates_needs_every_replica_of_the_other_at_least_as_far() -> None:
    assert dominates({A: 2, B: 1}, {A: 1, B: 1})
    assert dominates({A: 1}, {A: 1})
    assert not dominates({A: 1}, {A: 1, B: 0})  # fewer replicas never dominates
    assert not dominates({A: 2, B: 0}, {A: 1, B: 1})
    # A replica missing from the first counts as clock 0.
    assert dominates({A: 0, C: 5}, {A: 0, B: 0})
    assert not dominates({A: 0, C: 5}, {A: 0, B: 1})


def test_dominates_or_equal_only_looks_at_the_first_clocks_replicas() -> None:
    assert dominates_or_equal({A: 3}, {A: 2, B: 9})
    assert not dominates_or_equal({A: 1}, {A: 2})
    assert dominates_or_equal({}, {})
    assert not dominates_or_equal({}, {A: 0})


def test_upper_and_lower_bounds_keep_replicas_of_either_side() -> None:
    assert upperbound({A: 1, B: 5}, {A: 3, C: 1}) == {A: 3, B: 5, C: 1}
    assert lowerbound({A: 1, B: 5}, {A: 3, C: 1}) == {A: 1, B: 5, C: 1}


def test_append_clock_keeps_only_clocks_nobody_dominates() -> None:
    clockset = append_clock([], (A, {A: 1, B: 1}))
    assert clockset == [(A, {A: 1, B: 1})]
    # B knows more about everything: it replaces A.
    clockset = append_clock(clockset, (B, {A: 2, B: 2}))
    assert clockset == [(B, {A: 2, B: 2})]
    # C is ahead on C, behind on A: both stay.
    clockset = append_clock(clockset, (C, {A: 1, B: 2, C: 3}))
    assert sorted(ref for ref, _ in clockset) == [B, C]
    # Dominated by what is there: nothing changes; an empty clock adds nothing.
    assert append_clock(clockset, (A, {A: 1, B: 1})) == clockset
    assert append_clock(clockset, (A, {})) == clockset


# -- local changes and queries ------------------------------------------------------------


def test_a_fresh_state_extracts_nothing() -> None:
    snapshot = State(A).extract(B, {A: 0, B: 0})
    assert snapshot.values == {}
    assert snapshot.context == {A: 0}


def test_join_and_leave_are_visible_and_indexed() -> None:
    (a,) = cluster(A)
    e1 = a.join("owner1", "t", "k1", {"v": 1})
    e2 = a.join("owner1", "u", "k2", {"v": 2})
    assert visible(a, "t") == ["k1"]
    assert a.get("t", "owner1", "k1") is e1
    assert keys(a.owned_by("owner1")) == [("t", "k1"), ("u", "k2")]
    a.leave(e1)
    assert visible(a, "t") == []
    assert "t" not in a.topics  # empty topics leave no trace
    assert a.get("t", "owner1", "k1") is None
    a.leave(e2)
    assert a.owned_by("owner1") == []
    assert a.clock == 4  # two adds, two removes


def test_merging_a_delta_reports_joins_once() -> None:
    a, b = cluster(A, B)
    a.join("o", "t", "k", {})
    delta = a.take_delta()
    joins, leaves = b.merge(delta)
    assert keys(joins) == [("t", "k")] and leaves == []
    assert b.merge(delta) == ([], [])  # idempotent
    assert visible(b) == ["k"]
    assert b.context[A] == 1 and not b.clouds


def test_merging_observes_removes() -> None:
    a, b = cluster(A, B)
    e = a.join("o", "t", "k", {})
    b.merge(a.take_delta())
    a.leave(e)
    joins, leaves = b.merge(a.take_delta())
    assert joins == [] and keys(leaves) == [("t", "k")]
    assert visible(b) == []
    assert b.context[A] == 2 and not b.clouds


def test_update_is_a_join_and_a_leave_and_merges_idempotently() -> None:
    a, b = cluster(A, B)
    e = a.join("o", "t", "k", {"v": 1})
    b.merge(a.take_delta())
    new = a.leave_join(e, {"v": 2})
    assert new.tag != e.tag and a.get("t", "o", "k") is new
    delta = a.take_delta()
    joins, leaves = b.merge(delta)
    assert [j.meta for j in joins] == [{"v": 2}] and [x.meta for x in leaves] == [{"v": 1}]
    assert b.merge(delta) == ([], [])
    assert [x.meta for x in b.get_by_topic("t")] == [{"v": 2}]


def test_a_delta_seen_twice_in_any_order_never_brings_a_removed_entry_back() -> None:
    a, b = cluster(A, B)
    a.join("o", "t", "gap", {})
    lost = a.take_delta()  # never reaches b: b has a gap at dot 1
    e = a.join("o", "t", "k", {})
    first = a.take_delta()
    a.leave(e)
    second = a.take_delta()
    b.merge(first)
    assert visible(b) == ["k"]
    b.merge(second)
    assert visible(b) == []
    assert b.merge(first) == ([], [])  # late duplicate of the add: still gone
    assert visible(b) == []
    b.merge(lost)
    assert visible(b) == ["gap"]
    assert b.context[A] == a.clock and not b.clouds


def test_a_missed_update_is_a_gap_even_when_a_later_delta_mentions_its_dots() -> None:
    a, b = cluster(A, B)
    e = a.join("o", "t", "k", {"v": 1})
    b.merge(a.take_delta())
    new = a.leave_join(e, {"v": 2})
    a.take_delta()  # lost: it said "v1 is gone, v2 is here"
    a.leave(new)
    b.merge(a.take_delta())  # says "v2 is gone": mentions v2's dot, not v1's removal
    # b must not believe it is up to date while it still holds v1.
    assert b.context[A] < a.clock
    assert [x.meta for x in b.get_by_topic("t")] == [{"v": 1}]
    transfer(b, a)
    assert visible(b) == [] and b.context[A] == a.clock


def test_a_gap_leaves_dots_in_the_cloud_until_a_transfer_fills_it() -> None:
    a, b = cluster(A, B)
    a.join("o", "t", "k1", {})
    a.take_delta()  # lost
    a.join("o", "t", "k2", {})
    b.merge(a.take_delta())
    assert visible(b) == ["k2"]
    assert b.context[A] == 0 and b.clouds == {A: {2}}
    joins, _ = transfer(b, a)
    assert keys(joins) == [("t", "k1")]
    assert b.context[A] == 2 and not b.clouds


def test_entries_of_unknown_replicas_are_ignored() -> None:
    a = State(A)
    b = State(B)
    b.join("o", "t", "k", {})
    assert a.merge(b.take_delta()) == ([], [])
    assert a.size() == 0 and B not in a.context


def test_a_transfer_never_removes_the_requesters_own_entries() -> None:
    a, b = cluster(A, B)
    a.join("o", "t", "mine", {})
    b.merge(a.take_delta())
    # b's snapshot for a leaves a's entries out; a must not read that as removals.
    joins, leaves = transfer(a, b)
    assert (joins, leaves) == ([], [])
    assert visible(a) == ["mine"]


def test_a_snapshot_only_covers_replicas_the_requester_knows() -> None:
    _a, b, c = cluster(A, B, C)
    b.merge(c.extract(B, b.clocks()[1]))
    c.join("o", "t", "kc", {})
    b.merge(c.take_delta())
    lonely = State(("d", 1))
    lonely.replica_up(B)
    snapshot = b.extract(lonely.replica, lonely.clocks()[1])
    assert set(snapshot.context) == {B}
    assert snapshot.values == {}
    # Learning about C later and merging that old snapshot must not mark C's dots seen.
    lonely.replica_up(C)
    lonely.merge(snapshot)
    assert lonely.context[C] == 0
    transfer(lonely, b)
    assert visible(lonely) == ["kc"]


def test_joins_and_removes_travel_from_a_to_c_through_b() -> None:
    a, b, c = cluster(A, B, C)
    e = a.join("o", "t", "k", {})
    b.merge(a.take_delta())
    transfer(c, b)  # a and c never talk
    assert visible(c) == ["k"]
    a.leave(e)
    b.merge(a.take_delta())
    transfer(c, b)
    assert visible(c) == []
    assert c.context[A] == a.clock


# -- replicas going down and away -------------------------------------------------------------


def test_netsplit_hides_entries_and_healing_shows_them_again() -> None:
    a, b = cluster(A, B)
    a.join("o", "t", "k1", {})
    b.merge(a.take_delta())
    leaves = b.replica_down(A)
    assert keys(leaves) == [("t", "k1")]
    assert visible(b) == [] and b.size() == 1  # hidden, kept
    assert b.replica_down(A) == []  # already down
    # Changes merged during the split are applied but not shown or reported.
    a.join("o", "t", "k2", {})
    assert b.merge(a.take_delta()) == ([], [])
    assert visible(b) == []
    joins = b.replica_up(A)
    assert keys(joins) == [("t", "k1"), ("t", "k2")]
    assert visible(b) == ["k1", "k2"]
    assert b.clocks()[1] == {A: a.clock, B: 0}


def test_clocks_leave_down_replicas_out() -> None:
    _a, b = cluster(A, B)
    b.replica_down(A)
    assert b.clocks() == (B, {B: 0})


def test_removing_a_replica_drops_its_entries_and_it_does_not_come_back() -> None:
    a, b = cluster(A, B)
    a.join("o", "t", "k", {})
    b.merge(a.take_delta())
    assert keys(b.remove_replica(A)) == [("t", "k")]  # still visible: reported as leaves
    assert b.size() == 0 and A not in b.context and "t" not in b.topics
    assert b.replica_up(A) == []  # known again, empty: a transfer will fill it
    assert visible(b) == []
    b.replica_down(A)
    assert b.remove_replica(A) == []  # down already: its entries left then


# -- deltas and generations -----------------------------------------------------------------


def test_delta_merging_needs_contiguous_ranges_in_both_directions() -> None:
    (a,) = cluster(A)
    deltas = []
    for i in range(3):
        a.join("o", "t", f"k{i}", {})
        deltas.append(a.take_delta())
    d1, d2, d3 = deltas
    assert merge_deltas(d1, d3) is None  # a gap
    assert merge_deltas(d3, d1) is None  # a late old delta across a gap
    merged = merge_deltas(d1, d2)
    assert merged is not None and merged.start == {A: 0} and merged.end == {A: 2}
    assert sorted(e.key for e in merged.values.values()) == ["k0", "k1"]
    again = merge_deltas(merged, d2)
    assert again is not None and again.values.keys() == merged.values.keys()  # a duplicate


def test_delta_merging_drops_entries_the_other_removed() -> None:
    (a,) = cluster(A)
    e = a.join("o", "t", "k", {})
    d1 = a.take_delta()
    a.leave(e)
    d2 = a.take_delta()
    merged = merge_deltas(d1, d2)
    assert merged is not None and merged.values == {}
    assert merged.clouds == {A: {1, 2}}
    reverse = merge_deltas(d2, d1)  # the same news in the other order
    assert reverse is not None and reverse.values == {}


def test_generations_grow_to_their_limit_then_start_over() -> None:
    (a,) = cluster(A)
    generations: list[Delta] = []
    for i in range(6):
        a.join("o", "t", f"k{i}", {})
        delta = a.take_delta()
        generations = gens.push(generations, delta, a.delta, (4, 100))
    small, big = generations
    assert small.size() <= 4 and small.end == {A: 6}
    assert big.start == {A: 0} and big.end == {A: 6} and big.size() == 12


def test_generations_skip_deltas_that_do_not_follow_on() -> None:
    a, b = cluster(A, B)
    generations: list[Delta] = []
    a.join("o", "t", "k1", {})
    generations = gens.push(generations, a.take_delta(), b.delta, (100,))
    a.join("o", "t", "k2", {})
    a.take_delta()  # never seen
    a.join("o", "t", "k3", {})
    generations = gens.push(generations, a.take_delta(), b.delta, (100,))
    assert generations[0].end[A] == 1


def test_fulfilling_picks_the_first_generation_that_covers_the_requester() -> None:
    (a,) = cluster(A)
    generations: list[Delta] = []
    for i in range(5):
        a.join("o", "t", f"k{i}", {})
        generations = gens.push(generations, a.take_delta(), a.delta, (2, 100))
    assert gens.fulfilling([], {A: 0}) is None
    # 4 of 5 seen: the small generation covers it.
    assert gens.fulfilling(generations, {A: 4, B: 0}) is generations[0]
    # Nothing seen: only the big one reaches back that far.
    assert gens.fulfilling(generations, {A: 0, B: 0}) is generations[1]
    # Up to date: nothing to send (never an empty delta).
    assert gens.fulfilling(generations, {A: 5, B: 0}) is None
    # Knows nothing of A: no generation is of use.
    assert gens.fulfilling(generations, {B: 0}) is None


def test_generations_forget_removed_replicas() -> None:
    a, b = cluster(A, B)
    a.join("o", "t", "k", {})
    generations = gens.push([], a.take_delta(), b.delta, (100,))
    (g,) = gens.remove_replica(generations, A)
    assert A not in g.start and A not in g.end and A not in g.clouds and g.values == {}


@given(st.data())
def test_generations_cover_their_ranges_whatever_order_deltas_arrive_in(
    data: st.DataObject,
) -> None:
    """Pushed in any order, with duplicates and losses, a generation never spans a gap."""
    (a,) = cluster(A)
    deltas = []
    n = data.draw(st.integers(2, 12), label="deltas")
    rng = random.Random(data.draw(st.integers(0, 2**32), label="seed"))
    for i in range(n):
        e = a.join("o", "t", f"k{i}", {})
        if rng.random() < 0.3:
            a.leave(e)
        deltas.append(a.take_delta())
    arrivals = data.draw(
        st.lists(st.sampled_from(range(n)), min_size=1, max_size=2 * n), label="arrivals"
    )
    limits = data.draw(
        st.lists(st.integers(1, 20), min_size=1, max_size=3).map(sorted), label="limits"
    )
    generations: list[Delta] = []
    receiver = State(B)
    receiver.replica_up(A)
    for i in arrivals:
        receiver.merge(deltas[i])
        generations = gens.push(generations, deltas[i], receiver.delta, limits)
        for g in generations:
            for r, end in g.end.items():
                missing = set(range(g.start[r] + 1, end + 1)) - g.clouds.get(r, set())
                assert not missing, (g, missing)
    # And a generation handed to a replica that has its start brings it to its end.
    for g in generations:
        if A in g.start:
            fresh = State(C)
            fresh.replica_up(A)
            if g.start[A] == 0:
                fresh.merge(g.extract(C, fresh.clocks()[1]))
                assert fresh.context[A] == g.end[A]
