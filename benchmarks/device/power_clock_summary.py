"""Summarise power_clock_call.sh's folder: the nvidia-smi samples while the engine ran alone (bench)
and while the scoring run was in its steady state, beside the bench's and scoring_gpu_e2e's own JSON.

    python benchmarks/device/power_clock_summary.py DIR     # DIR: smi.csv, marks.txt, bench.json,
                                                            # scoring_gpu_e2e.json -> DIR/power_clocks.json

Each window is the last unbroken run of samples at >= 50% utilisation between two marks (for
scoring, the e2e script's own short engine-only timing comes earlier, apart from it), less its
first second, over which NVML's averaged power reading still climbs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BUSY_PERCENT = 50  # a sample of the episode: the GPU busy at least half the time
SETTLE_S = 1.0  # NVML's power reading averages about a second: the episode's first second is left out


def read_samples(path: Path) -> list[dict]:
    """nvidia-smi CSV rows (timestamp, W, SM MHz, memory MHz, degrees, util %, throttle reasons)."""
    rows = []
    for line in path.read_text().splitlines():
        p = [x.strip() for x in line.split(",")]
        if len(p) < 7 or not p[1].endswith("W"):
            continue
        rows.append({"t": p[0], "watts": float(p[1].split()[0]), "sm_mhz": int(p[2].split()[0]),
                     "util": int(p[5].split()[0]), "throttle": p[6]})
    return rows


def _seconds(stamp: str) -> float:
    """Seconds of the day of an nvidia-smi / marks timestamp ("2026/11/22 07:58:15.000")."""
    hours, minutes, seconds = stamp.split()[1].split(":")
    return 3600 * int(hours) + 60 * int(minutes) + float(seconds)


def last_episode(samples: list[dict], after: str, before: str) -> list[dict]:
    """The last unbroken run of busy samples between two marks, less its first SETTLE_S seconds."""
    last: list[dict] = []
    current: list[dict] = []
    for s in samples:
        if s["t"] < after:
            continue
        if s["t"] > before:
            break
        if s["util"] >= BUSY_PERCENT:
            current.append(s)
            last = current
        else:
            current = []
    return [s for s in last if _seconds(s["t"]) - _seconds(last[0]["t"]) >= SETTLE_S] if last else []


def window(samples: list[dict]) -> dict:
    if not samples:
        return {"samples": 0}
    watts = sorted(s["watts"] for s in samples)
    clocks = sorted(s["sm_mhz"] for s in samples)
    return {"samples": len(samples), "seconds": round(_seconds(samples[-1]["t"]) - _seconds(samples[0]["t"]), 2),
            "watts": [watts[0], watts[-1]], "watts_median": watts[len(watts) // 2],
            "sm_mhz": [clocks[0], clocks[-1]], "sm_mhz_median": clocks[len(clocks) // 2],
            "throttle_reasons": sorted({s["throttle"] for s in samples})}


def main(argv: list[str]) -> int:
    folder = Path(argv[0])
    samples = read_samples(folder / "smi.csv")
    marks = dict(line.split(" ", 1) for line in (folder / "marks.txt").read_text().splitlines())
    bench_busy = last_episode(samples, marks["bench_start"], marks["bench_end"])
    scoring_busy = last_episode(samples, marks["bench_end"], marks["e2e_end"])
    bench = json.loads((folder / "bench.json").read_text())["rows"][0]
    e2e = json.loads((folder / "scoring_gpu_e2e.json").read_text())
    out = {
        "benchmark": "power_clocks", "date": e2e["date"][:10], "device": e2e["device"]["name"],
        "command": "bash benchmarks/device/power_clock_call.sh (nvidia-smi every 200 ms beside `batchscore bench "
                   "/tmp/r50.plan --batch 256 --iterations 600`, then scoring_gpu_e2e.py --rows 100000 --cpu-rows 0)",
        "engine_only_bench": {"images_per_s": bench["images_per_s"], "watts_energy_counter": bench["watts"],
                              "images_per_s_per_w": bench["images_per_s_per_w"], "nvidia_smi": window(bench_busy)},
        "end_to_end": {"steady_images_per_s": e2e["end_to_end"]["steady_images_per_s"],
                       "busy_fraction": e2e["end_to_end"]["busy_fraction"],
                       "engine_only_images_per_s": e2e["engine_only"]["images_per_s"],
                       "stages_s": {k: v["seconds"] for k, v in e2e["end_to_end"]["stages"].items()},
                       "nvidia_smi": window(scoring_busy)},
        "samples": samples,
    }
    (folder / "power_clocks.json").write_text(json.dumps(out, indent=1) + "\n")
    for part in ("engine_only_bench", "end_to_end"):
        print(part, json.dumps(out[part]["nvidia_smi"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
