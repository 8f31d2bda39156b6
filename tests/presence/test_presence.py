"""Presence with channels, in process: payloads on the wire and leaves however a channel ends.

Clients are sockets on memory transports (tests/support.py); a multi-node
test gives each node its own endpoint and PubSub, joined by the hub of
tests/presence/support.py. ``View`` applies what a client receives the way
the JS client's ``Presence`` helper does (syncState / syncDiff), so tests
compare what a client would show with the server's list.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from phoenix_channels import Channel, Endpoint, PubSub, Socket, UsageError, reply, stop
from phoenix_channels.presence import NotTrackedError, Presence
from phoenix_channels.presence.api import _coalesce
from phoenix_channels.presence.tracker import Diff
from tests.support import Client, connect

from .support import Hub, eventually

FAST: dict[str, Any] = {"broadcast_period": 0.05, "down_period": 0.5, "permdown_period": 3.0}


class View:
    """A client's presence list, kept like the JS helper keeps it."""

    def __init__(self) -> None:
        self.state: dict[str, list[dict[str, Any]]] = {}

    def apply_state(self, new: dict[str, Any]) -> None:
        joins: dict[str, Any] = {}
        leaves: dict[str, Any] = {}
        for key, metas in self.state.items():
            if key not in new:
                leaves[key] = {"metas": metas}
        for key, value in new.items():
            current = self.state.get(key)
            if current is None:
                joins[key] = value
                continue
            new_refs = {m["phx_ref"] for m in value["metas"]}
            cur_refs = {m["phx_ref"] for m in current}
            joined = [m for m in value["metas"] if m["phx_ref"] not in cur_refs]
            left = [m for m in current if m["phx_ref"] not in new_refs]
            if joined:
                joins[key] = {"metas": joined}
            if left:
                leaves[key] = {"metas": left}
        self.apply_diff({"joins": joins, "leaves": leaves})

    def apply_diff(self, diff: dict[str, Any]) -> None:
        for key, value in diff["joins"].items():
            joined_refs = {m["phx_ref"] for m in value["metas"]}
            kept = [m for m in self.state.get(key, []) if m["phx_ref"] not in joined_refs]
            self.state[key] = kept + list(value["metas"])
        for key, value in diff["leaves"].items():
            if key not in self.state:
                continue
            gone = {m["phx_ref"] for m in value["metas"]}
            remaining = [m for m in self.state[key] if m["phx_ref"] not in gone]
            if remaining:
                self.state[key] = remaining
            else:
                del self.state[key]

    def replay(self, frames: list[Any], topic: str) -> View:
        pending: list[dict[str, Any]] = []
        synced = False
        for frame in frames:
            if not isinstance(frame, list) or frame[2] != topic:
                continue
            if frame[3] == "presence_state":
                self.apply_state(frame[4])
                for diff in pending:
                    self.apply_diff(diff)
                pending, synced = [], True
            elif frame[3] == "presence_diff":
                if synced:
                    self.apply_diff(frame[4])
                else:
                    pending.append(frame[4])
        return self

    def refs(self) -> dict[str, list[str]]:
        return {k: sorted(m["phx_ref"] for m in v) for k, v in self.state.items()}


def refs(grouped: dict[str, Any]) -> dict[str, list[str]]:
    return {k: sorted(m["phx_ref"] for m in v["metas"]) for k, v in grouped.items()}


def events(client: Client, topic: str, event: str) -> list[Any]:
    return [f[4] for f in client.transport.frames() if f[2] == topic and f[3] == event]


