"""FP16 against FP32 top-1 agreement of PyTorch on the zoo's own weights (one GPU call), to put
beside benchmarks/fp16_numerics.py's figures for this engine.

    python benchmarks/fp16_top1_peer.py OUTDIR [--models googlenet,inception_v3,resnet50] [--inputs 1024]

Each zoo model is loaded into the torchvision model of the same layout (the zoo's weight names are
torchvision's), run on the same random images as fp16_numerics.py's `fp16_vs_fp32_top1` (seed 2,
batches of 8, standard normal), in FP32 without TF32 and in FP16 (`.half()`, channels-last). It
writes OUTDIR/fp16_top1_peer.json with, per model, torch FP16 against torch FP32 (top-1 agreement,
median relative L2 error of a batch's logits), and torch FP32 against this engine's numpy backend
on the first batch (the weights loaded right). Needs torch and torchvision, so it runs where the
peer does (the device's /opt/torch venv), never in the runtime.
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
from engine.precision import relative_error  # noqa: E402

SIZES = {"resnet18": 64, "resnet50": 64, "googlenet": 64, "vgg19": 224, "alexnet": 224, "inception_v3": 139,
         "resnet152": 64}
BATCH = 8
TORCHVISION_OPTIONS = {"googlenet": {"aux_logits": False, "transform_input": False, "init_weights": False},
                       "inception_v3": {"aux_logits": False, "transform_input": False, "init_weights": False}}


def torch_model(name: str, graph):
    import torch
    import torchvision

    model = getattr(torchvision.models, name)(weights=None, **TORCHVISION_OPTIONS.get(name, {}))
    ours = {v.name: torch.from_numpy(np.ascontiguousarray(v.const, dtype=np.float32)) for v in graph.constants()
            if np.asarray(v.const).dtype.kind == "f"}
    state = model.state_dict()
    missing = [k for k in state if k not in ours and not k.endswith("num_batches_tracked")]
    if missing:
        raise KeyError(f"{name}: the zoo has no weight for {missing[:5]}")
    model.load_state_dict({k: ours.get(k, v) for k, v in state.items()})
    return model.eval().cuda()


def study(name: str, inputs: int) -> dict:
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    size = SIZES[name]
    graph = zoo.get(name, image_size=size)
    fp32 = torch_model(name, graph)
    fp16 = torch_model(name, graph).half().to(memory_format=torch.channels_last)
    rng = np.random.default_rng(2)
    same, errors, first = 0, [], None
    with torch.no_grad():
        for _ in range(inputs // BATCH):
            x = rng.standard_normal((BATCH, 3, size, size)).astype(np.float32)
            t = torch.from_numpy(x).cuda()
            want = fp32(t).float().cpu().numpy()
            got = fp16(t.half().to(memory_format=torch.channels_last)).float().cpu().numpy()
            same += int((got.argmax(1) == want.argmax(1)).sum())
            errors.append(relative_error(got, want))
            if first is None:
                first = (x, want)
    numpy_logits = engine.Engine(engine.build(graph, BuildConfig(max_batch=BATCH))).create_context().run(
        {"input": first[0]})["logits"]
    row = {"model": name, "image_size": size, "inputs": inputs // BATCH * BATCH,
           "torch_fp16_vs_fp32": {"top1_agree": same / (inputs // BATCH * BATCH),
                                  "rel_l2_median": float(np.median(errors)), "rel_l2_max": float(max(errors))},
           "torch_fp32_vs_numpy_first_batch": relative_error(first[1], numpy_logits)}
    print(f"{name}: torch FP16 vs FP32 top-1 {row['torch_fp16_vs_fp32']['top1_agree']:.4f}, median error "
          f"{row['torch_fp16_vs_fp32']['rel_l2_median']:.2e}; torch FP32 vs numpy {row['torch_fp32_vs_numpy_first_batch']:.1e}",
          flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", default="googlenet,inception_v3,resnet50")
    parser.add_argument("--inputs", type=int, default=1024)
    args = parser.parse_args()
    import torch

    rows = []
    for name in args.models.split(","):
        try:
            rows.append(study(name, args.inputs))
        except Exception as exc:  # one model's failure should not cost the others' figures
            print(f"{name}: FAILED {type(exc).__name__}: {exc}", flush=True)
            rows.append({"model": name, "error": f"{type(exc).__name__}: {exc}"})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fp16_top1_peer.json").write_text(json.dumps(
        {"benchmark": "fp16_top1_peer", "command": "python " + " ".join(sys.argv),
         "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "device": torch.cuda.get_device_name(), "torch": torch.__version__, "models": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
