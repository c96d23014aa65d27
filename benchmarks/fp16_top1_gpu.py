"""FP16 against FP32 top-1 agreement on the GPU, at each model's own input size, with the PyTorch
peer on the same images in the same call (issue #4's "same top-1 on at least 99% of random inputs").

    python benchmarks/fp16_top1_gpu.py OUTDIR [--models googlenet,inception_v3,resnet50,resnet152]
        [--images 16384] [--batch 64] [--image-size N] [--no-peer]
    python benchmarks/fp16_top1_gpu.py OUTDIR --models light --images 2048     # the nine light_* graphs

Per model it builds an FP32 (no TF32) and an FP16 GPU plan of the zoo graph at the model's own input
size (224, Inception v3 299; --image-size overrides it for every model), and runs --images
standard-normal images (seed 2, batches of --batch) through both. When torch and torchvision import,
the same images go through the peer in FP32 (no TF32) and FP16 (benchmarks/fp16_top1_peer.py's
models, on the zoo's weights). Against our FP32 plan, for each candidate: the share of images with
the same top-1 class and its 95% Wilson interval, and the median relative L2 error of a batch's
logits; beside them, the median gap between the two largest FP32 logits over the logits' norm.
`light` (or light_NAME) stands for the onnx package's light_* graphs with seeded random weights,
as tests/gpu/test_gpu_light_models.py builds them: 224 x 224, a fixed batch of 1, no peer; their
logits are the final Softmax's input. Writes OUTDIR/fp16_top1_gpu.json.

Earlier figures (benchmarks/fp16_numerics.py, fp16_top1_peer.py) ran GoogLeNet at 64 x 64 and
Inception v3 at 139 x 139, to keep the numpy reference cheap; this script needs no numpy run, so it
measures at the sizes the models score at.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import zoo  # noqa: E402
from engine.precision import relative_error  # noqa: E402

LIGHT_SIZE = 224  # the light_* graphs' fixed input
Logits = Callable[[np.ndarray], np.ndarray]


def native_size(name: str) -> int:
    """The input size a zoo model is built for by default (its `image_size` parameter); the light_*
    graphs' fixed 224."""
    if name.startswith("light_"):
        return LIGHT_SIZE
    return int(inspect.signature(getattr(zoo, name)).parameters["image_size"].default)


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (sound near 0 and 1, unlike p +- z*se)."""
    if trials < 1:
        raise ValueError(f"trials must be positive, got {trials}")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def agreement(reference: Logits, candidates: dict[str, Logits], images: int, batch: int, size: int,
              seed: int = 2) -> dict:
    """Run the same standard-normal NCHW images through `reference` and every candidate; per candidate,
    top-1 agreement with the reference (share, Wilson interval) and the median relative L2 error of a
    batch's logits; and the median top-2 gap of the reference's logits over their norm."""
    if images < 1 or batch < 1:
        raise ValueError(f"images and batch must be positive, got {images} and {batch}")
    rng = np.random.default_rng(seed)
    batches = max(1, images // batch)
    same = {name: 0 for name in candidates}
    errors: dict[str, list[float]] = {name: [] for name in candidates}
    gaps: list[np.ndarray] = []
    for _ in range(batches):
        x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        want = np.asarray(reference(x), np.float32)
        top_two = np.sort(want, axis=1)[:, -2:]
        gaps.append((top_two[:, 1] - top_two[:, 0]) / np.linalg.norm(want, axis=1))
        for name, run in candidates.items():
            got = np.asarray(run(x), np.float32)
            if got.shape != want.shape:
                raise ValueError(f"{name} gave logits of shape {got.shape}, the reference {want.shape}")
            same[name] += int((got.argmax(1) == want.argmax(1)).sum())
            errors[name].append(relative_error(got, want))
    count = batches * batch
    result = {"images": count, "top2_gap_over_norm_median": float(np.median(np.concatenate(gaps))),
              "candidates": {}}
    for name in candidates:
        low, high = wilson_interval(same[name], count)
        result["candidates"][name] = {"top1_agree": same[name] / count, "top1_agree_95": [low, high],
                                      "rel_l2_median": float(np.median(errors[name])),
                                      "rel_l2_max": float(max(errors[name]))}
    return result


def light_names(names: list[str]) -> list[str]:
    """`light` expands to every light_* graph; light_NAME stays; zoo names pass through."""
    from tests.light_zoo import MODELS

    out = []
    for name in names:
        if name == "light":
            out.extend(f"light_{m}" for m in MODELS)
        else:
            out.append(name)
    return out


def _model(name: str, size: int):
    """(model, logits output) of a zoo model at `size`, or of a light_* graph with seeded weights."""
    if name.startswith("light_"):
        from engine.onnx_tools import expose_logits, seeded_weights
        from tests.light_zoo import load

        model = expose_logits(seeded_weights(load(name.removeprefix("light_")), seed=0))
        return model, model.graph.output[-1].name
    return zoo.get(name, image_size=size), "logits"


def _ours(model, logits: str, max_batch: int | None) -> dict[str, Logits]:
    """Our FP32 and FP16 GPU plans of `model` (the build copies it), as functions of an NCHW batch;
    max_batch None keeps the model's own (the light_* graphs' fixed 1)."""
    import engine
    from engine.builder import BuildConfig

    runs = {}
    for precision in ("fp32", "fp16"):
        plan = engine.build(model, BuildConfig(device="cuda", precision=precision, max_batch=max_batch))
        context, feed = engine.engine_for(plan).create_context(), plan.inputs[0]["name"]
        runs[precision] = lambda x, c=context, f=feed: c.run({f: x})[logits].reshape(len(x), -1)
    return runs


def _peer(name: str, graph) -> dict[str, Logits] | None:
    """PyTorch FP32 (no TF32) and FP16 on `graph`'s weights, where torch and torchvision import."""
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError:
        return None
    from fp16_top1_peer import torch_model

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    fp32 = torch_model(name, graph)
    fp16 = torch_model(name, graph).half().to(memory_format=torch.channels_last)

    def run32(x):
        with torch.no_grad():
            return fp32(torch.from_numpy(x).cuda()).float().cpu().numpy()

    def run16(x):
        with torch.no_grad():
            return fp16(torch.from_numpy(x).cuda().half().to(memory_format=torch.channels_last)).float().cpu().numpy()

    return {"torch_fp32": run32, "torch_fp16": run16}


