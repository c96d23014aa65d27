"""The figures of a device call's end-to-end runs, one line a run and one a variant, from what a call
script copies into its results folder: `e2e_NAME.json` (benchmarks/scoring_gpu_e2e.py's JSON),
beside it `report_NAME.json` (the worker's report) and `steal_NAME.txt` (/proc/stat's cpu line
before and after the run), the last two optional. Without a steal file, the benchmark's own
reading of the job's steal time (`end_to_end.host_cpu`, since session 27) is used.

    python3 benchmarks/device/e2e_summary.py DIR [DIR ...] [--by-steal] [--exclude TEXT ...]

A run's variant is its name without the trailing run number (`e2e_slots12_3.json`: slots12). Per
variant: the share of the engine alone (steady images/s over the middle of the rows against the
engine alone, as the benchmark computes it), its median, the GPU busy fraction, and the runs at
or above the issue's 0.90. Call scripts used to print this with a block of their own each.

--by-steal also puts every run of every DIR with a steal reading into bands of the host's CPU steal
time during the run (STEAL_EDGES), each with its runs, the share's median and lowest, and the runs
at 0.90: whether the shortfall follows the VM's host. --exclude leaves out runs whose name holds
TEXT (a run under a profiler, say).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

TARGET = 0.90  # issue #5: end to end at 90% of the engine alone
STEAL_EDGES = (0.001, 0.002, 0.004, 0.008)  # --by-steal's band edges, shares of all CPU time
_RUN = re.compile(r"^e2e_(?P<variant>.+?)(?:_(?P<run>\d+))?\.json$")


def steal_share(path: Path) -> float | None:
    """The CPU steal time's share of all CPU time between the two /proc/stat readings in `path`
    (lines "before user U system S idle I steal T" and "after ..."), or None without both."""
    if not path.is_file():
        return None
    readings = {}
    for line in path.read_text().splitlines():
        words = line.split()
        if len(words) >= 3 and len(words) % 2 == 1:
            readings[words[0]] = {key: int(value) for key, value in zip(words[1::2], words[2::2])}
    if "before" not in readings or "after" not in readings:
        return None
    deltas = {key: readings["after"][key] - readings["before"].get(key, 0) for key in readings["after"]}
    total = sum(deltas.values())
    return deltas.get("steal", 0) / total if total > 0 else None


def run_line(e2e_path: Path) -> dict:
    """One run's figures: from its benchmark JSON, and its report and steal file where present."""
    match = _RUN.match(e2e_path.name)
    if match is None:
        raise ValueError(f"{e2e_path}: not an e2e_NAME.json file")
    bench = json.loads(e2e_path.read_text())
    end = bench.get("end_to_end") or {}
    run = {"name": e2e_path.stem[len("e2e_"):], "variant": match["variant"],
           "alone": (bench.get("engine_only") or {}).get("images_per_s"),
           "steady": end.get("steady_images_per_s"), "share": bench.get("ratio_steady_over_engine"),
           "first_batch_to_end": bench.get("ratio_first_batch_to_end_over_engine"),
           "busy": end.get("busy_fraction"), "error": end.get("error")}
    report = e2e_path.with_name("report_" + e2e_path.name[len("e2e_"):])
    if report.is_file():
        worker = (json.loads(report.read_text()).get("workers") or [{}])[0]  # a report without workers: no figures
        run["thread_cpu_us_per_image"] = {name: round(us, 1) for name, us in
                                          (worker.get("thread_cpu_us_per_image") or {}).items()}
        run["slow_cpus"] = [(slow["cpu"], slow["thread"]) for slow in worker.get("slow_cpus_left") or []]
    run["steal"] = steal_share(e2e_path.with_name("steal_" + e2e_path.stem[len("e2e_"):] + ".txt"))
    if run["steal"] is None:  # the benchmark's own reading, since session 27 (its job only, no engine-alone part)
        run["steal"] = (end.get("host_cpu") or {}).get("steal")
    return run


