"""How long workers wait to record finished shards in the manifest, with several recording at once.

    python benchmarks/manifest_records.py OUTDIR [--workers 1,2,8] [--shards 640] [--repeats 3]

Each of N processes records shards/N parts (PartInfo only; no part files are written), one after
another, into one empty output directory, then closes its Manifest as a worker does at its end
(where that method exists: the code before manifest journals had none). The figure is the wall
time from the start of the first record to the last close, and each process's total time inside
record(): the time a worker's main thread is kept from submitting batches. Median of --repeats.

The scaling run on 8 x H200 scored 2.4 million rows in 640 shards of 3,750 rows (with --weak,
300,000 rows a worker), about 64 shards a second across the 8 workers: --shards 640 is that run.
To compare with the code before a change, run the same command in a checkout of the older commit
(`git worktree add /tmp/old REV`, then `python /tmp/old/benchmarks/manifest_records.py ...` if
the script is there, or this script with `--root /tmp/old`).

Writes OUTDIR/manifest_records.json (date, command, machine, code revision, figures) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _record(root: str, out_dir: str, worker: int, count: int, start_at: float, results) -> None:
    sys.path.insert(0, root)
    # From scoring.outputs, where both lived before scoring/manifest.py and which still imports
    # them: --root may name an older checkout.
    from scoring.outputs import Manifest, PartInfo

    manifest = Manifest(out_dir)
    while time.time() < start_at:  # every process starts recording together
        time.sleep(0.0005)
    began = time.perf_counter()
    inside = 0.0
    for i in range(count):
        info = PartInfo(key=f"copy{worker}-part-{i:05d}", file=f"parts/copy{worker}-part-{i:05d}.parquet",
                        rows=3750, errors=0, sha256="0" * 64, bytes=1_000_000)
        t = time.perf_counter()
        manifest.record(info)
        inside += time.perf_counter() - t
    if hasattr(manifest, "close"):
        manifest.close()
    results.put((worker, inside, time.perf_counter() - began, time.time()))


def one_run(root: Path, out_dir: Path, workers: int, shards: int) -> dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 1.0 + 0.2 * workers  # after every process has imported pyarrow
    procs = [context.Process(target=_record, args=(str(root), str(out_dir), w, shards // workers, start_at, results))
             for w in range(workers)]
    for p in procs:
        p.start()
    got = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
        if p.exitcode != 0:
            raise SystemExit(f"a recording process failed (exit code {p.exitcode})")
    from_code = _recorded(root, out_dir)
    if from_code != (shards // workers) * workers:
        raise SystemExit(f"{from_code} parts recorded, {(shards // workers) * workers} expected")
    return {"wall_s": max(g[3] for g in got) - start_at,
            "max_worker_inside_record_s": max(g[1] for g in got),
            "mean_worker_inside_record_s": statistics.fmean(g[1] for g in got)}


def _recorded(root: Path, out_dir: Path) -> int:
    code = f"import sys; sys.path.insert(0, {str(root)!r}); from scoring.outputs import Manifest; " \
           f"print(len(Manifest({str(out_dir)!r}).done()))"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--workers", default="1,2,8", help="comma-separated process counts")
    parser.add_argument("--shards", type=int, default=640, help="parts recorded in all, split among the processes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose scoring.outputs is timed")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.workers.split(",")]
    root = args.root.resolve()
    revision = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip() or None
    figures = []
    print(f"manifest_records: {args.shards} parts, code of {root} ({revision})")
    print(f"{'workers':>7} {'wall s':>8} {'in record(), worst worker s':>28} {'mean s':>8}")
    for workers in counts:
        runs = [one_run(root, args.outdir / "work", workers, args.shards) for _ in range(args.repeats)]
        row = {"workers": workers, "parts": (args.shards // workers) * workers,
               **{key: statistics.median(r[key] for r in runs) for key in runs[0]}, "runs": runs}
        figures.append(row)
        print(f"{workers:>7} {row['wall_s']:>8.2f} {row['max_worker_inside_record_s']:>28.2f} "
              f"{row['mean_worker_inside_record_s']:>8.2f}")
    shutil.rmtree(args.outdir / "work", ignore_errors=True)
    result = {
        "benchmark": "manifest_records",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": {"host": platform.node(), "cores": os.cpu_count(), "python": platform.python_version()},
        "code": {"root": str(root), "revision": revision},
        "shards": args.shards,
        "repeats": args.repeats,
        "figures": figures,
    }
    args.outdir.mkdir(parents=True, exist_ok=True)
    (args.outdir / "manifest_records.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.outdir / 'manifest_records.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
