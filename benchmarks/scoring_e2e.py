"""End-to-end scoring against the engine alone, for the same plan and batch, in one call.

    python benchmarks/scoring_e2e.py OUTDIR [--rows 2000] [--model resnet18] [--batch 32] [--workers 2]

Makes a JPEG Parquet dataset (`make_dataset`), builds a zoo plan for this machine (the GPU when
there is one, else the numpy backend), times the engine alone on random input at the job's batch
(`batchscore bench`'s code), scores the dataset with the local launcher, and writes
OUTDIR/scoring_e2e.json: both throughputs and their ratio (the single-node target is >= 90% on a
GPU), the report's stage times, and the CPU decode rate per decode thread.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from engine import zoo  # noqa: E402
from kernels.cuda import gpu_unavailable  # noqa: E402
from launchers.bench import bench_cpu, bench_gpu, _sampler_factory  # noqa: E402
from launchers.local import run_local  # noqa: E402
from scoring.job import parse_job  # noqa: E402
from scoring.make_data import make_dataset  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--decode-threads", default="auto")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    on_gpu = gpu_unavailable() is None
    device = "cuda" if on_gpu else "cpu"

    data_dir = args.out / "images"
    if not data_dir.exists():
        make_dataset(data_dir, rows=args.rows, row_groups=max(1, args.rows // 256), seed=0)
    config = engine.BuildConfig(max_batch=args.batch, device=device, precision="fp16" if on_gpu else "fp32")
    plan = engine.build(zoo.get(args.model), config)
    plan_path = plan.save(args.out / f"{args.model}.{device}.plan")

    eng = engine.engine_for(plan)
    if on_gpu:
        alone = bench_gpu(eng, [args.batch], 50, 5, _sampler_factory())["rows"][0]
    else:
        alone = bench_cpu(eng, [args.batch], 5, 1)["rows"][0]

    workers = args.workers if args.workers == "auto" else int(args.workers)
    threads = args.decode_threads if args.decode_threads == "auto" else int(args.decode_threads)
    job = parse_job({
        "model": {"plan": str(plan_path)},
        "data": {"source": str(data_dir), "shard_rows": 256},
        "output": {"dir": str(args.out / f"predictions-{int(time.time())}"), "top_k": 5},
        "run": {"batch": args.batch, "workers": workers, "device": device, "decode": "cpu",
                "decode_threads": threads},
    }, base_dir=args.out)
    report = run_local(job, quiet=True)
    summary, workers_data = report.data["summary"], report.data["workers"]
    stages = report.data.get("stages", {})
    decode_s = stages.get("decode", {}).get("seconds", 0.0)
    decode_threads = report.data.get("job", {}).get("decode_threads") or 1
    record = {
        "benchmark": "scoring_e2e",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": plan.header.get("device"), "host": platform.node(), "cores": os.cpu_count(),
        "model": args.model, "batch": args.batch, "rows": summary["images"], "errors": summary["errors"],
        "engine_only_images_per_s": alone["images_per_s"],
        "end_to_end_images_per_s": summary["images_per_s"],
        "ratio_end_to_end_over_engine": summary["images_per_s"] / alone["images_per_s"],
        "workers": len(workers_data), "decode_threads_per_worker": decode_threads,
        # decode seconds are summed over workers; each worker decodes on `decode_threads` threads
        "cpu_decode_images_per_s_per_thread": (summary["images"] / (decode_s * decode_threads)) if decode_s else None,
        "stages": stages, "busy_fraction": summary.get("busy_fraction"),
        "command": "python " + " ".join(sys.argv),
    }
    (args.out / "scoring_e2e.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"{args.model} batch {args.batch} on {device}: engine alone {alone['images_per_s']:.1f} images/s, "
          f"end to end {summary['images_per_s']:.1f} images/s ({100 * record['ratio_end_to_end_over_engine']:.0f}%); "
          f"CPU decode {record['cpu_decode_images_per_s_per_thread'] or 0:.0f} images/s per thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