def variant_lines(runs: list[dict]) -> dict[str, dict]:
    """Per variant, in the order first seen: runs, the share's range and median, busy's range, and
    how many runs reached TARGET. Runs without a share (a failed run) count in `runs` only."""
    by_variant: dict[str, list[dict]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], []).append(run)
    summary = {}
    for variant, members in by_variant.items():
        shares = [r["share"] for r in members if r["share"] is not None]
        busy = [r["busy"] for r in members if r["busy"] is not None]
        summary[variant] = {
            "runs": len(members),
            "share": (min(shares), max(shares)) if shares else None,
            "median": statistics.median(shares) if shares else None,
            "busy": (min(busy), max(busy)) if busy else None,
            "at_target": sum(s >= TARGET for s in shares)}
    return summary


def steal_bands(runs: list[dict], edges=STEAL_EDGES) -> list[dict]:
    """The runs with a share and a steal reading, in bands of steal [0, e1), [e1, e2), ..., [eN, 1]:
    per band its bounds, runs, the share's median and lowest, and the runs at TARGET. Empty bands
    are left out."""
    bounds = [0.0, *edges, 1.0]
    bands = []
    for low, high in zip(bounds, bounds[1:]):
        shares = [r["share"] for r in runs if r["share"] is not None and r.get("steal") is not None
                  and low <= r["steal"] < high + (high == 1.0)]
        if shares:
            bands.append({"steal": (low, high), "runs": len(shares), "median": statistics.median(shares),
                          "lowest": min(shares), "at_target": sum(s >= TARGET for s in shares)})
    return bands


def _range(pair, digits: int = 3) -> str:
    return "-" if pair is None else f"{pair[0]:.{digits}f}-{pair[1]:.{digits}f}"


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def summarize(directories: list[Path], by_steal: bool = False, exclude: tuple[str, ...] = ()) -> str:
    lines, every_run = [], []
    for directory in directories:
        files = sorted(directory.glob("e2e_*.json"))
        if not files:
            raise FileNotFoundError(f"no e2e_*.json in {directory}")
        runs = [run for run in map(run_line, files) if not any(text in run["name"] for text in exclude)]
        every_run += runs
        lines.append(f"{directory}:")
        for run in runs:
            threads = " ".join(f"{name} {us}" for name, us in sorted((run.get("thread_cpu_us_per_image") or {}).items()))
            steal = "" if run["steal"] is None else f" steal {run['steal']:.2%}"
            slow = f" slow {run['slow_cpus']}" if run.get("slow_cpus") else ""
            error = f" ERROR {str(run['error'])[:200]}" if run["error"] else ""
            lines.append(f"  {run['name']}: alone {_number(run['alone'], ',.0f')} steady {_number(run['steady'], ',.0f')} "
                         f"share {_number(run['share'], '.3f')} (first batch to end "
                         f"{_number(run['first_batch_to_end'], '.3f')}) busy {_number(run['busy'], '.3f')}{steal}"
                         f"{' | ' + threads if threads else ''}{slow}{error}")
        for variant, v in variant_lines(runs).items():
            lines.append(f"  = {variant}: {v['runs']} run{'s' if v['runs'] != 1 else ''}, share {_range(v['share'])} median "
                         f"{_number(v['median'], '.4f')}, busy {_range(v['busy'])}, {v['at_target']} at {TARGET:.2f} or more")
    if by_steal:
        lines.append(f"by the host's CPU steal time ({len(directories)} folder{'s' if len(directories) != 1 else ''}):")
        for band in steal_bands(every_run):
            low, high = band["steal"]
            lines.append(f"  steal {low:.1%} to {high:.1%}: {band['runs']} run{'s' if band['runs'] != 1 else ''}, share "
                         f"median {band['median']:.4f}, lowest {band['lowest']:.3f}, {band['at_target']} at "
                         f"{TARGET:.2f} or more")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directories", nargs="+", type=Path)
    parser.add_argument("--by-steal", action="store_true", help="also every run in bands of the host's steal time")
    parser.add_argument("--exclude", action="append", default=[], metavar="TEXT",
                        help="leave out runs whose name holds TEXT (repeatable)")
    args = parser.parse_args(argv)
    try:
        print(summarize(args.directories, args.by_steal, tuple(args.exclude)))
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as exc:
        print(f"e2e_summary: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
