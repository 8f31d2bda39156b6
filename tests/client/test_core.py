"""The client's state machine on a controllable clock: the JS client's rules, exactly.

Frames the core sends are decoded by the *server's* V2 serializer, so these
tests also check that the server reads them as meant. No sockets, no sleeps:
time moves when a test calls ``advance``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_channels import Message, NotJoinedError, UsageError
from phoenix_channels.client._actions import (
    ChannelEnded,
    Close,
    Closed,
    Deliver,
    Errored,
    Joined,
    Open,
    Opened,
    Outcome,
    Pong,
    Send,
    Settled,
)
from phoenix_channels.client._channel_machine import (
    ChannelCore,
    ChannelState,
    InvalidTransition,
    PushCore,
)
from phoenix_channels.client._socket_machine import SocketCore
from phoenix_channels.client._timers import default_reconnect_after, default_rejoin_after
from phoenix_channels.client.errors import ChannelClosedError, PushBufferFull
from phoenix_channels.client.options import SocketOptions
from phoenix_channels.protocol import V2


@dataclass
class Harness:
    """A SocketCore, a clock, and what it asked for."""

    core: SocketCore
    now: float = 0.0
    conn: int | None = None  # the connection the core asked for last
    sent: list[Message] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    opens: list[tuple[float, int]] = field(default_factory=list)

    open_conns: set[int] = field(default_factory=set)

    def run(self) -> None:
        for action in self.core.take_actions():
            if isinstance(action, Open):
                self.conn = action.conn
                self.opens.append((self.now, action.conn))
            elif isinstance(action, Send):
                # Frames only go to a connection that opened and has not closed since.
                assert action.conn in self.open_conns, f"{action} on a closed connection"
                self.sent.append(V2.decode(action.data, action.binary))
            else:
                if isinstance(action, Opened):
                    self.open_conns.add(action.conn)
                elif isinstance(action, Close | Closed):
                    self.open_conns.discard(action.conn)
                self.events.append(action)

    def do(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        result = method(self.now, *args, **kwargs)
        self.run()
        return result

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.core.advance(self.now)
        self.run()

    def open(self) -> None:
        assert self.conn is not None
        self.do(self.core.transport_opened, self.conn)

    def lose(self, code: int = 1006, error: BaseException | None = None) -> None:
        assert self.conn is not None
        self.do(self.core.transport_closed, self.conn, code, "", error)

    def server(self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any) -> None:
        assert self.conn is not None
        self.do(self.core.received, self.conn, Message(join_ref, ref, topic, event, payload))

    def reply(self, to: Message, status: str = "ok", response: Any = None) -> None:
        self.server(
            to.join_ref,
            to.ref,
            to.topic,
            "phx_reply",
            {"status": status, "response": {} if response is None else response},
        )

    def take_sent(self, heartbeats: bool = False) -> list[Message]:
        sent, self.sent = self.sent, []
        return [m for m in sent if heartbeats or m.topic != "phoenix"]

    def settled(self, push: PushCore) -> list[Settled]:
        return [e for e in self.events if isinstance(e, Settled) and e.push is push]

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def harness(**options: Any) -> Harness:
    options.setdefault("heartbeat_interval", 30.0)
    options.setdefault("jitter", 0.0)  # exact delays unless a test asks for jitter
    return Harness(SocketCore(SocketOptions(**options)))


def connected(**options: Any) -> Harness:
    h = harness(**options)
    h.do(h.core.connect)
    h.open()
    return h


def joined(h: Harness, topic: str = "room:1", params: Any = None) -> tuple[ChannelCore, PushCore]:
    channel = h.core.channel(topic, params)
    push = h.do(channel.join)
    push.owner = "join"
    (join,) = h.take_sent()
    h.reply(join)
    assert channel.state is ChannelState.JOINED
    return channel, push


# -- refs and frames ------------------------------------------------------------------------------


def test_one_ref_counter_and_join_ref_equal_to_the_join_ref() -> None:
    h = connected()
    channel = h.core.channel("room:1", {"nick": "ana"})
    h.do(channel.join)
    (join,) = h.take_sent()
    assert join == Message("1", "1", "room:1", "phx_join", {"nick": "ana"})
    h.reply(join)
    push = h.do(channel.push, "new_msg", {"body": "hi"})
    push.owner = "push"
    assert h.take_sent() == [Message("1", "2", "room:1", "new_msg", {"body": "hi"})]
    other = h.core.channel("room:2")
    h.do(other.join)
    assert h.take_sent() == [Message("3", "3", "room:2", "phx_join", {})]
    h.server("1", "2", "room:1", "phx_reply", {"status": "ok", "response": {"n": 1}})
    assert h.settled(push) == [Settled(push, "push", Outcome.REPLY, "ok", {"n": 1})]


def test_a_message_reaches_a_channel_when_the_join_ref_is_empty_or_its_own() -> None:
    h = connected()
    joined(h)
    for join_ref in (None, "", "1", "99"):
        h.server(join_ref, None, "room:1", "news", {"from": join_ref})
    h.server(None, None, "room:other", "news", {})
    delivered = [e.message.payload for e in h.of(Deliver) if e.message.event == "news"]
    assert delivered == [{"from": None}, {"from": ""}, {"from": "1"}]


def test_a_reply_after_the_timeout_is_ignored() -> None:
    h = connected()
    channel, _ = joined(h)
    push = h.do(channel.push, "slow", {}, 5.0)
    push.owner = "p"
    (frame,) = h.take_sent()
    h.advance(5.0)
    h.reply(frame, "ok", {"late": True})
    assert h.settled(push) == [Settled(push, "p", Outcome.TIMEOUT, None, None)]


# -- heartbeats and reconnects --------------------------------------------------------------------


def test_heartbeats_every_interval_after_each_reply() -> None:
    h = connected(heartbeat_interval=30.0)
    h.advance(29.9)
    assert h.take_sent(heartbeats=True) == []
    h.advance(0.1)
    (beat,) = h.take_sent(heartbeats=True)
    assert beat == Message(None, "1", "phoenix", "heartbeat", {})
    h.advance(2.0)
    h.reply(beat)  # the next one is due 30 s after this reply
    h.advance(29.9)
    assert h.take_sent(heartbeats=True) == []
    h.advance(0.1)
    assert [m.event for m in h.take_sent(heartbeats=True)] == ["heartbeat"]


def test_a_missing_heartbeat_reply_closes_the_connection_and_reconnects() -> None:
    h = connected(heartbeat_interval=30.0)
    channel, _ = joined(h)
    first = h.conn
    h.advance(30.0)
    (beat,) = h.take_sent(heartbeats=True)
    h.advance(29.9)
    assert h.core.is_connected
    h.advance(0.1)
    assert Close(first, 1000, "heartbeat timeout") in h.events  # type: ignore[arg-type]
    assert Closed(first, 1000, "heartbeat timeout") in h.events  # type: ignore[arg-type]
    assert channel.state is ChannelState.ERRORED
    errors = [e.message.payload for e in h.of(Deliver) if e.message.event == "phx_error"]
    assert errors == [{"source": "transport", "reason": "heartbeat_timeout"}]
    h.reply(beat)  # too late, and for a connection that is gone
    h.advance(0.0099)
    assert len(h.opens) == 1
    h.advance(0.0001)  # the first reconnect comes after 10 ms
    assert len(h.opens) == 2 and h.conn != first
    h.open()
    (rejoin,) = h.take_sent()  # errored channels rejoin as soon as the socket opens
    assert rejoin.event == "phx_join" and rejoin.join_ref == rejoin.ref != "1"


def test_reconnect_backoff_follows_the_js_schedule() -> None:
    h = harness(jitter=0.0)
    h.do(h.core.connect)
    delays = []
    for _ in range(12):
        h.lose(error=OSError("refused"))
        before = h.now
        h.advance(h.core.next_deadline() - h.now)  # type: ignore[operator]
        delays.append(round(h.now - before, 6))
    assert delays == [0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 5.0, 5.0]
    h.open()  # a success starts the schedule over
    h.lose()
    assert round(h.core.next_deadline() - h.now, 6) == 0.01  # type: ignore[operator]


def test_reconnect_delays_are_jittered_within_bounds() -> None:
    h = harness(jitter=0.2, rng=random.Random(7))
    h.do(h.core.connect)
    seen = []
    for tries in range(1, 13):
        h.lose()
        delay = h.core.next_deadline() - h.now  # type: ignore[operator]
        expected = default_reconnect_after(tries)
        assert expected * 0.8 <= delay <= expected * 1.2
        seen.append(delay / expected)
        h.advance(delay)
    assert len({round(x, 6) for x in seen}) > 1, "the factor varies"


def test_errors_and_closes_are_reported() -> None:
    h = harness()
    h.do(h.core.connect)
    error = OSError("connection refused")
    h.lose(error=error)
    assert h.of(Errored) == [Errored(1, error)]
    assert h.of(Closed) == [Closed(1, 1006, "")]
    assert h.core.connection_state == "reconnecting"
    h.advance(0.01)
    assert h.core.connection_state == "connecting"
    h.open()
    assert h.of(Opened) == [Opened(2)]
    assert h.core.established_connections == 1


def test_disconnect_stops_reconnecting_and_connect_rejoins() -> None:
    h = connected()
    channel, _ = joined(h)
    h.do(h.core.disconnect, 1000, "bye")
    assert Close(1, 1000, "bye") in h.events
    assert channel.state is ChannelState.ERRORED
    h.advance(3600.0)
    assert len(h.opens) == 1 and h.core.connection_state == "closed"
    h.do(h.core.connect)
    h.open()
    assert [m.event for m in h.take_sent()] == ["phx_join"]


def test_ping_reports_the_round_trip_or_its_loss() -> None:
    h = connected()
    ref = h.do(h.core.ping)
    (beat,) = h.take_sent(heartbeats=True)
    h.advance(0.25)
    h.reply(beat)
    assert h.of(Pong) == [Pong(ref, 0.25)]
    lost = h.do(h.core.ping)
    h.lose()
    assert h.of(Pong)[-1] == Pong(lost, None)
    assert h.do(h.core.ping) is None  # not connected


# -- joins ----------------------------------------------------------------------------------------


def test_a_refused_first_join_settles_as_error_and_closes_the_channel() -> None:
    h = connected()
    channel = h.core.channel("room:secret")
    push = h.do(channel.join)
    push.owner = "join"
    (join,) = h.take_sent()
    h.reply(join, "error", {"reason": "unauthorized"})
    assert h.settled(push) == [
        Settled(push, "join", Outcome.REPLY, "error", {"reason": "unauthorized"})
    ]
    assert channel.state is ChannelState.CLOSED
    assert h.of(ChannelEnded) == [ChannelEnded(channel, "the join failed")]
    h.advance(60.0)
    assert h.take_sent() == [], "no rejoin of a channel whose first join was refused"


def test_a_first_join_without_reply_times_out_and_sends_a_leave() -> None:
    h = connected()
    channel = h.core.channel("room:1")
    push = h.do(channel.join, 2.0)
    push.owner = "join"
    (join,) = h.take_sent()
    h.advance(2.0)
    assert h.settled(push) == [Settled(push, "join", Outcome.TIMEOUT, None, None)]
    (leave,) = h.take_sent()
    assert (leave.event, leave.join_ref) == ("phx_leave", join.join_ref)
    assert channel.state is ChannelState.CLOSED


def test_a_first_join_without_a_connection_times_out() -> None:
    h = harness()
    h.do(h.core.connect)
    channel = h.core.channel("room:1")
    push = h.do(channel.join, 1.0)
    push.owner = "join"
    for _ in range(5):
        h.lose(error=OSError("down"))
        h.advance(0.1)
    h.advance(1.0)
    assert h.settled(push)[0].outcome is Outcome.TIMEOUT
    assert channel.state is ChannelState.CLOSED


def test_a_join_made_before_the_connection_opens_goes_out_once_on_open() -> None:
    h = harness()
    h.do(h.core.connect)
    channel = h.core.channel("room:1")
    h.do(channel.join)
    h.lose()  # the first attempt fails: the buffered join is outdated by the rejoin
    h.advance(0.01)
    h.open()
    joins = h.take_sent()
    assert [(m.event, m.ref) for m in joins] == [("phx_join", "2")]


def test_rejoins_after_a_crash_follow_the_rejoin_backoff_forever() -> None:
    h = connected(jitter=0.0)
    channel, _ = joined(h)
    h.server("1", "1", "room:1", "phx_error", {"reason": "channel_crash"})
    assert channel.state is ChannelState.ERRORED
    delays = []
    for _ in range(5):
        before = h.now
        h.advance(h.core.next_deadline() - h.now)  # type: ignore[operator]
        delays.append(round(h.now - before, 6))
        (join,) = h.take_sent()
        h.reply(join, "error", {"reason": "not now"})
    assert delays == [1.0, 2.0, 5.0, 10.0, 10.0]
    assert delays == [default_rejoin_after(n) for n in range(1, 6)]
    h.advance(10.0)
    (join,) = h.take_sent()
    h.reply(join)
    assert channel.state is ChannelState.JOINED
    assert len(h.of(Joined)) == 2


def test_join_params_are_evaluated_at_every_join() -> None:
    h = connected()
    state = {"last_seen": 0}
    joined(h, params=lambda: dict(state))
    state["last_seen"] = 41
    h.lose()
    h.advance(0.01)
    h.open()
    (rejoin,) = h.take_sent()
    assert rejoin.payload == {"last_seen": 41}


def test_joining_a_topic_again_leaves_the_other_channel_object_first() -> None:
    h = connected()
    first, _ = joined(h)
    second = h.core.channel("room:1")
    h.do(second.join)
    leave, join = h.take_sent()
    assert (leave.event, leave.join_ref) == ("phx_leave", "1")
    assert (join.event, join.join_ref) == ("phx_join", join.ref)
    h.reply(leave)
    assert first.state is ChannelState.CLOSED
    h.reply(join)
    assert second.state is ChannelState.JOINED


def test_join_twice_is_a_usage_error() -> None:
    h = connected()
    channel, _ = joined(h)
    with pytest.raises(UsageError, match="join\\(\\) was already called"):
        channel.join(h.now)


# -- pushes ---------------------------------------------------------------------------------------


def test_pushes_made_while_disconnected_wait_for_the_rejoin() -> None:
    h = connected()
    channel, _ = joined(h)
    h.lose()
    push = h.do(channel.push, "new_msg", {"n": 1}, 30.0)
    push.owner = "p"
    assert h.take_sent() == []
    h.advance(0.01)
    h.open()
    (rejoin,) = h.take_sent()
    assert rejoin.event == "phx_join"
    h.reply(rejoin)
    (sent,) = h.take_sent()
    assert sent == Message(rejoin.join_ref, sent.ref, "room:1", "new_msg", {"n": 1})
    h.reply(sent, "ok", {"stored": True})
    assert h.settled(push) == [Settled(push, "p", Outcome.REPLY, "ok", {"stored": True})]


def test_a_buffered_push_times_out_and_is_never_sent() -> None:
    h = connected()
    channel, _ = joined(h)
    h.lose()
    push = h.do(channel.push, "new_msg", {}, 1.0)
    push.owner = "p"
    h.advance(1.0)
    assert h.settled(push) == [Settled(push, "p", Outcome.TIMEOUT, None, None)]
    h.open()
    h.advance(0.01)
    h.open()
    h.reply(h.take_sent()[-1])
    assert [m.event for m in h.take_sent()] == []
    assert channel.push_buffer == {}


def test_pushes_in_flight_are_not_resent_after_a_reconnect() -> None:
    # As in JS: a push already written belongs to the connection that carried it.
    h = connected()
    channel, _ = joined(h)
    push = h.do(channel.push, "new_msg", {}, 5.0)
    push.owner = "p"
    h.take_sent()
    h.lose()
    h.advance(0.01)
    h.open()
    h.reply(h.take_sent()[0])
    assert h.take_sent() == []
    h.advance(5.0)
    assert h.settled(push)[0].outcome is Outcome.TIMEOUT


def test_push_before_join_and_after_close() -> None:
    h = connected()
    channel = h.core.channel("room:1")
    with pytest.raises(NotJoinedError, match="before join"):
        channel.push(h.now, "e", {})
    h.do(channel.join)
    h.reply(h.take_sent()[0])
    h.server("1", "1", "room:1", "phx_close", {})
    with pytest.raises(ChannelClosedError, match="closed by the server"):
        channel.push(h.now, "e", {})


def test_the_push_buffer_is_bounded() -> None:
    h = connected(max_buffered_pushes=2)
    channel, _ = joined(h)
    h.lose()
    h.do(channel.push, "a", {})
    h.do(channel.push, "b", {})
    with pytest.raises(PushBufferFull, match="max_buffered_pushes=2"):
        channel.push(h.now, "c", {})


# -- errors, closes and leaves --------------------------------------------------------------------


def test_phx_close_from_the_server_closes_without_rejoin_and_ends_waiting_pushes() -> None:
    h = connected()
    channel, _ = joined(h)
    push = h.do(channel.push, "slow", {})
    push.owner = "p"
    h.server("1", "1", "room:1", "phx_close", {})
    assert channel.state is ChannelState.CLOSED
    assert h.settled(push) == [Settled(push, "p", Outcome.CLOSED, None, "closed by the server")]
    h.take_sent()
    h.advance(60.0)
    assert h.take_sent() == []


def test_a_phx_close_for_an_earlier_join_is_ignored() -> None:
    h = connected()
    channel, _ = joined(h)
    h.server("0", "0", "room:1", "phx_close", {})
    assert channel.state is ChannelState.JOINED


def test_leave_waits_for_the_reply_when_connected() -> None:
    h = connected()
    channel, _ = joined(h)
    leave = h.do(channel.leave)
    leave.owner = "leave"
    (frame,) = h.take_sent()
    assert (frame.event, frame.join_ref) == ("phx_leave", "1")
    assert channel.state is ChannelState.LEAVING
    h.reply(frame)
    assert channel.state is ChannelState.CLOSED
    assert h.settled(leave) == [Settled(leave, "leave", Outcome.REPLY, "ok", {})]
    assert h.of(ChannelEnded) == [ChannelEnded(channel, "left")]


def test_leave_without_a_connection_closes_at_once() -> None:
    h = connected()
    channel, _ = joined(h)
    h.lose()
    leave = h.do(channel.leave)
    assert leave.received == (Outcome.REPLY, "ok")
    assert channel.state is ChannelState.CLOSED
    h.advance(0.01)
    h.open()
    assert h.take_sent() == [], "the buffered leave of a closed channel is not sent"


def test_leave_while_the_first_join_is_pending_ends_the_join() -> None:
    h = connected()
    channel = h.core.channel("room:1")
    push = h.do(channel.join)
    push.owner = "join"
    (join,) = h.take_sent()
    h.do(channel.leave)
    assert h.settled(push)[0].outcome is Outcome.CLOSED
    h.reply(join)  # the late ok does not revive a leaving channel
    assert channel.state is ChannelState.LEAVING


def test_illegal_transitions_name_state_and_event() -> None:
    h = connected()
    channel = h.core.channel("room:1")
    with pytest.raises(InvalidTransition, match="'joined' is not allowed in state 'closed'"):
        channel._to("joined")


# -- properties -----------------------------------------------------------------------------------

OPS = st.sampled_from(
    [
        "open",
        "lose",
        "error",
        "push",
        "leave",
        "reply_ok",
        "reply_error",
        "crash",
        "close",
        "tick",
        "wait",
        "join_other",
        "disconnect",
        "connect",
        "garbage_reply",
    ]
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(OPS, st.integers(0, 7)), max_size=40), st.integers(0, 2**32))
def test_any_sequence_keeps_the_invariants(ops: list[tuple[str, int]], seed: int) -> None:
    """Whatever the server and network do, every awaited push settles exactly once,
    frames only go out on an open connection, and no transition is illegal."""
    h = harness(jitter=0.2, rng=random.Random(seed), heartbeat_interval=5.0)
    h.do(h.core.connect)
    channels = [h.core.channel("room:1"), h.core.channel("room:2", lambda: {"t": h.now})]
    pushes: list[PushCore] = []
    for channel in channels:
        push = h.do(channel.join, 3.0)
        push.owner = push
        pushes.append(push)
    for op, index in ops:
        channel = channels[index % len(channels)]
        pending = [m for m in h.sent if m.ref is not None and m.topic != "phoenix"][-8:]
        if op == "open" and h.core.connection_state == "connecting":
            h.open()
        elif op in ("lose", "error") and h.core.connection_state in ("connecting", "open"):
            h.lose(error=OSError("x") if op == "error" else None)
        elif (
            op == "push"
            and channel.joined_once
            and channel.state not in (ChannelState.CLOSED, ChannelState.LEAVING)
        ):
            push = h.do(channel.push, "e", {"n": len(pushes)})
            push.owner = push
            pushes.append(push)
        elif op == "leave":
            leave = h.do(channel.leave)
            if leave is not None and leave.owner is None and leave.received is None:
                leave.owner = leave
                pushes.append(leave)
        elif op in ("reply_ok", "reply_error") and pending and h.core.is_connected:
            target = pending[index % len(pending)]
            h.reply(target, "ok" if op == "reply_ok" else "error")
        elif op == "garbage_reply" and pending and h.core.is_connected:
            h.server(pending[-1].join_ref, pending[-1].ref, pending[-1].topic, "phx_reply", [])
        elif op in ("crash", "close") and h.core.is_connected and channel.join_ref:
            event = "phx_error" if op == "crash" else "phx_close"
            h.server(channel.join_ref, channel.join_ref, channel.topic, event, {})
        elif op == "tick":
            h.advance(0.5)
        elif op == "wait":
            h.advance(7.0)
        elif op == "join_other":
            extra = h.core.channel(channel.topic)
            push = h.do(extra.join, 3.0)
            push.owner = push
            pushes.append(push)
            channels.append(extra)
        elif op == "disconnect":
            h.do(h.core.disconnect)
        elif op == "connect":
            h.do(h.core.connect)
    h.advance(3600.0)  # every timeout has passed
    for push in pushes:
        settled = [e for e in h.of(Settled) if e.push is push]
        assert len(settled) == 1, f"{push!r} settled {len(settled)} times"
