"""ResNet-50 FP16 at batch 1, from plans built for max batch 256 and for max batch 1: bench's latency
with and without the power sampler, graph replays back to back, the per-layer sum, the slowest layers,
and how many of the batch-1 bucket's convolutions found the tuned cuDNN plan by name.

    python3 benchmarks/device/batch1_probe.py OUT.json     (on the GPU machine)

Written when batch 1 took 0.986 ms after a cold tuning (0.434 ms the day before); its output on an
H100 on 2026-11-22, after cuDNN tactics were looked up by name, is
benchmarks/results/gpu/batch1_probe_h100_2026-11-22_s14.json.
"""
import json
import sys
import time

if len(sys.argv) != 2:
    sys.exit(__doc__)
import cupy as cp  # noqa: E402 (after the usage check: a bad call needs no GPU to be told)
import numpy as np

import engine
from engine import zoo
from engine.builder import BuildConfig
from engine.gpu_runtime import time_layers
from launchers.bench import _NoSampler, _sampler_factory, bench_gpu

out = {}
for max_batch in (256, 1):
    started = time.perf_counter()
    plan = engine.build(zoo.get("resnet50"), BuildConfig(device="cuda", precision="fp16", max_batch=max_batch))
    eng = engine.engine_for(plan)
    row = {"build_s": round(time.perf_counter() - started, 1)}
    for label, factory in (("sampler", _sampler_factory()), ("no_sampler", _NoSampler)):
        measured = bench_gpu(eng, [1], 1000, 20, factory)["rows"][0]
        row[label] = {"ips": round(measured["images_per_s"]), "lat_med": round(measured["latency_ms"]["median"], 4),
                      "graph": measured["cuda_graph"]}
    context = eng.create_context()
    bucket = context.bucket(1)
    recorded = {layer["name"]: str(layer.get("tactic")) for layer in plan.layers
                if str(layer.get("tactic")).startswith("cudnn:")}
    found = [name for name, runner in bucket.runners if name in recorded and hasattr(runner, "count")
             and runner.tactic.split(":", 2)[-1] == recorded[name].split(":", 2)[-1]]
    row["b1_found_by_name"] = f"{len(found)}/{len(recorded)}"
    row["sample_tactics"] = list(recorded.items())[:3]
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    with context.stream:
        context.stage_inputs(bucket, feeds)
        for _ in range(3):
            context.execute(bucket)
        context.stream.synchronize()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record(context.stream)
        for _ in range(200):
            context.execute(bucket)
        end.record(context.stream)
        end.synchronize()
    row["back_to_back_ms"] = round(cp.cuda.get_elapsed_time(start, end) / 200, 4)
    profile = time_layers(context, 1)
    row["layer_sum_ms"] = round(sum(profile.values()), 4)
    row["top_layers"] = sorted(((round(ms, 4), name) for name, ms in profile.items()), reverse=True)[:8]
    out[f"max_batch_{max_batch}"] = row
    print(max_batch, json.dumps(row), flush=True)
with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=1)
