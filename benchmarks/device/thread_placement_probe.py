"""Where a scoring job's threads run, sampled from /proc while the job runs: a diagnostic for
workers that slow down for seconds at a time on a host they share (see
benchmarks/results/scaling/*/NOTES.md).

    python benchmarks/device/thread_placement_probe.py OUT.jsonl [--match launchers.cli] [--interval 0.25]
        [--seconds 600]

Every --interval seconds it writes one JSON line per sample: the time, and for each process whose
command line contains --match, each thread's id, name (the pipeline names its threads bs-read,
bs-decode-k: scoring/thread_names.py), the CPU it last ran on, and its user+system CPU seconds so
far. It stops after --seconds or on SIGTERM/SIGINT. Linux only (it reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def task_sample(stat_text: str) -> dict:
    """name, last CPU and CPU seconds from a /proc/<pid>/task/<tid>/stat line."""
    name = stat_text[stat_text.index("(") + 1: stat_text.rindex(")")]
    fields = stat_text[stat_text.rindex(")") + 2:].split()
    # fields[0] is field 3 of proc(5): utime is field 14, stime 15, processor 39
    utime, stime, cpu = int(fields[11]), int(fields[12]), int(fields[36])
    return {"name": name, "cpu": cpu, "cpu_s": round((utime + stime) / TICKS, 3)}


def matching_pids(match: str, proc: Path = Path("/proc")) -> list[int]:
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if match.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return sorted(pids)


def sample(match: str, proc: Path = Path("/proc")) -> dict:
    out = {}
    for pid in matching_pids(match, proc):
        threads = {}
        try:
            for task in (proc / str(pid) / "task").iterdir():
                try:
                    threads[task.name] = task_sample((task / "stat").read_text())
                except (OSError, ValueError, IndexError):
                    continue
        except OSError:
            continue
        out[str(pid)] = threads
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--match", default="launchers.cli")
    ap.add_argument("--interval", type=float, default=0.25)
    ap.add_argument("--seconds", type=float, default=600)
    args = ap.parse_args()
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    end = time.monotonic() + args.seconds
    with args.out.open("w") as f:
        while not stop and time.monotonic() < end:
            t = time.time()
            procs = sample(args.match)
            if procs:
                f.write(json.dumps({"t": round(t, 3), "procs": procs}) + "\n")
                f.flush()
            time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
