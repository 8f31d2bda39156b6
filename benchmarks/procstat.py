"""CPU time and resident memory of a process tree, read from /proc (Linux only).

CPU is the sum over the process and its live descendants of
``utime + stime + cutime + cstime`` from ``/proc/PID/stat`` (clock ticks,
usually 10 ms), cross-checked against the per-thread nanosecond counters of
``/proc/PID/task/TID/schedstat``. Deltas use the nanosecond figure when both
agree within the tick resolution (threads that exited are missing from
schedstat but not from stat: then the stat figure is used).
RSS is the sum of ``VmRSS`` from ``/proc/PID/status`` over the same tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICK = 1.0 / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (parents first)."""
    out = [pid]
    i = 0
    while i < len(out):
        p = out[i]
        i += 1
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                children = Path(f"/proc/{p}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            out.extend(int(c) for c in children)
    return out


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU seconds of a process tree at one moment."""

    stat: float  # utime+stime+cutime+cstime, tick resolution
    sched: float  # sum of live threads' on-CPU time, ns resolution
    procs: int

    def __sub__(self, earlier: CpuSample) -> float:
        """CPU seconds spent between ``earlier`` and this sample."""
        coarse = self.stat - earlier.stat
        fine = self.sched - earlier.sched
        slack = 2 * TICK * max(self.procs, earlier.procs) + 0.02 * abs(coarse)
        return fine if abs(fine - coarse) <= slack else coarse


def cpu(pid: int) -> CpuSample:
    stat_total = 0
    sched_total = 0
    pids = process_tree(pid)
    for p in pids:
        try:
            raw = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17
        stat_total += sum(int(fields[i - 3]) for i in (14, 15, 16, 17))
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                sched_total += int(Path(f"/proc/{p}/task/{tid}/schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                continue
    return CpuSample(stat_total * TICK, sched_total / 1e9, len(pids))


def rss_kib(pid: int) -> int:
    """Sum of VmRSS (KiB) over ``pid`` and its live descendants."""
    total = 0
    for p in process_tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
                break
    return total
