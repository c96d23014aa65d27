"""FP16 against FP32 top-1 agreement of the zoo models, emulated on the CPU (no GPU needed).

    python benchmarks/fp16_top1_emulated.py OUTDIR [--models googlenet,inception_v3] [--images 4096] [--batch 64]
        [--image-size N] [--fp16-layer-bound 1e-2,1e-3,5e-4]

engine.precision.fp16_emulated_outputs runs each model's plan on the numpy backend exactly and as
an FP16 GPU plan rounds it (its error came within 3% of the H100's for every zoo model:
benchmarks/zoo_conditioning.py), on --images standard-normal images (seed 2, batches of --batch),
at the sizes of benchmarks/fp16_numerics.py (or --image-size). Per model: the fraction of images
whose top-1 class is the same both ways, the median and largest relative L2 error of a batch's
logits, and the median gap between an image's two largest exact logits over its logit vector's norm
(when that gap is as small as the FP16 error, the top-1 class flips). More images
than a GPU call affords tell 98.7% from 99.0% (binomial noise at 1,024 images is about 0.3%).

--fp16-layer-bound: for each bound (BuildConfig.fp16_layer_bound; default the build's), the layers
an FP16 build with that bound runs in FP32, chosen as engine.precision.choose_precisions chooses
them (each layer's own FP16 error on the build's synthetic feeds, fp32_fallbacks, then every writer
of an elided concat whose buffer holds an FP32 layer's output), run in FP32 in the emulation. Every
bound sees the same images. A row per model and bound adds the bound, the FP32 layers with their
errors, and the share of the model's conv/gemm multiply-adds they carry. (The plan here is a CPU
build; for googlenet, inception_v3 and resnet18 its layers are the GPU pipeline's, while for the
ResNet-50/152 the CPU pipeline merges a projection the GPU keeps apart.)
Writes OUTDIR/fp16_top1_emulated.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine  # noqa: E402
from engine import zoo  # noqa: E402
from engine.builder import BuildConfig  # noqa: E402
from engine.plan import Plan  # noqa: E402
from engine.precision import (fp16_emulated_outputs, fp16_layer_errors, fp32_fallbacks, fp32_layer_set,  # noqa: E402
                              relative_error)
from engine.probe import synthetic_feeds  # noqa: E402
from fp16_numerics import SIZES  # noqa: E402

MAC_KINDS = ("Conv", "FusedConv", "Gemm")


def layer_macs(plan: Plan) -> dict[str, int]:
    """Multiply-adds per image of each conv and gemm layer, from the plan's recorded value shapes and
    its weights: a conv's outputs (all splits of a fused one) times its weight's Cin/group x kh x kw,
    a gemm's outputs times its reduced dimension."""
    values, macs = plan.header["values"], {}
    for layer in plan.layers:
        if layer["kind"] not in MAC_KINDS:
            continue
        weight = plan.tensors[layer["inputs"][1]]
        if layer["kind"] == "Gemm":
            reduced = weight.shape[1] if layer["attrs"].get("transB") else weight.shape[0]
        else:
            reduced = math.prod(weight.shape[1:])
        outputs = sum(math.prod(values[name]["shape"][1:]) for name in layer["outputs"] if name)
        macs[layer["name"]] = int(outputs * reduced)
    return macs


def parse_bounds(text: str) -> list[float]:
    bounds = [float(part) for part in text.split(",") if part.strip()]
    if not bounds or not all(math.isfinite(b) and b > 0 for b in bounds):
        raise ValueError(f"bounds must be positive numbers, got {text!r}")
    return bounds


def study(name: str, images: int, batch: int, bounds: list[float], size: int | None = None) -> list[dict]:
    size = size or SIZES[name]
    plan = engine.build(zoo.get(name, image_size=size), BuildConfig(max_batch=batch))
    errors = fp16_layer_errors(plan, synthetic_feeds(plan.inputs, 1))  # as choose_precisions computes them
    macs = layer_macs(plan)
    total_macs = sum(macs.values())
    chosen = {bound: fp32_layer_set(plan.layers, errors, bound) for bound in bounds}
    runs = {frozenset(c) for c in chosen.values()}  # bounds that widen the same layers share a run
    tally = {run: {"same": 0, "errors": [], "seconds": 0.0} for run in runs}
    rng = np.random.default_rng(2)
    gaps = []
    batches = max(1, images // batch)
    for _ in range(batches):
        x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        for run in runs:
            started = time.perf_counter()
            exact, fp16 = fp16_emulated_outputs(plan, {"input": x}, run)
            t = tally[run]
            t["same"] += int((exact["logits"].argmax(1) == fp16["logits"].argmax(1)).sum())
            t["errors"].append(relative_error(fp16["logits"], exact["logits"]))
            t["seconds"] += time.perf_counter() - started
        top_two = np.sort(exact["logits"], axis=1)[:, -2:]
        gaps.extend((top_two[:, 1] - top_two[:, 0]) / np.linalg.norm(exact["logits"], axis=1))
    count = batches * batch
    rows = []
    for bound in bounds:
        fallback, t = chosen[bound], tally[frozenset(chosen[bound])]
        fp32_macs = sum(macs.get(layer, 0) for layer in fallback)
        row = {"model": name, "image_size": size, "images": count, "top1_agree": t["same"] / count,
               "rel_l2_median": float(np.median(t["errors"])), "rel_l2_max": float(max(t["errors"])),
               "top2_gap_over_norm_median": float(np.median(gaps)),
               "seconds": round(t["seconds"], 1),
               "fp16_layer_bound": bound,
               "fp32_layer_count": len(fallback),
               "fp32_layers_above_bound": len(fp32_fallbacks(errors, bound)),
               "fp32_layers": {layer: float(error) for layer, error in fallback.items()},
               "fp32_mac_fraction": fp32_macs / total_macs if total_macs else 0.0,
               "macs_per_image": total_macs,
               "worst_fp16_layer_error": float(max(errors.values(), default=0.0))}
        rows.append(row)
        print(f"{name} bound {bound:.0e}: {len(fallback)} layers in FP32 ({row['fp32_layers_above_bound']} above the "
              f"bound), {row['fp32_mac_fraction']:.1%} of the MACs; top-1 {row['top1_agree']:.4f} on {count} images, "
              f"median error {row['rel_l2_median']:.2e}, median top-2 gap {row['top2_gap_over_norm_median']:.2e} of "
              f"the logits' norm", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", default="googlenet,inception_v3")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=None,
                        help="square input size for every model (default: benchmarks/fp16_numerics.py's per model)")
    parser.add_argument("--fp16-layer-bound", default=repr(BuildConfig.fp16_layer_bound), metavar="B1,B2,...",
                        help="comma-separated FP16 layer bounds, one row per model and bound (default: the "
                             "build's, %(default)s)")
    args = parser.parse_args()
    if args.images < 1 or args.batch < 1 or (args.image_size is not None and args.image_size < 1):
        parser.error("--images, --batch and --image-size must be positive")
    try:
        bounds = parse_bounds(args.fp16_layer_bound)
    except ValueError as exc:
        parser.error(f"--fp16-layer-bound: {exc}")
    rows = [row for name in args.models.split(",")
            for row in study(name, args.images, args.batch, bounds, args.image_size)]
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "fp16_top1_emulated",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": {"kind": "cpu", "machine": platform.machine(), "python": platform.python_version(),
                         "numpy": np.__version__},
              "command": "python " + " ".join(sys.argv), "fp16_layer_bounds": bounds, "models": rows}
    (args.out / "fp16_top1_emulated.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
