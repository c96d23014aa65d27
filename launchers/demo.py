"""`batchscore demo`: the main job, end to end, on whatever this machine has.

Generates a few hundred photo-like JPEGs as a Parquet dataset (a few corrupt on purpose), builds a
zoo ResNet-18 plan (seeded random weights: the classes mean nothing), scores the dataset with the
local launcher, and prints a short summary: the numbers, a few predictions, where everything is.
"""

from __future__ import annotations

import time
from pathlib import Path

DEMO_ROWS = 256


def run_demo(workdir: Path, rows: int = DEMO_ROWS) -> int:
    import pyarrow.parquet as pq

    import engine
    from engine import zoo
    from kernels.cuda import gpu_unavailable
    from launchers.local import run_local
    from scoring.job import parse_job
    from scoring.make_data import make_dataset

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    on_gpu = gpu_unavailable() is None
    device = "cuda" if on_gpu else "cpu"
    print(f"batchscore demo in {workdir} ({'GPU' if on_gpu else 'CPU, numpy backend'})\n")

    started = time.perf_counter()
    made = make_dataset(workdir / "images", rows=rows, row_groups=8, corrupt=2, seed=0, overwrite=True)
    print(f"  1. dataset   {rows} generated JPEGs in Parquet ({made.summary()})")

    build_started = time.perf_counter()
    config = engine.BuildConfig(max_batch=16, device=device, precision="fp16" if on_gpu else "fp32")
    plan = engine.build(zoo.get("resnet18"), config)
    plan_path = plan.save(workdir / "resnet18.plan")
    print(f"  2. plan      zoo ResNet-18, {len(plan.layers)} layers after optimization, "
          f"built in {time.perf_counter() - build_started:.1f} s -> {plan_path.name}")

    job = parse_job({
        "model": {"plan": str(plan_path)},
        "data": {"source": str(workdir / "images"), "shard_rows": rows // 8},
        "output": {"dir": str(workdir / "predictions"), "top_k": 5},
        "run": {"batch": 16, "workers": 2 if not on_gpu else "auto", "device": device, "decode": "cpu",
                "decode_threads": 1},
    }, base_dir=workdir)
    print("  3. scoring   (progress below)")
    report = run_local(job, quiet=False)
    summary = report.data["summary"] if report is not None else {}

    print(f"\nDone in {time.perf_counter() - started:.0f} s.")
    if summary:
        print(f"  images {summary.get('images')}  errors {summary.get('errors')}  "
              f"{summary.get('images_per_s', 0):.1f} images/s over {summary.get('workers', '?')} worker(s)")
    parts = sorted((workdir / "predictions" / "parts").glob("*.parquet"))
    if parts:
        table = pq.read_table(parts[0]).slice(0, 3).to_pylist()
        print("  first predictions (id: top-5 class indices):")
        for row in table:
            shown = row["top_k_indices"] if row.get("error") is None else f"error: {row['error']}"
            print(f"    {row['id']}: {shown}")
    print(f"\n  predictions  {workdir / 'predictions' / 'parts'}/*.parquet (one file per shard)")
    print(f"  report       {workdir / 'predictions' / 'report.md'} (+ report.json, throughput.png)")
    print("\nYour own data: `batchscore make-data` or any Parquet of images, a job file like "
          "jobs/example.toml, then `batchscore run job.toml`.")
    return 0
