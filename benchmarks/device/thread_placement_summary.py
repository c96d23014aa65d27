"""Per process and thread role, the CPU a scoring job's threads used: a summary of the samples
thread_placement_probe.py wrote.

    python benchmarks/device/thread_placement_summary.py SAMPLES.jsonl[.gz] [--json OUT.json]

A worker process is one with a bs-read thread (scoring/pipeline.py names it). For each, from its
first sample to its last, the mean CPU (cores) of each role: main (the thread whose id is the
process's), bs-read, bs-decode-k, bs-dispatch (mpi rank 0), other named threads, and "unnamed"
for the rest together (Python's own, OpenBLAS's). A thread started by a named one inherits its
name on Linux, so a role counts the helpers its thread started (Arrow's, CUDA's, nvImageCodec's).
Processes are listed in order of their ids:
under mpirun on one host that is rank order. A worker whose reader uses twice the CPU of the
others while it scores fewer images is one whose reading got dearer, not one with more to read.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import defaultdict
from pathlib import Path

UNNAMED = {"python3", "python", "unnamed"}


def read_samples(path: Path) -> list[dict]:
    """The probe's samples; a line that does not parse (the last one, torn when the probe was
    killed mid-write) is skipped and counted on stderr."""
    opener = gzip.open if path.suffix == ".gz" else open
    samples, torn = [], 0
    with opener(path, "rt") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                samples.append(json.loads(line))
            except ValueError:
                torn += 1
    if torn:
        print(f"{path}: skipped {torn} line{'s' * (torn != 1)} that did not parse", file=sys.stderr)
    return samples


def role(pid: str, tid: str, name: str) -> str:
    if tid == pid:
        return "main"
    return "unnamed" if name in UNNAMED else name


def worker_threads(before: dict, after: dict):
    """Each thread of each worker process (one with a bs-read thread) seen in both samples:
    (pid, tid, thread as in `after`, CPU seconds it used between the two)."""
    for pid, threads in after["procs"].items():
        earlier = before["procs"].get(pid)
        if not earlier or not any(t["name"] == "bs-read" for t in threads.values()):
            continue
        for tid, thread in threads.items():
            if tid in earlier:
                yield pid, tid, thread, max(0.0, thread["cpu_s"] - earlier[tid]["cpu_s"])


def summarize(samples: list[dict]) -> list[dict]:
    """One entry per worker process: pid, first and last sample time (s after the first sample of
    the file), and the mean CPU cores per role between them."""
    if not samples:
        return []
    t0 = samples[0]["t"]
    used: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    span: dict[str, list[float]] = {}
    for before, after in zip(samples, samples[1:]):
        for pid, tid, thread, seconds in worker_threads(before, after):
            span.setdefault(pid, [before["t"], after["t"]])[1] = after["t"]
            used[pid][role(pid, tid, thread["name"])] += seconds
    out = []
    for pid in sorted(span, key=int):
        first, last = span[pid]
        seconds = max(last - first, 1e-9)
        cores = {r: round(s / seconds, 3) for r, s in sorted(used[pid].items())}
        out.append({"pid": int(pid), "from_s": round(first - t0, 2), "to_s": round(last - t0, 2), "cores": cores})
    return out


def shared_cpu_intervals(samples: list[dict], busy: float = 0.25) -> tuple[int, int]:
    """(intervals between samples, those in which two busy threads of the workers, each above
    `busy` cores, were last seen on the same CPU)."""
    intervals = shared = 0
    for before, after in zip(samples, samples[1:]):
        dt = max(after["t"] - before["t"], 1e-9)
        cpus = [thread["cpu"] for _, _, thread, seconds in worker_threads(before, after) if seconds / dt > busy]
        if cpus:
            intervals += 1
            shared += len(cpus) != len(set(cpus))
    return intervals, shared


def format_table(rows: list[dict]) -> str:
    roles = ["main", "bs-read", "bs-decode-0", "bs-decode-1", "bs-decode-2", "bs-dispatch", "unnamed"]
    lines = ["pid      from    to  " + "  ".join(f"{r:>11s}" for r in roles)]
    for row in rows:
        cells = "  ".join(f"{row['cores'].get(r, 0.0):11.2f}" for r in roles)
        lines.append(f"{row['pid']:<7d} {row['from_s']:5.1f} {row['to_s']:5.1f}  {cells}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("samples", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    samples = read_samples(args.samples)
    rows = summarize(samples)
    print(format_table(rows))
    intervals, shared = shared_cpu_intervals(samples)
    print(f"{shared} of {intervals} intervals had two busy worker threads (> 0.25 cores) last on one CPU")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
