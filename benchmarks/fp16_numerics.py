"""Where FP16 loses accuracy, layer by layer, for the zoo models (one GPU call).

    python benchmarks/fp16_numerics.py OUTDIR [--models resnet50,googlenet] [--batch 8] [--top1-inputs 1024]

For each model it builds an FP32 (no TF32) and an FP16 GPU plan of the same graph and writes
OUTDIR/fp16_numerics.json with, per model:

- `fp32_vs_numpy`, `fp16_vs_numpy`: relative L2 error of the logits against the numpy backend, and
  the fraction of rows whose top-1 class agrees;
- `fp16_vs_fp32_top1`: over --top1-inputs more random images (seed 2), the fraction whose top-1
  class is the same in the FP16 plan as in the FP32 plan (which matches the numpy backend within
  1e-4), and the median and largest relative L2 error of a batch's logits;
- `layers`: per layer, the *local* FP16 error (the layer fed the FP32 plan's inputs, rounded to
  FP16, against the FP32 plan's output) and the *carried* error (the FP16 plan run end to end,
  against the FP32 plan at that layer), so one sees whether error is made in a few layers or
  amplified through depth.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from engine import zoo  # noqa: E402
from engine.builder import BuildConfig  # noqa: E402
from engine.precision import relative_error as _rel  # noqa: E402
from fp16_top1_gpu import agreement  # noqa: E402  (this folder is on sys.path)

SIZES = {"resnet18": 64, "resnet50": 64, "googlenet": 64, "vgg19": 224, "alexnet": 224, "inception_v3": 139,
         "resnet152": 64}


def _record(context, bucket, x) -> dict:
    """Run eagerly layer by layer; every layer output as float32 on the host."""
    import cupy as cp

    values = {}
    outputs = {entry["name"]: entry["outputs"] for entry in context.engine.layers}
    with context.stream:
        context.stage_inputs(bucket, {"input": x})
        for name, runner in bucket.runners:
            runner()
            for out in outputs.get(name, []):
                if out and out in bucket.bound:
                    values[out] = cp.asnumpy(bucket.bound[out].astype(cp.float32))
    context.stream.synchronize()
    return values


def _local_errors(context16, bucket16, reference: dict) -> dict:
    """Each FP16 layer fed the FP32 reference inputs: its own error, nothing carried in."""
    import cupy as cp

    entries = {entry["name"]: entry for entry in context16.engine.layers}
    errors = {}
    with context16.stream:
        for name, runner in bucket16.runners:
            entry = entries.get(name)
            if entry is None:
                continue
            for value in entry["inputs"]:
                if value in reference and value in bucket16.bound:
                    bucket16.bound[value][...] = cp.asarray(reference[value]).astype(bucket16.bound[value].dtype)
            runner()
            context16.stream.synchronize()
            outs = [o for o in entry["outputs"] if o and o in reference and o in bucket16.bound]
            if outs:
                got = np.concatenate([cp.asnumpy(bucket16.bound[o].astype(cp.float32)).ravel() for o in outs])
                want = np.concatenate([reference[o].ravel() for o in outs])
                errors[name] = _rel(got, want)
    return errors


def top1_agreement(engines: dict, size: int, batch: int, inputs: int) -> dict:
    """FP16 against the FP32 plan on `inputs` random images, through CUDA graphs: fp16_top1_gpu's
    tally (same seed, same images), with its Wilson interval."""
    contexts = {p: e.create_context() for p, e in engines.items()}

    def logits(precision):
        return lambda x: contexts[precision].run({"input": x})["logits"]

    result = agreement(logits("fp32"), {"fp16": logits("fp16")}, inputs, batch, size)
    return {"inputs": result["images"], **result["candidates"]["fp16"]}


def study(name: str, batch: int, top1_inputs: int = 0) -> dict:
    graph = zoo.get(name, image_size=SIZES[name])
    size = SIZES[name]
    x = np.random.default_rng(1).standard_normal((batch, 3, size, size)).astype(np.float32)
    cpu = engine.Engine(engine.build(graph, BuildConfig(max_batch=batch))).create_context().run({"input": x})["logits"]
    plans = {p: engine.build(graph, BuildConfig(max_batch=batch, device="cuda", precision=p, timing_cache=None))
             for p in ("fp32", "fp16")}
    engines = {p: engine.engine_for(plan) for p, plan in plans.items()}
    contexts = {p: e.create_context(use_graphs=False) for p, e in engines.items()}
    buckets = {p: c.bucket(batch) for p, c in contexts.items()}
    ref = _record(contexts["fp32"], buckets["fp32"], x)
    carried16 = _record(contexts["fp16"], buckets["fp16"], x)
    local = _local_errors(contexts["fp16"], buckets["fp16"], ref)
    row = {"model": name, "image_size": size, "batch": batch}
    for p, values in (("fp32", ref), ("fp16", carried16)):
        logits = values["logits"]
        row[f"{p}_vs_numpy"] = {"rel_l2": _rel(logits, cpu), "top1_agree": float((logits.argmax(1) == cpu.argmax(1)).mean())}
    layers = []
    for entry in engines["fp16"].layers:
        outs = [o for o in entry["outputs"] if o in ref and o in carried16]
        carried = _rel(np.concatenate([carried16[o].ravel() for o in outs]),
                       np.concatenate([ref[o].ravel() for o in outs])) if outs else None
        scale = float(np.abs(np.concatenate([ref[o].ravel() for o in outs])).max()) if outs else None
        layers.append({"name": entry["name"], "kind": entry["kind"], "local": local.get(entry["name"]),
                       "carried": carried, "max_abs": scale})
    row["layers"] = layers
    if top1_inputs:
        row["fp16_vs_fp32_top1"] = top1_agreement(engines, size, batch, top1_inputs)
        print(f"{name}: FP16 vs FP32 top-1 on {row['fp16_vs_fp32_top1']['inputs']} random images: "
              f"{row['fp16_vs_fp32_top1']['top1_agree']:.4f}", flush=True)
    worst = sorted((l for l in layers if l["local"] is not None), key=lambda l: -l["local"])[:8]
    print(f"{name}: fp32 {row['fp32_vs_numpy']['rel_l2']:.2e}  fp16 {row['fp16_vs_numpy']['rel_l2']:.2e} "
          f"(top1 {row['fp16_vs_numpy']['top1_agree']:.2f}); worst local: "
          + ", ".join(f"{l['name']}({l['kind']}) {l['local']:.1e}" for l in worst), flush=True)
    trace = [l for l in layers if l["carried"] is not None]
    step = max(1, len(trace) // 12)
    print("  carried: " + " ".join(f"{l['carried']:.1e}" for l in trace[::step]), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--models", default=",".join(SIZES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--top1-inputs", type=int, default=1024)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from kernels.cuda.device import describe_gpu

    rows = []
    for name in args.models.split(","):
        try:
            rows.append(study(name, args.batch, args.top1_inputs))
        except Exception as exc:  # one model's failure should not cost the others' figures
            print(f"{name}: FAILED {type(exc).__name__}: {exc}", flush=True)
            rows.append({"model": name, "error": f"{type(exc).__name__}: {exc}"})
        (out / "fp16_numerics.json").write_text(json.dumps(
            {"command": "python " + " ".join(sys.argv), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "device": describe_gpu(), "models": rows}, indent=1))


if __name__ == "__main__":
    main()