def make_app(
    pubsub: PubSub | None = None, presence_cls: type[Presence] = Presence, **options: Any
) -> tuple[Endpoint, Presence, type[Socket]]:
    holder: dict[str, Presence] = {}

    class RoomChannel(Channel):
        async def join(self, topic: str, payload: Any) -> Any:
            self.send(("after_join", payload))
            return None

        async def handle_info(self, message: Any) -> None:
            _, payload = message
            presence = holder["presence"]
            await presence.track(self, payload["user"], {"device": payload.get("device", "web")})
            await self.push("presence_state", await presence.list(self))

        async def handle_in(self, event: str, payload: Any) -> Any:
            presence = holder["presence"]
            if event == "status":
                ref = await presence.update(
                    self, payload["user"], lambda m: {**m, "status": payload["status"]}
                )
                return reply("ok", {"ref": ref})
            if event == "crash":
                raise RuntimeError("crash on purpose (test)")
            if event == "stop":
                return stop("normal")
            if event == "untrack":
                await presence.untrack(self, payload["user"])
                return reply("ok")
            return None

    class UserSocket(Socket):
        channels = {"room:*": RoomChannel}

    endpoint = Endpoint(sockets={"/socket": UserSocket}, pubsub=pubsub)
    presence = holder["presence"] = presence_cls(endpoint, **options)
    return endpoint, presence, UserSocket


@pytest.fixture
async def endpoints() -> AsyncIterator[list[Endpoint]]:
    made: list[Endpoint] = []
    yield made
    for endpoint in made:
        await endpoint.stop()


async def joined(
    endpoint: Endpoint, socket: type[Socket], topic: str, user: str, device: str = "web"
) -> Client:
    client = await connect(endpoint, socket)
    client.send("1", "1", topic, "phx_join", {"user": user, "device": device})
    await eventually(
        lambda: events(client, topic, "presence_state") != [], f"{user} gets presence_state"
    )
    return client


async def test_the_payloads_are_phoenixs(endpoints: list[Endpoint]) -> None:
    endpoint, presence, sock = make_app()
    endpoints.append(endpoint)
    alice = await joined(endpoint, sock, "room:p1", "alice")
    frames = alice.transport.frames()
    assert [f[3] for f in frames] == ["phx_reply", "presence_diff", "presence_state"]
    (diff,) = events(alice, "room:p1", "presence_diff")
    (state,) = events(alice, "room:p1", "presence_state")
    (meta,) = state["alice"]["metas"]
    assert set(meta) == {"device", "phx_ref"} and isinstance(meta["phx_ref"], str)
    assert len(meta["phx_ref"]) == 16  # 12 bytes of URL-safe base64, as Phoenix's
    assert diff == {"joins": {"alice": {"metas": [meta]}}, "leaves": {}}
    assert frames[2][:2] == ["1", None]  # a push on the join
    assert frames[1][:2] == [None, None]  # a broadcast

    bob = await joined(endpoint, sock, "room:p1", "bob")
    await eventually(
        lambda: len(events(alice, "room:p1", "presence_diff")) == 2, "alice gets bob's join"
    )
    (bob_state,) = events(bob, "room:p1", "presence_state")
    assert sorted(bob_state) == ["alice", "bob"]
    assert await presence.list("room:p1") == bob_state
    assert await presence.list("room:nobody") == {}


async def test_two_devices_are_one_key_with_two_metas(endpoints: list[Endpoint]) -> None:
    endpoint, presence, sock = make_app()
    endpoints.append(endpoint)
    phone = await joined(endpoint, sock, "room:d", "alice", "phone")
    laptop = await joined(endpoint, sock, "room:d", "alice", "laptop")
    listed = await presence.list("room:d")
    assert [m["device"] for m in listed["alice"]["metas"]] == ["phone", "laptop"]
    assert await presence.get_by_key("room:d", "alice") == listed["alice"]
    assert await presence.get_by_key("room:d", "nobody") is None
    laptop.socket.connection_lost()  # one tab closes
    await eventually(
        lambda: events(phone, "room:d", "presence_diff")[-1]["leaves"] != {},
        "the phone sees the laptop leave",
    )
    last = events(phone, "room:d", "presence_diff")[-1]
    assert last["joins"] == {} and [m["device"] for m in last["leaves"]["alice"]["metas"]] == [
        "laptop"
    ]
    listed = await presence.list("room:d")
    assert [m["device"] for m in listed["alice"]["metas"]] == ["phone"]
    assert View().replay(phone.transport.frames(), "room:d").refs() == refs(listed)


