"""Property test of batched diffs (presence/batch.py, no I/O): clients stay exact.

A random history of joins, leaves and updates of a topic is cut into
batches at random; a client takes ``presence_state`` at a random moment
(inside a batch, or between two), then applies, with the JS helper's rules,
every merged diff emitted after that moment: the batch it joined during
(which also carries changes it already saw) and the later ones. Its view
must equal the final truth, whatever the cuts and the moment.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_channels.presence.batch import merge_diffs
from phoenix_channels.presence.tracker import Diff

KEYS = ["a", "b", "c"]

View = dict[str, dict[str, Any]]


def apply(view: View, joins: list[Any], leaves: list[Any]) -> None:
    """Phoenix's Presence.syncDiff: joins (keeping the other metas), then leaves."""
    for key, meta in joins:
        metas = {meta["phx_ref"]: meta}
        for ref, other in view.get(key, {}).items():
            metas.setdefault(ref, other)
        view[key] = metas
    for key, meta in leaves:
        current = view.get(key)
        if current is None:
            continue
        current.pop(meta["phx_ref"], None)
        if not current:
            del view[key]


def history(ops: list[tuple[int, int]]) -> tuple[list[Diff], list[View]]:
    """Diffs of a random history and the truth after each (truth[i]: after i diffs)."""
    live: dict[str, tuple[str, dict[str, Any]]] = {}  # ref -> (key, meta)
    truths: list[View] = [{}]
    diffs = []
    for serial, (kind, pick) in enumerate(ops, 1):
        refs = sorted(live)
        if kind == 0 or not refs:  # a join
            key = KEYS[pick % len(KEYS)]
            meta = {"phx_ref": f"r{serial}"}
            live[meta["phx_ref"]] = (key, meta)
            diffs.append(Diff("t", [(key, meta)], []))
        elif kind == 1:  # a leave
            ref = refs[pick % len(refs)]
            key, meta = live.pop(ref)
            diffs.append(Diff("t", [], [(key, meta)]))
        else:  # an update: the new meta joins, the old one leaves
            ref = refs[pick % len(refs)]
            key, old = live.pop(ref)
            new = {"phx_ref": f"r{serial}", "phx_ref_prev": ref}
            live[new["phx_ref"]] = (key, new)
            diffs.append(Diff("t", [(key, new)], [(key, old)]))
        truth: View = {}
        for ref, (key, meta) in live.items():
            truth.setdefault(key, {})[ref] = meta
        truths.append(truth)
    return diffs, truths


@settings(max_examples=400, deadline=None)
@given(
    ops=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 50)), min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=10),
    moment=st.integers(0, 40),
    late=st.booleans(),
)
def test_a_client_is_exact_whenever_it_took_its_state(
    ops: list[tuple[int, int]], cuts: list[int], moment: int, late: bool
) -> None:
    diffs, truths = history(ops)
    n = len(diffs)
    bounds = sorted({0, n, *(c for c in cuts if c < n)})
    batches = list(itertools.pairwise(bounds))
    moment = min(moment, n)
    # The state taken after `moment` diffs; every batch ending after it is still to
    # come, and one ending right at it may arrive before or after the state (`late`).
    view = {key: dict(metas) for key, metas in truths[moment].items()}
    for start, end in batches:
        if end > moment or (late and end == moment):
            joins, leaves = merge_diffs(diffs[start:end])
            apply(view, joins, leaves)
    assert view == truths[n]
