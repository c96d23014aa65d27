"""The numpy backend against onnxruntime's CPU provider, same model, same weights, same process.

    python benchmarks/cpu_vs_onnxruntime.py                       # light_resnet50, batch 8
    python benchmarks/cpu_vs_onnxruntime.py --batch 1 --runs 5

The model is the onnx package's light_resnet50 (Caffe2's ResNet-50 v1, 415 nodes) with seeded
random weights and its batch set to --batch. The engine runs the optimized plan and, for comparison,
the unfused one (one layer per node: --no-optimize). Both sides use every core of the machine (numpy through
its BLAS threads, onnxruntime through its intra-op pool). Writes a JSON record under
benchmarks/results/ with the machine, versions, date, both timings and their ratio.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from engine.onnx_tools import expose_logits, seeded_weights, with_batch  # noqa: E402

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def timed(fn, runs: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}


def versions() -> dict:
    import onnxruntime

    return {"batchscore": engine.__version__, "numpy": np.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="light_resnet50", help="a light_* model of the onnx package")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/cpu_<model>_b<batch>.json)")
    args = parser.parse_args()

    import onnxruntime as ort

    model = expose_logits(with_batch(seeded_weights(onnx.load(LIGHT_DIR / f"{args.model}.onnx"), seed=0), args.batch))
    input_name = next(i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
    x = np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224)).astype(np.float32)

    build_start = time.perf_counter()
    plan = engine.build(model)
    build_s = time.perf_counter() - build_start
    context = engine.Engine(plan).create_context()
    unfused = engine.Engine(engine.build(model, engine.BuildConfig(optimize=False))).create_context()

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    ours = context.run({input_name: x})
    theirs = session.run(None, {input_name: x})
    logits = plan.outputs[-1]["name"]  # the softmax input (see expose_logits)
    max_abs_diff = float(np.max(np.abs(ours[logits] - theirs[-1])))
    relative_l2 = float(np.linalg.norm(ours[logits] - theirs[-1]) / np.linalg.norm(theirs[-1]))

    engine_times = timed(lambda: context.run({input_name: x}), args.runs)
    ort_times = timed(lambda: session.run(None, {input_name: x}), args.runs)
    unfused_times = timed(lambda: unfused.run({input_name: x}), args.runs)
    engine_ms = statistics.median(engine_times) * 1e3
    ort_ms = statistics.median(ort_times) * 1e3
    unfused_ms = statistics.median(unfused_times) * 1e3

    record = {
        "benchmark": "cpu_vs_onnxruntime",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": machine(),
        "versions": versions(),
        "model": args.model,
        "batch": args.batch,
        "layers": len(plan.layers),
        "unfused_layers": len(unfused.engine.layers),
        "build_s": round(build_s, 2),
        "logits_max_abs_diff_vs_onnxruntime": max_abs_diff,
        "logits_relative_l2_vs_onnxruntime": relative_l2,
        "batchscore_ms_per_batch": round(engine_ms, 1),
        "onnxruntime_ms_per_batch": round(ort_ms, 1),
        "batchscore_images_per_s": round(args.batch / engine_ms * 1e3, 2),
        "onnxruntime_images_per_s": round(args.batch / ort_ms * 1e3, 2),
        "ratio_batchscore_over_onnxruntime_time": round(engine_ms / ort_ms, 3),
        "batchscore_unfused_ms_per_batch": round(unfused_ms, 1),
        "speedup_optimized_over_unfused": round(unfused_ms / engine_ms, 3),
        "runs": args.runs,
        "command": "python " + " ".join(sys.argv),
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"cpu_{args.model}_b{args.batch}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{args.model} batch {args.batch}: batchscore {engine_ms:.0f} ms, onnxruntime {ort_ms:.0f} ms, "
          f"ratio {engine_ms / ort_ms:.2f}x (target <= 2.5x); unfused build {unfused_ms:.0f} ms "
          f"({unfused_ms / engine_ms:.2f}x slower); logits rel. L2 vs onnxruntime {relative_l2:.1e}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
