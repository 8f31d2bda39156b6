"""Property tests of the whole replication protocol (presence/shard.py), on a simulated network.

Two to four replicas change their entries, tick (heartbeats, transfer
requests, failure detection) on a virtual clock, crash and restart as new
incarnations. Every message goes through JSON (as a real adapter's codec
would carry it) and a network that reorders, duplicates and drops. After
every step, each replica's reported diffs replayed equal what it lists.
When the network heals (messages flow again, time passes), every replica
lists exactly the live entries of the live replicas, within a bounded
number of broadcast periods.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from phoenix_channels.presence import wire
from phoenix_channels.presence.shard import Shard, TrackerOptions
from phoenix_channels.presence.state import Entry

OPTIONS = TrackerOptions(
    broadcast_period=1.0,
    max_silent_periods=2,
    down_period=5.0,
    permdown_period=40.0,
    clock_sample_periods=2,
    max_delta_sizes=(4, 12, 40),
)
HEAL_ROUNDS = 25

Seen = tuple[str, int, int, str, Any, Any, str]


def seen(e: Entry) -> Seen:
    return (e.replica[0], e.replica[1], e.clock, e.topic, e.owner, e.key, e.meta["v"])


class Node:
    def __init__(self, name: str, vsn: int) -> None:
        self.mirror: set[Seen] = set()
        self.shard = Shard(name, vsn, f"node-{name}", self.report, OPTIONS)
        self.inbox: list[Any] = []

    def report(self, joins: list[Entry], leaves: list[Entry]) -> None:
        for e in leaves:
            assert seen(e) in self.mirror, f"leave of an entry never joined: {e}"
            self.mirror.discard(seen(e))
        for e in joins:
            assert seen(e) not in self.mirror, f"join of an entry already visible: {e}"
            self.mirror.add(seen(e))

    def visible(self) -> set[Seen]:
        return {seen(e) for e in self.shard.state.visible()}


class Network(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, Node] = {}
        self.now = 0.0
        self.vsn = 0
        self.counter = 0

    def _start(self, name: str) -> None:
        self.vsn += 1
        self.nodes[name] = Node(name, self.vsn)

    @initialize(n=st.integers(min_value=2, max_value=4))
    def boot(self, n: int) -> None:
        for i in range(n):
            self._start(f"n{i}")

    def _pick(self, data: st.DataObject) -> Node:
        return self.nodes[data.draw(st.sampled_from(sorted(self.nodes)), label="node")]

    def _send(self, sender: Node, outgoing: list[tuple[str | None, dict[str, Any]]]) -> None:
        for target, message in outgoing:
            # Through JSON, as an adapter's codec would carry it.
            data = orjson.dumps(message)
            for node in self.nodes.values():
                if node is sender:
                    continue
                if target is None or target == node.shard.node:
                    node.inbox.append(data)

    def _receive(self, node: Node, data: bytes) -> None:
        message = wire.decode(orjson.loads(data))
        self._send(node, node.shard.handle(message, self.now))

    # -- changes ------------------------------------------------------------------

    @rule(
        data=st.data(),
        topic=st.sampled_from(["t0", "t1"]),
        owner=st.integers(0, 1),
        key=st.sampled_from(["a", "b"]),
    )
    def track(self, data: st.DataObject, topic: str, owner: int, key: str) -> None:
        node = self._pick(data)
        if node.shard.state.get(topic, owner, key) is None:
            self.counter += 1
            node.shard.track(owner, topic, key, {"v": f"m{self.counter}"})

    @rule(data=st.data())
    def untrack(self, data: st.DataObject) -> None:
        node = self._pick(data)
        mine = node.shard.state.entries(node.shard.replica_id)
        if mine:
            e = data.draw(st.sampled_from(sorted(mine, key=lambda e: e.clock)))
            if data.draw(st.booleans(), label="all of the owner"):
                node.shard.untrack_all(e.owner)
            else:
                node.shard.untrack(e.owner, e.topic, e.key)

    @rule(data=st.data())
    def update(self, data: st.DataObject) -> None:
        node = self._pick(data)
        mine = node.shard.state.entries(node.shard.replica_id)
        if mine:
            e = data.draw(st.sampled_from(sorted(mine, key=lambda e: e.clock)))
            self.counter += 1
            node.shard.update(e.owner, e.topic, e.key, {"v": f"m{self.counter}"})

    # -- time and the network ------------------------------------------------------------

    @rule(data=st.data())
    def tick(self, data: st.DataObject) -> None:
        node = self._pick(data)
        self._send(node, node.shard.tick(self.now))

    @rule(dt=st.sampled_from([0.5, 1.0, 3.0, 7.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @precondition(lambda self: any(n.inbox for n in self.nodes.values()))
    @rule(data=st.data(), keep=st.booleans())
    def deliver(self, data: st.DataObject, keep: bool) -> None:
        node = self.nodes[
            data.draw(st.sampled_from(sorted(n for n, x in self.nodes.items() if x.inbox)))
        ]
        i = data.draw(st.integers(0, len(node.inbox) - 1), label="message")
        self._receive(node, node.inbox[i] if keep else node.inbox.pop(i))

    @precondition(lambda self: any(n.inbox for n in self.nodes.values()))
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        node = self.nodes[
            data.draw(st.sampled_from(sorted(n for n, x in self.nodes.items() if x.inbox)))
        ]
        node.inbox.pop(data.draw(st.integers(0, len(node.inbox) - 1), label="message"))

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """The node dies (its queued messages with it) and restarts empty, with a new vsn."""
        node = self._pick(data)
        self._start(node.shard.name)

    @rule(data=st.data())
    def stop_gracefully(self, data: st.DataObject) -> None:
        """The node says goodbye (peers drop it at once) and restarts empty, with a new vsn."""
        node = self._pick(data)
        self._send(node, [node.shard.goodbye()])
        self._start(node.shard.name)

    # -- checks ----------------------------------------------------------------------------

    @invariant()
    def diffs_replay_to_the_visible_set(self) -> None:
        for node in self.nodes.values():
            assert node.mirror == node.visible()

    @invariant()
    def generations_cover_their_ranges(self) -> None:
        """A delta generation holds every dot of the range it claims (no gap inside)."""
        for node in self.nodes.values():
            for g in node.shard.generations:
                assert g.start.keys() == g.end.keys()
                for r, end in g.end.items():
                    missing = set(range(g.start[r] + 1, end + 1)) - g.clouds.get(r, set())
                    assert not missing, (node.shard.name, r, g.start[r], end, missing)

    @invariant()
    def a_replica_that_claims_to_be_up_to_date_is(self) -> None:
        """Seeing every dot of a replica up to its clock means holding exactly its entries."""
        for node in self.nodes.values():
            state = node.shard.state
            for other in self.nodes.values():
                ref = other.shard.replica_id
                if other is node or ref not in state.context:
                    continue
                if state.context[ref] >= other.shard.state.clock:
                    mine = {seen(e) for e in state.entries(ref)}
                    theirs = {seen(e) for e in other.shard.state.entries(ref)}
                    assert mine == theirs, (node.shard.name, ref, mine ^ theirs)

    def model(self) -> set[Seen]:
        return {
            seen(e) for n in self.nodes.values() for e in n.shard.state.entries(n.shard.replica_id)
        }

    def _converged(self, node: Node, expected: set[Seen]) -> bool:
        peers = node.shard.peer_status()
        return (
            node.visible() == expected
            and sorted(peers) == sorted(n for n in self.nodes if n != node.shard.name)
            and all(s == "up" for s in peers.values())
        )

    @rule()
    def heal(self) -> None:
        """Messages flow again and time passes: everyone converges to the model."""
        expected = self.model()
        for _ in range(HEAL_ROUNDS):
            self.now += OPTIONS.broadcast_period
            for node in list(self.nodes.values()):
                self._send(node, node.shard.tick(self.now))
            while any(n.inbox for n in self.nodes.values()):
                for node in list(self.nodes.values()):
                    inbox, node.inbox = node.inbox, []
                    for data in inbox:
                        self._receive(node, data)
            if all(self._converged(n, expected) for n in self.nodes.values()):
                break
        for node in self.nodes.values():
            assert node.visible() == expected, (
                node.shard.name,
                node.shard.stats(),
                node.visible() ^ expected,
            )
            assert node.mirror == expected
            assert all(s == "up" for s in node.shard.peer_status().values())
            assert sorted(node.shard.peers) == sorted(n for n in self.nodes if n != node.shard.name)

    def teardown(self) -> None:
        if self.nodes:
            self.heal()


TestNetwork = Network.TestCase
TestNetwork.settings = settings(
    max_examples=300,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
