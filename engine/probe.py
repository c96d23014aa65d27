"""The build's probe: run a plan on synthetic inputs to learn every activation's shape and dtype.

With a symbolic batch it runs at batch 1 and 2, so a dimension that grows with the batch is recorded
as "N" (or "3N", and so on). The builder probes the graph before optimization (shapes for the passes,
reference outputs) and after (shapes for the memory plan), and checks that the optimized graph
computes what the original did, so a wrong rewrite fails the build instead of a scoring job.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from engine.errors import BuildError, LayerError
from engine.ir import Graph, Shape, format_shape
from engine.plan import Plan
from engine.runtime import Engine, Layer
from kernels.dtypes import resolve

BATCH = "N"


@dataclasses.dataclass
class ProbeResult:
    values: dict[str, dict]  # name -> {"dtype": str, "shape": [int | "N" | "kN" | "?"]}
    outputs: dict[int, dict[str, np.ndarray]]  # probe batch -> graph outputs


def why_not_probe(inputs: list[dict]) -> str | None:
    """None if the plan's inputs allow a probe, else the reason it is skipped."""
    for s in inputs:
        if not (s["dtype"] and resolve(s["dtype"]).kind == "f" and s["shape"] and len(s["shape"]) >= 2):
            # Random data is a safe stand-in for images and feature maps, not for scales or indices.
            return f"input '{s['name']}' is not a floating-point tensor of rank 2 or more"
        if not all(isinstance(d, int) for d in s["shape"][1:]):
            return f"input '{s['name']}' has a symbolic dimension besides the batch"
    return None


def probe(plan: Plan) -> ProbeResult:
    specs = plan.inputs
    symbolic_batch = any(s["shape"][0] == BATCH for s in specs)
    engine = Engine(plan, f"<build of {plan.header['model_name']}>")
    engine.max_batch = None  # batch 2 tells a symbolic batch apart, even in a plan for batch 1
    runs = {batch: _probe_once(engine, specs, batch) for batch in ((1, 2) if symbolic_batch else (1,))}
    first = runs[min(runs)][0]
    values = {}
    for name, (dtype, shape) in first.items():
        if 2 in runs and name in runs[2][0]:
            shape = _batch_dims(shape, runs[2][0][name][1])
        values[name] = {"dtype": dtype, "shape": list(shape)}
    return ProbeResult(values, {batch: outputs for batch, (_, outputs) in runs.items()})


def synthetic_feeds(specs: list[dict], batch: int) -> dict[str, np.ndarray]:
    """The probe's inputs: seeded standard-normal arrays, `batch` rows where the batch is symbolic."""
    rng = np.random.default_rng(0)
    feeds = {}
    for s in specs:
        shape = [batch if d == BATCH else d for d in s["shape"]]
        feeds[s["name"]] = rng.standard_normal(shape).astype(resolve(s["dtype"]))
    return feeds


def _probe_once(engine: Engine, specs: list[dict], batch: int):
    feeds = synthetic_feeds(specs, batch)
    seen: dict[str, tuple[str, tuple]] = {}

    def record(layer: Layer, results: tuple) -> None:
        for name, value in zip(layer.outputs, results):
            if name:
                array = np.asarray(value)
                seen[name] = (array.dtype.name, array.shape)

    try:
        outputs = engine.create_context(arena=False).run(feeds, observer=record)
    except LayerError as exc:
        raise BuildError(f"the build's probe at batch {batch} failed: {exc}") from None
    return seen, {k: np.array(v) for k, v in outputs.items()}


def _batch_dims(at1: Shape, at2: Shape) -> Shape:
    if len(at1) != len(at2):
        return tuple("?" for _ in at1)
    dims: list = []
    for d1, d2 in zip(at1, at2):
        if d1 == d2:
            dims.append(d1)
        elif d2 == 2 * d1:
            dims.append(BATCH if d1 == 1 else f"{d1}{BATCH}")
        else:
            dims.append("?")
    return tuple(dims)


def check_declared_shapes(graph: Graph, result: ProbeResult) -> None:
    """A declared shape (ONNX inference, the network API, a custom op's shape rule) must agree with
    what the kernels produced; a disagreement names the node, so a wrong shape rule fails the build."""
    producers = graph.producers()
    for name, info in result.values.items():
        declared = graph.values[name].shape if name in graph.values else None
        if declared is None or _agrees(declared, info["shape"]):
            continue
        node = producers.get(name)
        where = node.describe() if node else f"value '{name}'"
        source = "its custom op's shape rule" if node is not None and node.domain not in ("", "batchscore") else "the model"
        raise BuildError(
            f"{where}: output '{name}' is declared {format_shape(declared)} by {source}, but its kernel "
            f"produced {format_shape(info['shape'])}"
        )


def _agrees(declared: Shape, probed: list) -> bool:
    if len(declared) != len(probed):
        return False
    # Symbolic declared dims ("N", "batch", "?") may be fixed by the build's input shapes: only
    # rank and the declared integer sizes are checked.
    return all(not isinstance(d, int) or d == p for d, p in zip(declared, probed))


def record_shapes(graph: Graph, result: ProbeResult) -> None:
    for name, info in result.values.items():
        if name in graph.values:
            value = graph.values[name]
            value.shape = tuple(info["shape"])
            value.dtype = resolve(info["dtype"])


def compare_outputs(reference: ProbeResult, optimized: ProbeResult, tolerance: float = 1e-2) -> None:
    """The optimized graph must compute what the imported one did (relative L2 per float output).

    This catches wrong rewrites, which are off by O(1); it is not a precision test: a deep fp32
    network can drift ~1e-3 from itself under reordered arithmetic (BN folding), and the passes'
    tests bound that against float64 truth."""
    for batch, want in reference.outputs.items():
        got = optimized.outputs.get(batch, {})
        for name, expected in want.items():
            actual = got.get(name)
            if actual is None or actual.shape != expected.shape:
                raise BuildError(f"after optimization, output '{name}' is missing or has another shape "
                                 f"({None if actual is None else format_shape(actual.shape)} vs {format_shape(expected.shape)})")
            if expected.dtype.kind != "f":
                continue
            finite = np.isfinite(expected)
            scale = float(np.linalg.norm(expected[finite])) or 1.0
            error = float(np.linalg.norm((actual[finite] - expected[finite]).astype(np.float64))) / scale
            if not np.isfinite(error) or error > tolerance:
                raise BuildError(
                    f"after optimization, output '{name}' differs from the unoptimized graph's by "
                    f"{error:.2e} (relative L2, batch {batch}); an optimization pass is wrong for this "
                    f"model: rebuild with optimization off (--no-optimize) and report it"
                )
