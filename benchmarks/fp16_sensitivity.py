"""Which layers of an FP16 plan to keep in FP32, chosen by their effect on the output (CPU emulation).

    python benchmarks/fp16_sensitivity.py OUTDIR [--models googlenet] [--images 4096] [--batch 64]
        [--calib-images 256] [--calib-seed 7] [--mac-targets 0.02,0.05,0.1,0.15,0.2,0.3]
        [--sets fp16,classifier,mac_free] [--grouped-targets 0.02,0.1,0.2]

benchmarks/fp16_top1_emulated.py chooses FP32 layers by each layer's own local FP16 error; here a
layer is judged by what its FP16 rounding does to the logits. Per model, on --calib-images
standard-normal images (seed --calib-seed, so apart from the evaluation images), each candidate
layer (every layer but views) runs alone in FP16 with every other layer in FP32
(engine.precision.fp16_emulated_outputs, fp32_layers = all others). Its `error_alone` is the
relative L2 error of the logits against the exact ones; its `contribution` is the part of that its
own rounding adds, ||logits(only it FP16) - logits(none FP16)|| / ||exact logits|| (the plan's input
is FP16 in every run, so "none" is the floor a layer's error sits on). Layers are ranked MAC-free
ones first (pooling, concat, ...: by contribution), then conv/gemm layers by contribution^2 per
multiply-add (layer_macs of fp16_top1_emulated.py), and FP32 sets are prefixes of that ranking.

Evaluated sets, on the same --images images (seed 2, batches of --batch) as fp16_top1_emulated.py:
--sets names among `fp16` (no FP32 layer), `classifier` (the last Gemm and every layer after it),
`mac_free` (the ranking's MAC-free layers), and for each of --mac-targets the longest prefix whose
conv/gemm layers carry at most that share of the multiply-adds. Such a set runs as the emulation
takes it: an FP32 writer of an elided concat beside FP16 ones (a plan whose concat is not elided).
The build gives an elided concat's buffer one dtype (engine.precision.concat_groups: one FP32
writer widens the concat and all its writers), so for each of --grouped-targets the ranking without
the members of elided-concat groups that have no MACs (the concat, a pooling branch writing into it:
they are widened with the group when they matter) is cut at the longest prefix whose build-widened
set carries at most that share, and the widened set is evaluated (`build<=F`). Per set: top-1
agreement, median relative L2 error of a batch's logits, the FP32 MAC share, and the share once
widened as the build widens it. Writes OUTDIR/fp16_sensitivity.json and prints a table.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fp16_top1_emulated import MAC_KINDS, engine, layer_macs, parse_bounds, zoo  # noqa: E402
from fp16_numerics import SIZES  # noqa: E402

from engine.builder import BuildConfig  # noqa: E402
from engine.memory import VIEW_OPS  # noqa: E402
from engine.plan import Plan  # noqa: E402
from engine.precision import concat_groups, fp16_emulated_outputs, relative_error  # noqa: E402

EVAL_SEED = 2  # fp16_top1_emulated.py's images
OUTPUT = "logits"


def build_plan(name: str, batch: int) -> Plan:
    """The plan fp16_top1_emulated.py studies: a CPU build at fp16_numerics.SIZES."""
    return engine.build(zoo.get(name, image_size=SIZES[name]), BuildConfig(max_batch=batch))


def image_batches(seed: int, images: int, batch: int, size: int):
    """Standard-normal NCHW batches, drawn as fp16_top1_emulated.py draws them."""
    rng = np.random.default_rng(seed)
    for _ in range(max(1, images // batch)):
        yield rng.standard_normal((batch, 3, size, size)).astype(np.float32)


def candidates(plan: Plan) -> list[dict]:
    """Layers that round anything of their own in FP16: all but views (a view follows its input)."""
    return [layer for layer in plan.layers if layer["kind"] not in VIEW_OPS]


def run(plan: Plan, x: np.ndarray, fp32_layers) -> tuple[np.ndarray, np.ndarray]:
    exact, fp16 = fp16_emulated_outputs(plan, {"input": x}, fp32_layers)
    return exact[OUTPUT], fp16[OUTPUT]


def calibrate(plan: Plan, seed: int, images: int, batch: int) -> tuple[dict, dict]:
    """Per candidate layer its error alone in FP16 and its own contribution (see the docstring), plus
    the logits' error with every layer in FP16 and with none, over the calibration images."""
    every = [layer["name"] for layer in plan.layers]
    names = [layer["name"] for layer in candidates(plan)]
    exact, none, whole = [], [], []
    alone = {name: [] for name in names}
    for x in image_batches(seed, images, batch, SIZES[plan.header["model_name"]]):
        want, floor = run(plan, x, every)
        exact.append(want)
        none.append(floor)
        whole.append(run(plan, x, ())[1])
        for name in names:
            alone[name].append(run(plan, x, [n for n in every if n != name])[1])
    want, floor = np.concatenate(exact), np.concatenate(none)
    scale = float(np.linalg.norm(want.astype(np.float64)))
    layers = {}
    for name in names:
        got = np.concatenate(alone[name])
        layers[name] = {"error_alone": relative_error(got, want),
                        "contribution": float(np.linalg.norm((got - floor).astype(np.float64))) / scale}
    totals = {"all_fp16": relative_error(np.concatenate(whole), want), "none_fp16": relative_error(floor, want)}
    totals["sum_of_squares_of_contributions"] = float(sum(v["contribution"] ** 2 for v in layers.values()))
    return layers, totals


