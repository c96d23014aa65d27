"""Which layers of an FP16 build run in FP16, and which fall back to FP32.

Before an FP16 plan is tuned, every layer runs twice on the numpy backend, on the same synthetic
inputs as the build's probe: in FP32, and as an FP16 GPU kernel treats it, with its inputs, weights
and output rounded to float16 and the arithmetic in float32 (the GPU kernels accumulate in FP32).
Each layer is fed the FP32 values of the layers before it, so its error is its own, not one carried
in. A layer whose FP16 output differs from its FP32 output by more than the bound (relative L2 norm),
or does not fit float16 at all, runs in FP32; `batchscore inspect` lists those layers with their
errors, and the plan's header records them. An elided concat's buffer has one dtype, so where one
layer writing into it runs in FP32, the concat and all its other writers do too.

The rounding is most of a layer's error on the GPU: on an H100 the zoo's FP16 layers, fed exact
inputs, erred by 3.5e-4 to 1.5e-3 (benchmarks/fp16_numerics.py), and this emulation gives the same
figures for the same layers (resnet50's layer1.0.downsample 9.3e-4 in both, inception_v3's
Mixed_5b.branch_pool 1.4e-3 here, 1.5e-3 there). A layer that needs FP32 is one whose values
overflow float16 (above 65,504) or whose result cancels (a large input, a small output).

Overflow is judged with headroom: a layer whose input activations or outputs reach 1/FP16_HEADROOM
of float16's range on the synthetic inputs runs in FP32 (its error is recorded as inf), because other
inputs go higher. On light_shufflenet (seeded random weights) a convolution whose outputs peaked at
63,600 on the synthetic inputs overflowed on 2 of 32 random images, and random images took layers
up to 1.8x their synthetic peaks; without the headroom, 10% of 1,024 random images lost their top-1
class on the H100 (benchmarks/fp16_top1_gpu.py).
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np

from engine.memory import VIEW_OPS
from engine.plan import Plan

log = logging.getLogger("batchscore.build")

FP16_LAYER_BOUND = 1e-2  # relative L2 error of one layer's output above which it runs in FP32
FP16_MAX = 65504.0
FP16_HEADROOM = 4.0  # a layer whose activations reach FP16_MAX / FP16_HEADROOM runs in FP32


def near_fp16_overflow(values) -> bool:
    """Whether any float32 array among `values` reaches FP16_MAX / FP16_HEADROOM (or is not finite)."""
    limit = FP16_MAX / FP16_HEADROOM
    for value in values:
        if isinstance(value, np.ndarray) and value.dtype == np.float32 and value.size:
            peak = np.abs(value).max()
            if not peak < limit:
                return True
    return False


def as_fp16(value):
    """A float32 array rounded to the nearest float16 and back (other values as they are)."""
    if isinstance(value, np.ndarray) and value.dtype == np.float32:
        with np.errstate(over="ignore"):
            return value.astype(np.float16).astype(np.float32)
    return value


def relative_error(got, want) -> float:
    """Relative L2 error; inf where `got` is not finite (an overflow) and `want` is."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if not np.isfinite(got).all() and np.isfinite(want).all():
        return float("inf")
    scale = float(np.linalg.norm(want))
    difference = float(np.linalg.norm(got - want))
    if scale == 0.0:
        return 0.0 if difference == 0.0 else float("inf")
    return difference / scale


