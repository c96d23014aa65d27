"""The host's CPU time over a stretch of a benchmark, from Linux's /proc/stat: above all the steal
time, the share of time the VM's CPUs were ready to run while its hypervisor ran something else.

    before = cpu_times()
    ...                                  # the run
    figures = cpu_shares(before, cpu_times())   # {"steal": 0.0012, "busy": 0.21, "seconds": ...} or None

Why: on the lent H100 VMs the end-to-end share of the engine alone tracks the steal time during a
run (benchmarks/results/scoring/h100_2026-11-23_s27/NOTES.md), so a run's figures carry it.
Elsewhere (no /proc/stat) both give None.
"""

from __future__ import annotations

from pathlib import Path

# /proc/stat's aggregate "cpu" line, in order (guest time is already inside user and nice)
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
PROC_STAT = Path("/proc/stat")


def cpu_times(path: Path = PROC_STAT) -> dict[str, int] | None:
    """The aggregate cpu line's ticks by field, or None where there is no readable /proc/stat."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "cpu":
            values = [int(w) for w in words[1:1 + len(FIELDS)]]
            return dict(zip(FIELDS, values + [0] * (len(FIELDS) - len(values))))
    return None


def cpu_shares(before: dict[str, int] | None, after: dict[str, int] | None) -> dict | None:
    """Steal and busy (not idle, not waiting on I/O, not stolen) as shares of all CPU time between
    two readings, and the ticks counted; None without both readings or with no time between."""
    if before is None or after is None:
        return None
    delta = {name: after[name] - before[name] for name in FIELDS}
    total = sum(delta.values())
    if total <= 0:
        return None
    busy = total - delta["idle"] - delta["iowait"] - delta["steal"]
    return {"steal": delta["steal"] / total, "busy": busy / total, "ticks": total}
