"""The soak, bounded for CI: churn, then every count back to its baseline.

``benchmarks/soak.py`` runs the same churn for minutes (its figures are in
benchmarks/RESULTS.md); this is a few seconds per WebSocket path.
"""

from __future__ import annotations

import pytest

from benchmarks.soak import report, soak


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "asgi"])
async def test_churn_leaves_nothing_behind(fast: bool) -> None:
    result = await soak(seconds=3.0, workers=8, fast=fast, warmup=1.5)
    summary = report(result)
    tally = result["tally"]
    assert not result["errors"], summary
    assert tally.leaves and tally.closes and tally.aborts, summary  # every way of ending
    assert not result["leaks"], summary  # channels, sockets, subscriptions, presences, tasks
    end = result["end"]
    assert end["watched_subscribers"] == end["presences"] == 0, summary
    assert end["channels"] == end["sockets"] == end["connections"] == 1, summary  # the monitor
    growth_mib = (result["end_rss_kib"] - result["baseline_rss_kib"]) / 1024
    assert growth_mib < 16, summary  # a leak of ~1 KiB per session would be ~10 MiB here