def study(name: str, size: int, images: int, batch: int, peer: bool) -> dict:
    light = name.startswith("light_")
    if light:  # a fixed batch of 1 at 224 x 224, and no torch model to compare
        size, batch, peer = LIGHT_SIZE, 1, False
    model, logits = _model(name, size)  # built once: the zoo's calibration runs numpy passes
    ours = _ours(model, logits, None if light else batch)
    candidates = {"batchscore_fp16": ours["fp16"]}
    torch_runs = _peer(name, model) if peer else None
    if torch_runs:
        candidates.update(torch_runs)
    row = {"model": name, "image_size": size, "batch": batch,
           "reference": "batchscore_fp32", "peer": bool(torch_runs)} | agreement(ours["fp32"], candidates, images,
                                                                                 batch, size)
    for cand, r in row["candidates"].items():
        low, high = r["top1_agree_95"]
        print(f"{name} {size}x{size}: {cand} top-1 {r['top1_agree']:.4f} (95%: {low:.4f}-{high:.4f}) on "
              f"{row['images']} images, median error {r['rel_l2_median']:.2e}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", default="googlenet,inception_v3,resnet50,resnet152")
    parser.add_argument("--images", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=None, help="every model at this size (default: its own)")
    parser.add_argument("--no-peer", action="store_true", help="leave PyTorch out even where it imports")
    args = parser.parse_args(argv)
    if args.images < 1 or args.batch < 1 or (args.image_size is not None and args.image_size < 1):
        parser.error("--images, --batch and --image-size must be positive")
    names = [n for n in args.models.split(",") if n]
    known = set(zoo.NAMES)
    if any(n.startswith("light") for n in names):
        try:
            names = light_names(names)
            known |= set(light_names(["light"]))
        except ImportError:
            parser.error("--models: the light_* graphs need the onnx package (pip install onnx)")
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        parser.error(f"--models: no model named {unknown or '(none given)'}; choose from {', '.join(zoo.NAMES)}, "
                     "light or light_NAME")
    from scoring_gpu_e2e import EXIT_NO_GPU, device_info, no_gpu_message, versions

    message = no_gpu_message("fp16_top1_gpu")
    if message:
        print(message, file=sys.stderr)
        return EXIT_NO_GPU

    rows = []
    for name in names:
        try:
            rows.append(study(name, args.image_size or native_size(name), args.images, args.batch,
                              not args.no_peer))
        except Exception as exc:  # one model's failure should not cost the others' figures
            print(f"{name}: FAILED {type(exc).__name__}: {exc}", flush=True)
            rows.append({"model": name, "error": f"{type(exc).__name__}: {exc}"})
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "fp16_top1_gpu", "command": "python " + " ".join(sys.argv),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": device_info(), "versions": versions("torch", "torchvision"), "models": rows}
    (args.out / "fp16_top1_gpu.json").write_text(json.dumps(record, indent=1) + "\n")
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