@pytest.mark.parametrize("how", ["leave", "close", "crash", "stop", "duplicate_join", "idle"])
async def test_the_presence_leaves_however_the_channel_ends(
    endpoints: list[Endpoint], how: str
) -> None:
    endpoint, presence, sock = make_app()
    endpoints.append(endpoint)
    watcher = await joined(endpoint, sock, "room:end", "watcher")
    bob = await joined(endpoint, sock, "room:end", "bob")
    (bob_meta,) = (await presence.list("room:end"))["bob"]["metas"]
    if how == "leave":
        bob.send("1", "2", "room:end", "phx_leave", {})
    elif how == "close":
        bob.socket.connection_lost()
    elif how in ("crash", "stop"):
        bob.send("1", "2", "room:end", how, {})
    elif how == "duplicate_join":  # the client joins again: the old channel is replaced
        bob.send("2", "2", "room:end", "phx_join", {"user": "bob-again"})
    elif how == "idle":  # what the idle sweeper does when the client's heartbeats stop
        bob.socket.close(1001, "idle timeout")
    await eventually(
        lambda: any(
            d["leaves"].get("bob") == {"metas": [bob_meta]}
            for d in events(watcher, "room:end", "presence_diff")
        ),
        f"the watcher sees bob leave after {how}",
    )
    assert "bob" not in await presence.list("room:end")


async def test_an_update_is_a_join_and_a_leave_with_phx_ref_prev(endpoints: list[Endpoint]) -> None:
    endpoint, presence, sock = make_app()
    endpoints.append(endpoint)
    alice = await joined(endpoint, sock, "room:u", "alice")
    (old,) = (await presence.list("room:u"))["alice"]["metas"]
    alice.send("1", "2", "room:u", "status", {"user": "alice", "status": "away"})
    await eventually(lambda: len(events(alice, "room:u", "presence_diff")) == 2, "update diff")
    diff = events(alice, "room:u", "presence_diff")[-1]
    (new,) = diff["joins"]["alice"]["metas"]
    assert diff["leaves"] == {"alice": {"metas": [old]}}
    assert new == {
        "device": "web",
        "status": "away",
        "phx_ref": new["phx_ref"],
        "phx_ref_prev": old["phx_ref"],
    }
    assert new["phx_ref"] != old["phx_ref"]
    view = View().replay(alice.transport.frames(), "room:u")
    assert view.state == {"alice": [new]}  # one meta left, as the JS helper ends up


async def test_keys_are_strings_in_payloads_and_owners_need_a_topic_outside_channels(
    endpoints: list[Endpoint],
) -> None:
    endpoint, presence, sock = make_app()
    endpoints.append(endpoint)
    watcher = await joined(endpoint, sock, "room:k", "watcher")
    await presence.track("service-7", 7, {"kind": "bot"}, topic="room:k")
    await eventually(
        lambda: "7" in events(watcher, "room:k", "presence_diff")[-1]["joins"],
        "the int key arrives as a string",
    )
    assert "7" in await presence.list("room:k")
    assert (await presence.get_by_key("room:k", 7))["metas"][0]["kind"] == "bot"  # type: ignore[index]
    with pytest.raises(UsageError, match="str is not a channel: give the topic"):
        await presence.track("service-7", 8, {})
    with pytest.raises(NotTrackedError):
        await presence.update("service-7", 8, {}, topic="room:k")
    await presence.untrack("service-7", 7, topic="room:k")
    assert "7" not in await presence.list("room:k")


async def test_a_stopped_channel_cannot_be_tracked(endpoints: list[Endpoint]) -> None:
    endpoint, presence, sock = make_app()
    endpoints.append(endpoint)
    client = await joined(endpoint, sock, "room:s", "alice")
    (channel,) = [e.channel for e in client.socket._table.entries.values()]
    client.socket.connection_lost()
    await eventually(lambda: "alice" not in presence.tracker.list("room:s") and True, "gone")
    await eventually(lambda: not channel.joined, "the channel has stopped")
    await asyncio.sleep(0.05)  # let terminate and on_stop run
    with pytest.raises(UsageError, match="has already stopped; it cannot be tracked"):
        await presence.track(channel, "ghost", {})
    assert await presence.list("room:s") == {}


