"""Property tests of the presence CRDT alone (presence/state.py, no I/O).

Two to five replicas track, untrack and update entries at random. Their
deltas travel through a network that delivers them in any order, twice, or
never; snapshots (full transfers) travel the same way, possibly stale; any
replica may see any other go down and come back; replicas crash and come
back as new incarnations, and peers drop the dead ones. After every step
each replica's reported diffs, replayed, equal what it lists. Whenever the
network is healed (everyone up, dead incarnations dropped, one round of
transfers), every replica lists exactly the model: the live entries of the
live replicas.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from phoenix_channels.presence.clock import ReplicaId
from phoenix_channels.presence.state import Delta, Entry, Snapshot, State

TOPICS = ["t0", "t1"]
KEYS = ["a", "b"]

# An entry as every replica must see it: its tag and content.
Seen = tuple[ReplicaId, int, str, Any, Any, str]


def seen(e: Entry) -> Seen:
    return (e.replica, e.clock, e.topic, e.owner, e.key, e.meta["v"])


class Replica:
    """A State plus the visible set rebuilt from the diffs it reported."""

    def __init__(self, ref: ReplicaId) -> None:
        self.state = State(ref)
        self.mirror: set[Seen] = set()
        self.inbox: list[Delta | Snapshot] = []
        self.removed: set[Seen] = set()  # left because removed (not hidden): never back

    def apply(self, joins: list[Entry], leaves: list[Entry], removal: bool = False) -> None:
        for e in leaves:
            assert seen(e) in self.mirror, f"leave of an entry never joined: {e}"
            self.mirror.discard(seen(e))
            if removal:
                self.removed.add(seen(e))
        for e in joins:
            assert seen(e) not in self.mirror, f"join of an entry already visible: {e}"
            assert seen(e) not in self.removed, f"an entry seen removed came back: {e}"
            self.mirror.add(seen(e))

    def visible(self) -> set[Seen]:
        return {seen(e) for e in self.state.visible()}


class Cluster(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.replicas: dict[str, Replica] = {}
        self.dead: list[ReplicaId] = []
        self.vsn = 0
        self.counter = 0

    def _new(self, name: str) -> Replica:
        self.vsn += 1
        replica = Replica((name, self.vsn))
        self.replicas[name] = replica
        return replica

    @initialize(n=st.integers(min_value=2, max_value=5))
    def start(self, n: int) -> None:
        for i in range(n):
            self._new(f"n{i}")
        for a in self.replicas.values():
            for b in self.replicas.values():
                a.apply(a.state.replica_up(b.state.replica), [])

    def _pick(self, data: st.DataObject, label: str) -> Replica:
        return self.replicas[data.draw(st.sampled_from(sorted(self.replicas)), label=label)]

    # -- local changes --------------------------------------------------------

    @rule(
        data=st.data(),
        topic=st.sampled_from(TOPICS),
        owner=st.integers(0, 1),
        key=st.sampled_from(KEYS),
    )
    def track(self, data: st.DataObject, topic: str, owner: int, key: str) -> None:
        r = self._pick(data, "replica")
        if r.state.get(topic, owner, key) is not None:
            return
        self.counter += 1
        e = r.state.join(owner, topic, key, {"v": f"m{self.counter}"})
        r.apply([e], [])

    @rule(data=st.data())
    def untrack(self, data: st.DataObject) -> None:
        r = self._pick(data, "replica")
        mine = r.state.entries(r.state.replica)
        if mine:
            e = data.draw(st.sampled_from(sorted(mine, key=lambda e: e.clock)), label="entry")
            r.state.leave(e)
            r.apply([], [e], removal=True)

    @rule(data=st.data())
    def update(self, data: st.DataObject) -> None:
        r = self._pick(data, "replica")
        mine = r.state.entries(r.state.replica)
        if mine:
            e = data.draw(st.sampled_from(sorted(mine, key=lambda e: e.clock)), label="entry")
            self.counter += 1
            new = r.state.leave_join(e, {"v": f"m{self.counter}"})
            r.apply([new], [e], removal=True)

    # -- the network ------------------------------------------------------------

    @rule(data=st.data())
    def gossip(self, data: st.DataObject) -> None:
        """A heartbeat: the sender's delta is queued for every other replica."""
        r = self._pick(data, "sender")
        if not r.state.has_delta():
            return
        delta = r.state.take_delta()
        for other in self.replicas.values():
            if other is not r:
                other.inbox.append(delta)

    @rule(data=st.data())
    def request_transfer(self, data: st.DataObject) -> None:
        """``asker`` sends its clocks to ``giver``; the snapshot is queued (it may go stale)."""
        asker = self._pick(data, "asker")
        giver = self._pick(data, "giver")
        if asker is giver:
            return
        ref, context = asker.state.clocks()
        asker.inbox.append(giver.state.extract(ref, context))

    @precondition(lambda self: any(r.inbox for r in self.replicas.values()))
    @rule(data=st.data(), keep=st.booleans())
    def deliver(self, data: st.DataObject, keep: bool) -> None:
        """Any queued message, in any order; ``keep`` delivers it again later (a duplicate)."""
        names = sorted(n for n, r in self.replicas.items() if r.inbox)
        r = self.replicas[data.draw(st.sampled_from(names), label="receiver")]
        i = data.draw(st.integers(0, len(r.inbox) - 1), label="message")
        message = r.inbox[i] if keep else r.inbox.pop(i)
        r.apply(*r.state.merge(message), removal=True)

    @precondition(lambda self: any(r.inbox for r in self.replicas.values()))
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        names = sorted(n for n, r in self.replicas.items() if r.inbox)
        r = self.replicas[data.draw(st.sampled_from(names), label="receiver")]
        r.inbox.pop(data.draw(st.integers(0, len(r.inbox) - 1), label="message"))

    # -- failures ---------------------------------------------------------------------

    @rule(data=st.data())
    def down(self, data: st.DataObject) -> None:
        observer = self._pick(data, "observer")
        other = self._pick(data, "other")
        observer.apply([], observer.state.replica_down(other.state.replica))

    @rule(data=st.data())
    def up(self, data: st.DataObject) -> None:
        observer = self._pick(data, "observer")
        other = self._pick(data, "other")
        observer.apply(observer.state.replica_up(other.state.replica), [])

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """A node dies with its entries; it restarts as a new, empty incarnation."""
        r = self._pick(data, "crashing")
        name, _vsn = r.state.replica
        self.dead.append(r.state.replica)
        self._new(name)

    @precondition(lambda self: bool(self.dead))
    @rule(data=st.data())
    def permdown(self, data: st.DataObject) -> None:
        observer = self._pick(data, "observer")
        ref = data.draw(st.sampled_from(self.dead), label="dead")
        observer.apply([], observer.state.remove_replica(ref))

    @rule(data=st.data())
    def hear(self, data: st.DataObject) -> None:
        """A replica hears a live one (a heartbeat): it knows it, up."""
        observer = self._pick(data, "observer")
        other = self._pick(data, "other")
        observer.apply(observer.state.replica_up(other.state.replica), [])

    # -- checks ---------------------------------------------------------------------

    @invariant()
    def diffs_replay_to_the_visible_set(self) -> None:
        for r in self.replicas.values():
            assert r.mirror == r.visible(), r.state

    @invariant()
    def own_entries_are_exactly_the_tracked_ones(self) -> None:
        for r in self.replicas.values():
            assert r.state.entries(r.state.replica) == [
                e for e in r.state.entries() if e.replica == r.state.replica
            ]

    @invariant()
    def a_replica_that_claims_to_be_up_to_date_is(self) -> None:
        """Seeing every dot of a replica up to its clock means holding exactly its entries."""
        for r in self.replicas.values():
            for other in self.replicas.values():
                ref = other.state.replica
                if other is r or ref not in r.state.context:
                    continue
                if r.state.context[ref] >= other.state.clock:
                    mine = {seen(e) for e in r.state.entries(ref)}
                    theirs = {seen(e) for e in other.state.entries(ref)}
                    assert mine == theirs, (r.state.replica, ref, mine ^ theirs)

    def model(self) -> set[Seen]:
        return {seen(e) for r in self.replicas.values() for e in r.state.entries(r.state.replica)}

    @rule()
    def heal(self) -> None:
        """Everyone up, dead incarnations dropped, one round of transfers: all equal the model."""
        live = [r.state.replica for r in self.replicas.values()]
        for r in self.replicas.values():
            r.inbox.clear()
            for ref in self.dead:
                r.apply([], r.state.remove_replica(ref))
            for ref in live:
                r.apply(r.state.replica_up(ref), [])
        for asker in self.replicas.values():
            for giver in self.replicas.values():
                if giver is not asker:
                    ref, context = asker.state.clocks()
                    joins, leaves = asker.state.merge(giver.state.extract(ref, context))
                    asker.apply(joins, leaves, removal=True)
        expected = self.model()
        for r in self.replicas.values():
            assert r.visible() == expected, (r.state, r.visible() ^ expected)
            assert r.mirror == expected
            for ref in live:
                assert r.state.context[ref] == self.replicas[ref[0]].state.clock, (
                    "after a transfer from every peer the contexts agree"
                )
            assert not r.state.clouds, r.state.clouds

    def teardown(self) -> None:
        if self.replicas:
            self.heal()


TestCluster = Cluster.TestCase
TestCluster.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