def fp16_layer_errors(plan: Plan, feeds: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Each computing layer's FP16 error on `feeds`, emulated on the numpy backend (see above)."""
    from engine.runtime import Engine

    engine = Engine(plan, f"<FP16 check of {plan.header.get('model_name')}>")
    values: dict[str, object] = dict(engine.weights)
    values.update(feeds)
    errors: dict[str, float] = {}
    with np.errstate(all="ignore"):
        for layer, done_with in zip(engine.layers, engine.last_reads):
            args = [values[name] if name else None for name in layer.inputs]
            exact = layer.run(args)
            for name, value in zip(layer.outputs, exact):
                if name:
                    values[name] = np.asarray(value)
            if layer.kind not in VIEW_OPS:
                rounded = [as_fp16(np.asarray(r)) for r in layer.run([as_fp16(a) for a in args])]
                pairs = [(g, np.asarray(w)) for g, w in zip(rounded, exact) if np.asarray(w).dtype == np.float32]
                if pairs:
                    errors[layer.name] = max(relative_error(g, w) for g, w in pairs)
                    activations = [a for a, name in zip(args, layer.inputs) if name not in engine.weights]
                    if near_fp16_overflow(activations + [w for _, w in pairs]):
                        errors[layer.name] = float("inf")
            _forget(values, done_with, engine.weights)
    return errors


def _forget(values: dict, names, weights) -> None:
    """Drop activations no later layer reads (the runtime's own schedule), as a run would."""
    for name in names:
        if name not in weights:
            values.pop(name, None)


def fp16_emulated_outputs(plan: Plan, feeds: Mapping[str, np.ndarray], fp32_layers=()) -> tuple[dict, dict]:
    """The plan's outputs on `feeds` twice, emulated on the numpy backend: exactly, and as an FP16
    plan computes them (every layer not in `fp32_layers` reads and writes float16-rounded values, so
    rounding is carried through the network as on the GPU). Returns ({output: exact},
    {output: FP16})."""
    from engine.runtime import Engine

    engine = Engine(plan, f"<FP16 check of {plan.header.get('model_name')}>")
    wide_values = fp32_values(plan.layers, fp32_layers)
    exact: dict[str, object] = dict(engine.weights)
    exact.update(feeds)
    carried = {name: as_fp16(value) for name, value in exact.items()}
    with np.errstate(all="ignore"):
        for layer, done_with in zip(engine.layers, engine.last_reads):
            wide = any(name in wide_values for name in layer.outputs)
            keep = (lambda v: v) if wide else as_fp16
            results = layer.run([exact[n] if n else None for n in layer.inputs])
            # An FP32 layer reads FP16 activations (cast up) but keeps its weights in FP32.
            rounded = layer.run([None if not n else exact[n] if wide and n in engine.weights else carried[n]
                                 for n in layer.inputs])
            for name, value, approx in zip(layer.outputs, results, rounded):
                if name:
                    exact[name], carried[name] = np.asarray(value), keep(np.asarray(approx))
            _forget(exact, done_with, engine.weights)
            _forget(carried, done_with, engine.weights)
    names = [spec["name"] for spec in plan.outputs]
    return {n: exact[n] for n in names}, {n: carried[n] for n in names}


def fp16_output_error(plan: Plan, feeds: Mapping[str, np.ndarray], fp32_layers=()) -> float:
    """The whole plan's FP16 error on `feeds`, emulated (fp16_emulated_outputs): the largest relative
    error over the plan's float outputs. On an H100 this estimate came within 3% of the GPU's FP16
    plans for the zoo (resnet50 2.83e-3 here, 2.78e-3 there; googlenet 2.06e-2 and 2.11e-2;
    inception_v3 3.21e-2 and 3.18e-2: benchmarks/zoo_conditioning.py --gpu)."""
    exact, carried = fp16_emulated_outputs(plan, feeds, fp32_layers)
    errors = [relative_error(carried[name], value) for name, value in exact.items()
              if np.asarray(value).dtype.kind == "f"]
    return max(errors, default=0.0)


def fp32_fallbacks(errors: Mapping[str, float], bound: float = FP16_LAYER_BOUND) -> dict[str, float]:
    """The layers to run in FP32: those whose FP16 error is above the bound."""
    return {name: error for name, error in errors.items() if not error <= bound}


def fp32_values(layers: list[Mapping], fp32_layers) -> set[str]:
    """The values of an FP16 plan that stay float32: what an FP32 layer writes, and views of those."""
    fp32_layers = set(fp32_layers)
    wide: set[str] = set()
    for layer in layers:
        if layer["name"] in fp32_layers or (layer["kind"] in VIEW_OPS and layer["inputs"][:1] and
                                            layer["inputs"][0] in wide):
            wide.update(name for name in layer["outputs"] if name)
    return wide


def activation_dtypes(layers: list[Mapping], values: Mapping[str, Mapping], fp32_layers) -> dict[str, str]:
    """The dtype of every float32 value in an FP16 plan: float32 where an FP32 layer writes it (or
    a view of such a value), float16 elsewhere."""
    wide = fp32_values(layers, fp32_layers)
    return {name: ("float32" if name in wide else "float16")
            for name, info in values.items() if info.get("dtype") == "float32"}


def concat_groups(layers: list[Mapping]) -> list[set[str]]:
    """Layers that share one buffer, and so one dtype: each elided concat with the layers that write
    its slices in place. Groups that share a layer (a concat writing into another's slice) are merged."""
    producer = {name: layer["name"] for layer in layers for name in layer["outputs"] if name}
    groups: list[set[str]] = []
    for layer in layers:
        if layer.get("attrs", {}).get("elided"):
            group = {layer["name"]} | {producer[name] for name in layer["inputs"] if name in producer}
            for other in [g for g in groups if g & group]:
                groups.remove(other)
                group |= other
            groups.append(group)
    return groups


def fp32_layer_set(layers: list[Mapping], errors: Mapping[str, float], bound: float) -> dict[str, float]:
    """{layer: its FP16 error} of the layers to run in FP32: those above the bound, and the layers
    that share an elided concat's buffer with one of them (a concat's buffer has one dtype, so its
    writers widen together)."""
    fallback = fp32_fallbacks(errors, bound)
    for group in concat_groups(layers):
        if group & fallback.keys():
            fallback.update((name, errors.get(name, 0.0)) for name in group if name not in fallback)
    return fallback


def choose_precisions(plan: Plan, feeds: Mapping[str, np.ndarray], bound: float = FP16_LAYER_BOUND) -> dict:
    """Mark the layers of an FP16 plan (still a numpy plan at this point) that run in FP32:
    layer["precision"] = "fp32" and header["fp32_fallback"] = {layer: its FP16 error}. Returns the
    fallback dict: the layers above the bound, and the layers that share an elided concat's buffer
    with one of them (each with its own error)."""
    errors = fp16_layer_errors(plan, feeds)
    fallback = fp32_layer_set(plan.layers, errors, bound)
    for layer in plan.layers:
        if layer["name"] in fallback:
            layer["precision"] = "fp32"
    plan.header["fp32_fallback"] = {name: _json_number(error) for name, error in fallback.items()}
    plan.header["fp16_layer_bound"] = bound
    output_error = fp16_output_error(plan, feeds, fallback)
    plan.header["fp16_output_error"] = _json_number(output_error)
    worst = max(errors.values(), default=0.0)
    log.info("FP16 check: %d layers, worst error %.2e; in FP32: %s", len(errors), worst,
             ", ".join(f"{n} ({e:.1e})" for n, e in fallback.items()) or "none")
    if not output_error <= bound:
        log.warning("FP16 plan: its outputs are expected to differ from FP32 by %.1e (relative, on random "
                    "input), above %.0e: the network amplifies the rounding of its FP16 layers; build with "
                    "--precision fp32 where that matters", output_error, bound)
    return fallback


def _json_number(value: float) -> float | str:
    return value if np.isfinite(value) else "inf"
