"""`batchscore demo`: build a small image model, save its plan, load it back and classify a generated
image, printing a short summary. Runs on the numpy backend on any machine."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def synthetic_image(size: int = 224, seed: int = 0) -> np.ndarray:
    """An RGB uint8 picture with structure (gradients, discs, stripes), not white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = np.stack([xx, yy, 1 - xx * yy], axis=-1) * 180
    for _ in range(6):
        cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        image[disc] = rng.uniform(0, 255, 3)
    image += 30 * np.sin(40 * xx)[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def preprocess(image: np.ndarray) -> np.ndarray:
    """HWC uint8 -> 1xCHW float32, ImageNet mean/std normalised."""
    x = (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def run_demo(workdir: Path, model_name: str = "resnet18") -> int:
    import engine
    from engine import zoo

    workdir.mkdir(parents=True, exist_ok=True)
    print(f"batchscore demo: {model_name} (seeded random weights) on the numpy backend\n")

    start = time.perf_counter()
    plan = engine.build(zoo.get(model_name), engine.BuildConfig(max_batch=8))
    plan_path = plan.save(workdir / f"{model_name}.plan")
    build_s = time.perf_counter() - start
    print(f"  built   {plan_path}  {len(plan.layers)} layers, {plan_path.stat().st_size / 1e6:.1f} MB, {build_s:.1f} s")

    image = synthetic_image()
    np.save(workdir / "image.npy", image)
    eng = engine.load(plan_path)  # what a worker does: plan only, no model definition, no onnx
    ctx = eng.create_context()
    batch = preprocess(image)
    start = time.perf_counter()
    outputs = ctx.run({eng.inputs[0].name: batch})
    run_ms = (time.perf_counter() - start) * 1e3
    logits = next(iter(outputs.values()))[0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    print(f"  scored  a generated 224x224 image ({workdir / 'image.npy'}) in {run_ms:.0f} ms\n")
    print("  top-5 classes (random weights, so the classes mean nothing yet):")
    for rank, index in enumerate(np.argsort(-probs)[:5], 1):
        print(f"    {rank}. class {index:4d}  p={probs[index]:.4f}")
    print(f"\nNext: `batchscore build your_model.onnx -o model.plan`, then `batchscore infer model.plan --input x.npy`.")
    return 0