def rank(layers: dict, macs: dict) -> list[str]:
    """MAC-free layers first by contribution, then conv/gemm layers by contribution^2 per MAC."""
    free = sorted((n for n in layers if not macs.get(n)), key=lambda n: -layers[n]["contribution"])
    costly = sorted((n for n in layers if macs.get(n)), key=lambda n: -layers[n]["contribution"] ** 2 / macs[n])
    return free + costly


def prefix_for(order: list[str], macs: dict, target: float, widen=lambda names: names) -> list[str]:
    """The longest prefix of `order` whose layers, widened by `widen`, carry at most `target` of the
    MACs; returned widened."""
    total, prefix = sum(macs.values()), []
    for name in order:
        if sum(macs.get(n, 0) for n in widen(prefix + [name])) > target * total:
            break
        prefix.append(name)
    return list(widen(prefix))


def classifier_set(plan: Plan) -> list[str]:
    """The last Gemm and every layer after it."""
    last = max(i for i, layer in enumerate(plan.layers) if layer["kind"] == "Gemm")
    return [layer["name"] for layer in plan.layers[last:]]


def with_concat_groups(plan: Plan, fp32: list[str]) -> list[str]:
    """`fp32` widened as the build widens it: a whole elided-concat group where one member is FP32."""
    wide = set(fp32)
    for group in concat_groups(plan.layers):
        if group & wide:
            wide |= group
    return [layer["name"] for layer in plan.layers if layer["name"] in wide]


def fp32_sets(plan: Plan, order: list[str], macs: dict, sets: list[str], targets: list[float],
              grouped_targets: list[float]) -> dict:
    """{label: FP32 layer names} of the sets to evaluate (identical sets are kept once)."""
    named = {"fp16": [], "classifier": classifier_set(plan), "mac_free": [n for n in order if not macs.get(n)]}
    chosen = {label: named[label] for label in sets}
    for target in targets:
        chosen[f"macs<={target:g}"] = prefix_for(order, macs, target)
    grouped_free = {name for group in concat_groups(plan.layers) for name in group if not macs.get(name)}
    for target in grouped_targets:
        chosen[f"build<={target:g}"] = prefix_for([n for n in order if n not in grouped_free], macs, target,
                                                  lambda names: with_concat_groups(plan, names))
    unique, seen = {}, set()
    for label, names in chosen.items():
        if frozenset(names) not in seen:
            seen.add(frozenset(names))
            unique[label] = names
    return unique


def evaluate(plan: Plan, chosen: dict, images: int, batch: int) -> dict:
    """Top-1 agreement and per-batch relative L2 errors of each FP32 set on the evaluation images."""
    tally = {label: {"same": 0, "errors": [], "seconds": 0.0} for label in chosen}
    count = 0
    for x in image_batches(EVAL_SEED, images, batch, SIZES[plan.header["model_name"]]):
        count += len(x)
        for label, names in chosen.items():
            started = time.perf_counter()
            want, got = run(plan, x, names)
            t = tally[label]
            t["same"] += int((want.argmax(1) == got.argmax(1)).sum())
            t["errors"].append(relative_error(got, want))
            t["seconds"] += time.perf_counter() - started
    return {label: {"images": count, "top1_agree": t["same"] / count,
                    "rel_l2_median": float(np.median(t["errors"])), "rel_l2_max": float(max(t["errors"])),
                    "seconds": round(t["seconds"], 1)} for label, t in tally.items()}


