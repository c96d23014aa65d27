"""FP16 against FP32 top-1 agreement of the zoo models, emulated on the CPU (no GPU needed).

    python benchmarks/fp16_top1_emulated.py OUTDIR [--models googlenet,inception_v3] [--images 4096] [--batch 64]

engine.precision.fp16_emulated_outputs runs each model's plan on the numpy backend exactly and as
an FP16 GPU plan rounds it (its error came within 3% of the H100's for every zoo model:
benchmarks/zoo_conditioning.py), on --images standard-normal images (seed 2, batches of --batch),
at the sizes of benchmarks/fp16_numerics.py. Per model: the fraction of images whose top-1 class is
the same both ways, the median and largest relative L2 error of a batch's logits, and the median gap
between an image's two largest exact logits over its logit vector's norm (when that gap is as small
as the FP16 error, the top-1 class flips). More images
than a GPU call affords tell 98.7% from 99.0% (binomial noise at 1,024 images is about 0.3%).
Writes OUTDIR/fp16_top1_emulated.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
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
from engine.precision import fp16_emulated_outputs, relative_error  # noqa: E402
from fp16_numerics import SIZES  # noqa: E402


def study(name: str, images: int, batch: int) -> dict:
    size = SIZES[name]
    plan = engine.build(zoo.get(name, image_size=size), BuildConfig(max_batch=batch))
    rng = np.random.default_rng(2)
    same, errors, gaps, started = 0, [], [], time.perf_counter()
    batches = max(1, images // batch)
    for _ in range(batches):
        x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        exact, fp16 = fp16_emulated_outputs(plan, {"input": x})
        same += int((exact["logits"].argmax(1) == fp16["logits"].argmax(1)).sum())
        errors.append(relative_error(fp16["logits"], exact["logits"]))
        top_two = np.sort(exact["logits"], axis=1)[:, -2:]
        gaps.extend((top_two[:, 1] - top_two[:, 0]) / np.linalg.norm(exact["logits"], axis=1))
    count = batches * batch
    row = {"model": name, "image_size": size, "images": count, "top1_agree": same / count,
           "rel_l2_median": float(np.median(errors)), "rel_l2_max": float(max(errors)),
           "top2_gap_over_norm_median": float(np.median(gaps)),
           "seconds": round(time.perf_counter() - started, 1)}
    print(f"{name}: top-1 {row['top1_agree']:.4f} on {count} images, median error {row['rel_l2_median']:.2e}, "
          f"median top-2 gap {row['top2_gap_over_norm_median']:.2e} of the logits' norm", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", default="googlenet,inception_v3")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    if args.images < 1 or args.batch < 1:
        parser.error("--images and --batch must be positive")
    rows = [study(name, args.images, args.batch) for name in args.models.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "fp16_top1_emulated",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": {"kind": "cpu", "machine": platform.machine(), "python": platform.python_version(),
                         "numpy": np.__version__},
              "command": "python " + " ".join(sys.argv), "models": rows}
    (args.out / "fp16_top1_emulated.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
