"""Is tactic tuning repeatable? Three cold tunings of one FP16 model in one process (no timing cache),
each candidate's tuning time in a debug log, the first convolution's choice, batch-256 throughput, and
every candidate of that first convolution timed again at steady state.

    python3 benchmarks/device/cold_tuning_repeat.py OUTDIR [MODEL]     (on the GPU machine; MODEL: resnet50)

Writes OUTDIR/tunediag_MODEL.json and OUTDIR/tune_debug.log. Written after one cold ResNet-50 FP16
run gave 28.7k images/s with conv1 2.3x slower than usual; its output on an H100 on 2026-11-22 is in
benchmarks/results/gpu/cold_tuning_repeat_h100_2026-11-22_s14_*.
"""
import json
import logging
import sys
import time
from pathlib import Path

if len(sys.argv) not in (2, 3):
    sys.exit(__doc__)
import cupy as cp  # noqa: E402 (after the usage check: a bad call needs no GPU to be told)

import engine
from engine import tune, zoo
from engine.builder import BuildConfig
from launchers.bench import _NoSampler, bench_gpu

out_dir = sys.argv[1]
Path(out_dir).mkdir(parents=True, exist_ok=True)
model = sys.argv[2] if len(sys.argv) > 2 else "resnet50"
handler = logging.FileHandler(f"{out_dir}/tune_debug.log")
logging.getLogger("batchscore.build").addHandler(handler)
logging.getLogger("batchscore.build").setLevel(logging.DEBUG)
rows = []
for build in range(3):
    handler.stream.write(f"==== build {build}\n")
    started = time.perf_counter()
    plan = engine.build(zoo.get(model), BuildConfig(device="cuda", precision="fp16", max_batch=256, timing_cache=None))
    build_s = time.perf_counter() - started
    eng = engine.engine_for(plan)
    measured = bench_gpu(eng, [256], 60, 10, _NoSampler)["rows"][0]
    tactics = {layer["name"]: layer.get("tactic") for layer in plan.layers
               if str(layer.get("tactic")).startswith("cudnn:")}
    context = eng.create_context(use_graphs=False)
    runner = dict(context.bucket(256).runners)[next(iter(tactics))]
    steady = {}
    with context.stream:
        for candidate in runner.candidates():
            runner.select(tune.tactic_index(candidate))
            if tune.tactic_index(runner.tactic) == tune.tactic_index(candidate):
                steady[runner.tactic] = round(tune._time(runner, context.stream), 4)
    rows.append({"build": build, "build_s": round(build_s, 1), "ips": round(measured["images_per_s"]),
                 "tactics": tactics, "first_layer_steady_ms": steady})
    print(build, rows[-1]["build_s"], rows[-1]["ips"], list(tactics.items())[:2], flush=True)
    print("  steady:", sorted((ms, name) for name, ms in steady.items())[:5], flush=True)
    del context, runner, eng, plan
    cp.get_default_memory_pool().free_all_blocks()
with open(f"{out_dir}/tunediag_{model}.json", "w") as f:
    json.dump(rows, f, indent=1)