def study(name: str, args) -> dict:
    plan = build_plan(name, args.batch)
    macs = layer_macs(plan)
    total = sum(macs.values())
    kinds = {layer["name"]: layer["kind"] for layer in plan.layers}
    started = time.perf_counter()
    layers, totals = calibrate(plan, args.calib_seed, args.calib_images, args.batch)
    calib_seconds = round(time.perf_counter() - started, 1)
    order = rank(layers, macs)
    for position, layer in enumerate(order):
        layers[layer].update(rank=position, kind=kinds[layer], macs=macs.get(layer, 0),
                             mac_fraction=macs.get(layer, 0) / total)
    chosen = fp32_sets(plan, order, macs, args.sets, args.mac_targets, args.grouped_targets)
    results = evaluate(plan, chosen, args.images, args.batch)
    rows = []
    for label, names in chosen.items():
        grouped = with_concat_groups(plan, names)
        rows.append({"set": label, **results[label], "fp32_layer_count": len(names),
                     "fp32_mac_fraction": sum(macs.get(n, 0) for n in names) / total,
                     "fp32_mac_fraction_with_concat_groups": sum(macs.get(n, 0) for n in grouped) / total,
                     "fp32_layers": names})
    return {"model": name, "image_size": SIZES[name], "macs_per_image": total,
            "calibration": {"seed": args.calib_seed, "images": args.calib_images, "seconds": calib_seconds,
                            **totals},
            "layers": {n: layers[n] for n in order}, "rows": rows}


def print_study(result: dict, top: int = 12) -> None:
    c = result["calibration"]
    print(f"{result['model']}: logits' error on {c['images']} calibration images: all FP16 {c['all_fp16']:.2e}, "
          f"none {c['none_fp16']:.2e} (FP16 input only), sqrt(sum of contributions^2) "
          f"{c['sum_of_squares_of_contributions'] ** 0.5:.2e}")
    print(f"  {'largest contributions':44s} {'kind':18s} {'contrib':>8s} {'alone':>8s} {'MACs':>6s} rank")
    biggest = sorted(result["layers"].items(), key=lambda kv: -kv[1]["contribution"])[:top]
    for layer, v in biggest:
        print(f"  {layer:44s} {v['kind']:18s} {v['contribution']:8.2e} {v['error_alone']:8.2e} "
              f"{v['mac_fraction']:6.1%} {v['rank']}")
    print(f"  {'set':18s} {'layers':>6s} {'MACs':>6s} {'grouped':>7s} {'top-1':>7s} {'med L2':>8s}")
    for row in result["rows"]:
        print(f"  {row['set']:18s} {row['fp32_layer_count']:6d} {row['fp32_mac_fraction']:6.1%} "
              f"{row['fp32_mac_fraction_with_concat_groups']:7.1%} {row['top1_agree']:7.2%} "
              f"{row['rel_l2_median']:8.2e}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", default="googlenet")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--calib-images", type=int, default=256)
    parser.add_argument("--calib-seed", type=int, default=7)
    parser.add_argument("--mac-targets", default="0.02,0.05,0.1,0.15,0.2,0.3", metavar="F1,F2,...",
                        help="MAC shares (0..1) whose longest ranked prefix is evaluated")
    parser.add_argument("--grouped-targets", default="0.02,0.1,0.2", metavar="F1,F2,...",
                        help="MAC shares (0..1) of the sets evaluated as the build widens elided concats")
    parser.add_argument("--sets", default="fp16,classifier,mac_free",
                        help="named sets to evaluate too, from fp16, classifier, mac_free (may be empty)")
    args = parser.parse_args()
    if min(args.images, args.batch, args.calib_images) < 1:
        parser.error("--images, --batch and --calib-images must be positive")
    if args.calib_seed == EVAL_SEED:
        parser.error(f"--calib-seed must differ from the evaluation images' seed {EVAL_SEED}")
    for option in ("mac_targets", "grouped_targets"):
        try:
            text = getattr(args, option)
            setattr(args, option, parse_bounds(text) if text.strip() else [])
        except ValueError as exc:
            parser.error(f"--{option.replace('_', '-')}: {exc}")
    args.sets = [s for s in args.sets.split(",") if s.strip()]
    if set(args.sets) - {"fp16", "classifier", "mac_free"}:
        parser.error(f"--sets: unknown {sorted(set(args.sets) - {'fp16', 'classifier', 'mac_free'})}")
    results = []
    for name in args.models.split(","):
        results.append(study(name, args))
        print_study(results[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "fp16_sensitivity",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": {"kind": "cpu", "machine": platform.machine(), "python": platform.python_version(),
                         "numpy": np.__version__},
              "command": "python " + " ".join(sys.argv), "mac_kinds": list(MAC_KINDS), "models": results}
    (args.out / "fp16_sensitivity.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
