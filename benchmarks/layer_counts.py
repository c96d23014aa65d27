"""Layer counts after optimization, and the activation arena, for the light_* and zoo models.

    python benchmarks/layer_counts.py            # writes benchmarks/results/layer_counts.json

A layer is a node of the optimized plan that runs a kernel (views and elided concats do not). The
targets are the build-phase issue's: light_vgg19 <= 27, light_inception_v1 <= 60, light_resnet50
<= 58, the zoo's ResNet-152 <= 158 and Inception v3 <= 95 (TensorRT reported 159 and 113 for its
versions of these), and ResNet-50's arena at batch 256 at most 40% of the sum of activation sizes.
"""

from __future__ import annotations

import datetime
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from engine import zoo  # noqa: E402
from engine.builder import BuildConfig  # noqa: E402
from engine.inspect import describe_plan  # noqa: E402
from engine.onnx_tools import seeded_weights  # noqa: E402

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
         "vgg19", "zfnet512"]
TARGETS = {"light_vgg19": 27, "light_inception_v1": 60, "light_resnet50": 58, "zoo_resnet152": 158,
           "zoo_inception_v3": 95}
# Layer counts do not depend on the image size; small images keep the build's probe quick.
ZOO_SIZES = {"resnet18": 64, "resnet50": 64, "resnet152": 64, "googlenet": 64, "vgg19": 224, "alexnet": 224,
             "inception_v3": 139}


def count(name: str, model, config: BuildConfig, file_nodes: int | None = None) -> dict:
    """`file_nodes`: the node count of the ONNX file as shipped (the light_* files build their weights
    with ConstantOfShape nodes, which seeded_weights turns into initializers before the build)."""
    start = time.perf_counter()
    plan = engine.build(model, config)
    totals = describe_plan(plan)["totals"]
    row = {"model": name, "source_nodes": file_nodes or totals["source_nodes"], "nodes_built": totals["source_nodes"],
           "layers": totals["layers_running_kernels"], "plan_layers_incl_views": totals["layers"],
           "build_s": round(time.perf_counter() - start, 1)}
    if name in TARGETS:
        row["target"] = TARGETS[name]
        row["meets_target"] = row["layers"] <= TARGETS[name]
    print(f"  {name:<22} {row['source_nodes']:>5} nodes -> {row['layers']:>4} layers"
          + (f"   (target <= {TARGETS[name]}: {'ok' if row['meets_target'] else 'MISSED'})" if name in TARGETS else ""))
    return row


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    rows = []
    print("layer counts after optimization")
    for name in LIGHT:
        raw = onnx.load(LIGHT_DIR / f"light_{name}.onnx")
        rows.append(count(f"light_{name}", seeded_weights(raw), BuildConfig(), file_nodes=len(raw.graph.node)))
    for name in zoo.NAMES:
        rows.append(count(f"zoo_{name}", zoo.get(name, image_size=ZOO_SIZES[name]), BuildConfig(max_batch=8)))

    print("activation arena, zoo ResNet-50 at 224x224, batch 256")
    plan = engine.build(zoo.get("resnet50"), BuildConfig(max_batch=256))
    memory = plan.header["memory"]
    arena = {"model": "zoo_resnet50", "image_size": 224, "batch": memory["batch"], "arena_bytes": memory["arena_bytes"],
             "activation_bytes": memory["activation_bytes"],
             "fraction": round(memory["arena_bytes"] / memory["activation_bytes"], 4), "target_fraction": 0.40}
    arena["meets_target"] = arena["fraction"] <= 0.40
    print(f"  {arena['arena_bytes'] / 1e9:.2f} GB arena for {arena['activation_bytes'] / 1e9:.2f} GB of activations "
          f"({100 * arena['fraction']:.1f}%, target <= 40%)")

    record = {
        "benchmark": "layer_counts",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": {"cpu": platform.processor() or platform.machine(), "platform": platform.platform()},
        "versions": {"batchscore": engine.__version__, "numpy": np.__version__, "onnx": onnx.__version__,
                     "python": platform.python_version()},
        "layer_counts": rows,
        "arena": arena,
        "command": "python benchmarks/layer_counts.py",
    }
    out = ROOT / "benchmarks" / "results" / "layer_counts.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    missed = [r["model"] for r in rows if r.get("meets_target") is False] + ([] if arena["meets_target"] else ["arena"])
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
