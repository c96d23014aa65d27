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

`--per-cpu` adds, for each busy role (main, bs-read, the decoders together), what each CPU cost
it: over stretches of WINDOW sample intervals in which a thread stayed on one CPU, the cores it used,
against the role's median over every such stretch. A reader that uses twice the cores on one CPU
while its worker scores no more images is one whose CPU makes the same work dearer (session 11:
CPUs 14-20 of the 4 x H200 hosts).
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
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


def is_worker(threads: dict) -> bool:
    """Whether a sampled process is a scoring worker: one with a bs-read thread."""
    return any(t["name"] == "bs-read" for t in threads.values())


def worker_threads(before: dict, after: dict):
    """Each thread of each worker process (one with a bs-read thread) seen in both samples:
    (pid, tid, thread as in `after`, CPU seconds it used between the two)."""
    for pid, threads in after["procs"].items():
        earlier = before["procs"].get(pid)
        if not earlier or not is_worker(threads):
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


WINDOW = 4  # sample intervals (0.25 s each by default) per stretch
BUSY = 0.2  # cores: a stretch below it is a thread waiting, which says nothing of its CPU


def per_cpu_rates(samples: list[dict], window: int = WINDOW, busy: float = BUSY) -> dict[str, dict]:
    """{role: {"median_cores", "stretches", "cpus": {cpu: {"vs_median", "stretches"}}}} for the
    roles main, bs-read and bs-decode (every decoder), from the stretches of `window` intervals in
    which a worker thread was seen on one CPU throughout and used more than `busy` cores."""
    seen: dict[tuple[str, str], list[tuple[float, int, float, str]]] = defaultdict(list)
    for sample in samples:
        for pid, threads in sample["procs"].items():
            if not is_worker(threads):
                continue
            for tid, thread in threads.items():
                name = role(pid, tid, thread["name"])
                name = "bs-decode" if name.startswith("bs-decode") else name
                if name in ("main", "bs-read", "bs-decode"):
                    seen[(pid, tid)].append((sample["t"], thread["cpu"], thread["cpu_s"], name))
    stretches: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for points in seen.values():
        for i in range(0, len(points) - window, window):
            part = points[i:i + window + 1]
            cpus = {cpu for _, cpu, _, _ in part}
            seconds = part[-1][0] - part[0][0]
            cores = (part[-1][2] - part[0][2]) / seconds if seconds > 0 else 0.0
            if len(cpus) == 1 and cores > busy:
                stretches[part[0][3]].append((cpus.pop(), cores))
    out = {}
    for name, found in sorted(stretches.items()):
        median = statistics.median(c for _, c in found)
        by_cpu: dict[int, list[float]] = defaultdict(list)
        for cpu, cores in found:
            by_cpu[cpu].append(cores / median)
        out[name] = {"median_cores": round(median, 3), "stretches": len(found),
                     "cpus": {cpu: {"vs_median": round(sum(r) / len(r), 2), "stretches": len(r)}
                              for cpu, r in sorted(by_cpu.items())}}
    return out


def format_per_cpu(rates: dict[str, dict]) -> str:
    """One line per role, then its CPUs as cpu:ratio(stretches); the ratio 1.5 or more marked *."""
    lines = []
    for name, r in rates.items():
        lines.append(f"{name}: median {r['median_cores']:.2f} cores over {r['stretches']} stretches")
        cells = [f"{cpu}:{c['vs_median']:.2f}({c['stretches']}){'*' if c['vs_median'] >= 1.5 else ''}"
                 for cpu, c in r["cpus"].items()]
        lines.append("   " + " ".join(cells))
    return "\n".join(lines)


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
    ap.add_argument("--per-cpu", action="store_true", help="how fast each CPU ran each busy role")
    args = ap.parse_args()
    samples = read_samples(args.samples)
    rows = summarize(samples)
    print(format_table(rows))
    intervals, shared = shared_cpu_intervals(samples)
    print(f"{shared} of {intervals} intervals had two busy worker threads (> 0.25 cores) last on one CPU")
    rates = per_cpu_rates(samples) if args.per_cpu else None
    if rates is not None:
        print(format_per_cpu(rates))
    if args.json:
        data = rows if rates is None else {"workers": rows, "per_cpu": rates}
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
