"""PubSub counts a topic's subscribers by kind once per change (what a broadcast's
telemetry reads instead of a pass over every subscriber): never a stale count."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_channels import PubSub

ENCODERS = [object(), object()]
INTERCEPTS = [None, frozenset({"shout"})]


def counted(pubsub: PubSub) -> dict[str, dict[tuple[Any, Any], int]]:
    kinds: dict[str, dict[tuple[Any, Any], int]] = {}
    for topic, subs in pubsub._topics.items():
        for _owner, _target, encoder, intercepts in subs.values():
            of_topic = kinds.setdefault(topic, {})
            of_topic[(encoder, intercepts)] = of_topic.get((encoder, intercepts), 0) + 1
    return kinds


operation = st.tuples(
    st.sampled_from(["fastlane", "callback", "unsubscribe", "hold", "restore"]),
    st.sampled_from(["a", "b"]),  # topic
    st.integers(0, 4),  # owner
    st.integers(0, 1),  # encoder
    st.integers(0, 1),  # intercepts
)


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=40))
def test_the_counts_by_kind_follow_every_change(ops: list[tuple[str, str, int, int, int]]) -> None:
    pubsub = PubSub()
    owners = [object() for _ in range(5)]
    callbacks = [lambda message: None for _ in range(5)]
    restores: list[Any] = []
    for kind, topic, who, encoder, intercepts in ops:
        if kind == "fastlane":
            pubsub.subscribe_fastlane(
                topic, owners[who], lambda f: None, ENCODERS[encoder], INTERCEPTS[intercepts]
            )
        elif kind == "callback":
            pubsub.subscribe(topic, callbacks[who])
        elif kind == "unsubscribe":
            pubsub.unsubscribe(topic, owners[who])
            pubsub.unsubscribe(topic, callbacks[who])
        elif kind == "hold":
            held = pubsub.hold(topic, owners[who], lambda m: None)
            if held is not None:
                restores.append(held[1])
        elif restores:
            restores.pop(0)()
        truth = counted(pubsub)
        # Reading every topic fills the cache; the next change must drop what it touches.
        assert {t: pubsub._kinds_of(t) for t in ("a", "b")} == {
            t: truth.get(t, {}) for t in ("a", "b")
        }
        assert set(pubsub._kinds) == set(truth)
    channels = {
        t: sum(1 for e in s.values() if e[2] is not None) for t, s in pubsub._topics.items()
    }
    assert {t: pubsub.channel_subscribers(t) for t in channels} == channels
