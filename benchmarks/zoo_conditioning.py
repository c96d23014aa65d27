"""How much the zoo models amplify small errors, and what FP16 rounding does to them, on the CPU.

    python benchmarks/zoo_conditioning.py OUTDIR [--gpu benchmarks/results/gpu/fp16_numerics_h100_2026-11-21.json]

For each zoo model at the size tests/gpu/test_gpu_backend.py uses, as the zoo builds it, and for
comparison with the BNs' beta centred on 0 (zoo.ACTIVE_SHIFT = 0: half of every ReLU's units off)
and, for the ResNets, with gamma ~ 1 at the end of every residual branch (zoo.RESIDUAL_GAMMA = 1.0):

- `amplification`: the logits' relative change over a 1e-3 relative change of the input (the
  measure of tests/test_zoo.py::test_models_are_well_conditioned);
- `fp16_output_error`: engine.precision's estimate of an FP16 plan's output error (rounding
  carried layer to layer), on the GPU test's input (batch 8, seed 1);
- `worst_fp16_layer`: the layer with the largest FP16 error of its own (engine.precision's check).

With --gpu, the FP16 errors an H100 measured for the same models and inputs
(benchmarks/fp16_numerics.py) are put beside the estimates. Writes OUTDIR/zoo_conditioning.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from engine import zoo  # noqa: E402
from engine.builder import BuildConfig  # noqa: E402
from engine.precision import fp16_layer_errors, fp16_output_error, relative_error  # noqa: E402
from engine.probe import synthetic_feeds  # noqa: E402

SIZES = {"resnet18": 64, "resnet50": 64, "resnet152": 64, "googlenet": 64, "inception_v3": 139,
         "vgg19": 224, "alexnet": 224}


def amplification(context, size: int) -> float:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, size, size)).astype(np.float32)
    nudged = x * (1 + 1e-3 * rng.standard_normal(x.shape).astype(np.float32))
    y, z = (context.run({"input": a})["logits"] for a in (x, nudged))
    return relative_error(z, y) / 1e-3


def study(name: str, residual_gamma: float, active_shift: float) -> dict:
    kept = zoo.RESIDUAL_GAMMA, zoo.ACTIVE_SHIFT
    zoo.RESIDUAL_GAMMA, zoo.ACTIVE_SHIFT = residual_gamma, active_shift
    try:
        graph = zoo.get(name, image_size=SIZES[name])
    finally:
        zoo.RESIDUAL_GAMMA, zoo.ACTIVE_SHIFT = kept
    size = SIZES[name]
    plan = engine.build(graph, BuildConfig(max_batch=8))
    x = np.random.default_rng(1).standard_normal((8, 3, size, size)).astype(np.float32)
    layers = fp16_layer_errors(plan, synthetic_feeds(plan.inputs, 1))
    worst = max(layers, key=layers.get)
    row = {"model": name, "image_size": size, "residual_gamma": residual_gamma, "active_shift": active_shift,
           "amplification": amplification(engine.Engine(plan).create_context(), size),
           "fp16_output_error": fp16_output_error(plan, {"input": x}),
           "worst_fp16_layer": {"name": worst, "error": layers[worst]}}
    print(f"{name} (residual gamma {residual_gamma}, active shift {active_shift}): amplification x{row['amplification']:.1f}, FP16 output "
          f"error {row['fp16_output_error']:.2e}, worst layer {worst} {layers[worst]:.1e}", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--gpu", type=Path, help="fp16_numerics.json from a GPU run, to compare with")
    parser.add_argument("--models", default=",".join(SIZES))
    args = parser.parse_args()
    gpu = {}
    if args.gpu:
        gpu = {m["model"]: m for m in json.loads(args.gpu.read_text())["models"] if "fp16_vs_numpy" in m}
    rows = []
    for name in args.models.split(","):
        variants = [(zoo.RESIDUAL_GAMMA, zoo.ACTIVE_SHIFT)]
        if name not in ("vgg19", "alexnet"):  # no BatchNorm
            variants.append((zoo.RESIDUAL_GAMMA, 0.0))
        if name.startswith("resnet"):
            variants.append((1.0, 0.0))
        for gamma, shift in variants:
            row = study(name, gamma, shift)
            if name in gpu and (gamma, shift) == (zoo.RESIDUAL_GAMMA, zoo.ACTIVE_SHIFT):
                measured = gpu[name]["fp16_vs_numpy"]["rel_l2"]
                row["gpu_fp16_output_error"] = measured
                row["estimate_over_gpu"] = row["fp16_output_error"] / measured
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "zoo_conditioning",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": {"kind": "cpu", "machine": platform.machine(), "python": platform.python_version(),
                         "numpy": np.__version__},
              "gpu_figures_from": str(args.gpu) if args.gpu else None,
              "command": "python " + " ".join(sys.argv), "models": rows}
    (args.out / "zoo_conditioning.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