class FetchingPresence(Presence):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, list[str]]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def fetch(self, topic: str, presences: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((topic, sorted(presences)))
        await self.gate.wait()
        return {k: {**v, "user": {"name": k.upper()}} for k, v in presences.items()}


async def test_fetch_enriches_lists_and_diffs(endpoints: list[Endpoint]) -> None:
    endpoint, presence, sock = make_app(presence_cls=FetchingPresence)
    endpoints.append(endpoint)
    alice = await joined(endpoint, sock, "room:f", "alice")
    (state,) = events(alice, "room:f", "presence_state")
    assert state["alice"]["user"] == {"name": "ALICE"}
    await eventually(lambda: events(alice, "room:f", "presence_diff") != [], "alice's diff")
    (diff,) = events(alice, "room:f", "presence_diff")
    assert diff["joins"]["alice"]["user"] == {"name": "ALICE"}
    assert (await presence.get_by_key("room:f", "alice"))["user"] == {"name": "ALICE"}  # type: ignore[index]


async def test_diffs_that_pile_up_behind_a_slow_fetch_are_combined_correctly(
    endpoints: list[Endpoint],
) -> None:
    endpoint, presence, sock = make_app(presence_cls=FetchingPresence)
    assert isinstance(presence, FetchingPresence)
    endpoints.append(endpoint)
    watcher = await joined(endpoint, sock, "room:slow", "watcher")
    await eventually(lambda: events(watcher, "room:slow", "presence_diff") != [], "first diff")
    presence.gate.clear()  # fetch now blocks: diffs queue up
    owners = [f"svc{i}" for i in range(20)]
    for owner in owners:
        await presence.track(owner, owner, {}, topic="room:slow")
    for owner in owners[::2]:
        await presence.untrack(owner)
    for owner in owners[1::4]:
        await presence.update(owner, owner, {"v": 2}, topic="room:slow")
    calls_before = len(presence.calls)
    presence.gate.set()
    await eventually(
        lambda: (
            View().replay(watcher.transport.frames(), "room:slow").refs()
            == refs(group_now(presence, "room:slow"))
        ),
        "the watcher's view equals the server's list",
    )
    # Twenty tracks, ten untracks and five updates took far fewer fetches than diffs.
    assert len(presence.calls) - calls_before < 10


def group_now(presence: Presence, topic: str) -> dict[str, Any]:
    from phoenix_channels.presence import group

    return group(presence.tracker.list(topic))


def test_coalescing_keeps_each_metas_last_operation() -> None:
    m1, m2, m3 = {"phx_ref": "1"}, {"phx_ref": "2"}, {"phx_ref": "3"}
    diffs = [
        Diff("t", [("a", m1)], []),
        Diff("t", [("b", m2)], [("a", m1)]),  # a came and went: still a leave, for a
        Diff("t", [], [("c", m3)]),  # client whose presence_state came in between
        Diff("t", [("c", m3)], []),  # c left and came back (a replica up again)
    ]
    assert _coalesce(diffs) == ([("b", m2), ("c", m3)], [("a", m1)])
    assert _coalesce([Diff("t", [], [("c", m3)])]) == ([], [("c", m3)])


async def test_the_tracker_runs_with_the_endpoint(endpoints: list[Endpoint]) -> None:
    endpoint, presence, _sock = make_app()
    assert not presence.tracker.started
    await endpoint.start()
    assert presence.tracker.started
    await endpoint.stop()
    assert not presence.tracker.started
    # A channel still finishing during shutdown does not bring the tracker back.
    await presence.track("late", "k", {}, topic="room:late")
    assert not presence.tracker.started
    assert [k for k, _ in presence.tracker.list("room:late")] == ["k"]


async def test_a_presence_made_after_startup_starts_on_first_use(
    endpoints: list[Endpoint],
) -> None:
    endpoint, _presence, _sock = make_app()
    endpoints.append(endpoint)
    await endpoint.start()
    late = Presence(endpoint, "late")
    assert not late.tracker.started
    assert await late.list("room:x") == {}
    assert late.tracker.started
    await late.stop()


async def test_two_nodes_see_each_others_clients(endpoints: list[Endpoint]) -> None:
    hub = Hub()
    node_a, presence_a, sock_a = make_app(hub.pubsub("a"), **FAST)
    node_b, presence_b, sock_b = make_app(hub.pubsub("b"), **FAST)
    endpoints.extend([node_a, node_b])
    alice = await joined(node_a, sock_a, "room:x", "alice")
    bob = await joined(node_b, sock_b, "room:x", "bob")

    async def same() -> bool:
        a, b = await presence_a.list("room:x"), await presence_b.list("room:x")
        return sorted(a) == ["alice", "bob"] and refs(a) == refs(b)

    await eventually(same, "both nodes list alice and bob")
    truth = refs(await presence_a.list("room:x"))
    await eventually(
        lambda: View().replay(alice.transport.frames(), "room:x").refs() == truth,
        "alice's view (node a) shows bob",
    )
    await eventually(
        lambda: View().replay(bob.transport.frames(), "room:x").refs() == truth,
        "bob's view (node b) shows alice",
    )
    # Every client got exactly one diff per change: no echo, no duplicate per node.
    assert [sorted(d["joins"]) for d in events(alice, "room:x", "presence_diff")] == [
        ["alice"],
        ["bob"],
    ]
    bob.socket.connection_lost()
    await eventually(
        lambda: (
            View().replay(alice.transport.frames(), "room:x").refs() == {"alice": truth["alice"]}
        ),
        "alice sees bob leave from the other node",
    )


async def test_a_draining_node_sends_the_leaves_of_its_clients_before_it_stops() -> None:
    import json

    import websockets

    from phoenix_channels.presence import Tracker
    from tests.support import Server

    slow = {"broadcast_period": 5.0, "down_period": 60.0, "permdown_period": 120.0}
    endpoint, _presence, _sock = make_app(**slow)
    endpoint.drain_interval = 0.0
    observer = Tracker(endpoint.pubsub, "presence", node_name="observer", **slow)
    await observer.start()
    try:
        async with Server(endpoint) as server, websockets.connect(server.url + "?vsn=2.0.0") as ws:
            await ws.send(json.dumps(["1", "1", "room:drain", "phx_join", {"user": "alice"}]))
            await eventually(
                lambda: [k for k, _ in observer.list("room:drain")] == ["alice"],
                "the other node sees alice",
                timeout=20,
            )
            await server.stop()  # drains: alice's channel ends, and the news goes out now
            await eventually(
                lambda: observer.list("room:drain") == [],
                "the other node sees alice leave long before down_period",
                timeout=10,
            )
            assert observer.peers()[endpoint.pubsub.node_name] == "up"
    finally:
        await observer.stop()


class CarelessPresence(Presence):
    """A fetch that raises for one key and enriches metas in place for the others."""

    async def fetch(self, topic: str, presences: dict[str, Any]) -> dict[str, Any]:
        if "boom" in presences:
            raise RuntimeError("the user database is down (test)")
        for value in presences.values():
            for meta in value["metas"]:
                meta["enriched"] = True  # in place: must not reach the replica
        return presences


async def test_a_failing_or_careless_fetch_harms_nobody(
    endpoints: list[Endpoint], caplog: pytest.LogCaptureFixture
) -> None:
    endpoint, presence, sock = make_app(presence_cls=CarelessPresence)
    endpoints.append(endpoint)
    watcher = await joined(endpoint, sock, "room:c", "watcher")
    await presence.track("svc", "boom", {}, topic="room:c")
    await eventually(
        lambda: any("boom" in d["joins"] for d in events(watcher, "room:c", "presence_diff")),
        "the diff goes out even though fetch raised",
    )
    assert "fetch raised on 'room:c'; broadcasting the diff without it" in caplog.text
    with pytest.raises(RuntimeError, match="database is down"):  # list: the caller's problem
        await presence.list("room:c")
    await presence.untrack("svc")
    listed = await presence.list("room:c")
    assert listed["watcher"]["metas"][0]["enriched"] is True
    assert all("enriched" not in meta for _key, meta in presence.tracker.list("room:c"))
