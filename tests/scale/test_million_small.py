"""The million benchmark, scaled down, as a test of correctness (never of timings).

Runs ``benchmarks/million.py`` exactly as the lead runs it for a million,
at ``PHX_MILLION_SMALL_N`` connections (default 10,000) over
``PHX_MILLION_SMALL_WORKERS`` workers (default 4), with its own private
redis-server, and checks from its JSON report that every connection
joined, every client got each broadcast exactly once, no worker restarted,
each worker subscribed once to the topic on the engine, one worker's death
cost only its own connections (they reconnected to the others and got the
next broadcast exactly once), and the drain closed every connection.
On a quiet CI machine ``PHX_MILLION_SMALL_N=60000`` runs in about two
minutes. It never writes /proc/sys (``--no-sysctl``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
N = int(os.environ.get("PHX_MILLION_SMALL_N", "10000"))
WORKERS = int(os.environ.get("PHX_MILLION_SMALL_WORKERS", "4"))


@pytest.mark.timeout(900)
def test_the_million_benchmark_scaled_down(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    report = tmp_path / "million.json"
    done = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.million", "--n", str(N),
            "--workers", str(WORKERS), "--broadcasts", "2", "--settle", "0.5",
            "--no-baseline", "--no-sysctl", "--max-seconds", "600",
            "--log-dir", str(tmp_path / "logs"), "--json", str(report),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=700, check=False,
    )  # fmt: skip
    out = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, out
    figures = json.loads(report.read_text())
    (run,) = figures["runs"]
    assert run["n"] == N and run["workers"] == WORKERS
    assert run["joined"] == N and run["closed_after_connect"] == 0, out
    for broadcast in run["broadcasts"]:
        assert broadcast["deliveries"] == N and broadcast["wrong"] == 0, (broadcast, out)
    assert run["every_client_exactly_once"] is True
    assert run["workers_restarted"] == 0, out
    engine = run["engine"]
    assert engine["topic_subscribers"] == WORKERS, engine  # once per worker, not per client
    death = run["worker_death"]
    assert 0 < death["connections_lost"] < N, death
    assert death["reconnected"] == death["connections_lost"], death
    assert death["every_client_exactly_once_after"] is True, death
    assert run["drain_exit_code"] == 0
    assert run["closed_after_drain"] == N
