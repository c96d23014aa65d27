"""build(model, BuildConfig) -> Plan.

The build imports the model into the IR, fixes the input shapes (a symbolic batch becomes "N"),
probes the graph on synthetic inputs (every activation's shape, and reference outputs), runs the
optimization passes, turns every node into a layer bound to a kernel version, probes the optimized
plan and checks it computes what the original did, and plans the activation arena. A model that
cannot run fails here, at build time, with the layer named, rather than in every worker.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import platform
from typing import Any

import numpy as np

from engine.errors import BuildError
from engine.ir import Graph, Node, format_shape
from engine.memory import concrete_shapes, plan_memory
from engine.passes import layer_count, run_passes
from engine.plan import Plan
from engine.probe import check_declared_shapes, compare_outputs, probe, record_shapes, why_not_probe
from engine.version import __version__
from kernels.cpu import CPU_OPS

log = logging.getLogger("batchscore.build")

BATCH = "N"
DEFAULT_MAX_BATCH = 256
PRECISIONS = {"cpu": ("fp32",), "cuda": ("fp32", "fp16")}


@dataclasses.dataclass
class BuildConfig:
    precision: str = "fp32"
    max_batch: int | None = None  # None: the model's fixed batch, or DEFAULT_MAX_BATCH if symbolic
    device: str = "cpu"
    input_shapes: dict[str, tuple] | None = None  # override declared input shapes
    probe: bool = True  # run once on synthetic inputs to record shapes and catch failures
    optimize: bool = True  # run the optimization passes (engine/passes)
    tf32: bool = False  # fp32 GPU builds may use TF32 tensor cores only when asked
    timing_cache: str | None = "default"  # GPU builds: tactic timing cache file (None: no cache)
    # FP16 builds: a layer whose FP16 error is above this runs in FP32 (engine/precision.py)
    fp16_layer_bound: float = 1e-2

    def check(self) -> None:
        if self.device not in PRECISIONS:
            raise BuildError(f"device '{self.device}' is unknown; choose from {sorted(PRECISIONS)}")
        if self.precision not in PRECISIONS[self.device]:
            raise BuildError(f"precision '{self.precision}' is not available on device '{self.device}'; "
                             f"choose from {PRECISIONS[self.device]}")
        if self.device == "cuda":
            from kernels.cuda import gpu_unavailable

            missing = gpu_unavailable()
            if missing:
                raise BuildError(f"a GPU build needs the target GPU at build time, but {missing}")
        if not isinstance(self.fp16_layer_bound, (int, float)) or not self.fp16_layer_bound > 0:
            raise BuildError(f"fp16_layer_bound must be a positive number, got {self.fp16_layer_bound!r}")
        if self.max_batch is not None and (not isinstance(self.max_batch, int) or self.max_batch < 1):
            raise BuildError(f"max_batch must be a positive integer, got {self.max_batch!r}")


def build(model: Any, config: BuildConfig | None = None) -> Plan:
    """Build a plan from an ONNX path/bytes/ModelProto or an IR Graph."""
    config = config or BuildConfig()
    config.check()
    graph = _to_graph(model)
    source_nodes = len(graph.nodes)
    max_batch = _fix_input_shapes(graph, config)
    try:
        graph.topo_sorted()
        graph.validate()
    except ValueError as exc:
        raise BuildError(f"model '{graph.name}': {exc}") from None
    log.info("imported %s: %d nodes, %d weights", graph.name, source_nodes, sum(1 for _ in graph.constants()))

    reference = None
    if config.probe:
        unoptimized = _emit_plan(graph, config, max_batch)
        skip = why_not_probe(unoptimized.inputs)
        if skip:
            log.info("probe skipped: %s", skip)
        else:
            reference = probe(unoptimized)
            check_declared_shapes(graph, reference)
            record_shapes(graph, reference)
    if config.device == "cuda" and reference is None:  # the GPU runtime binds buffers by recorded shapes
        raise BuildError("a GPU build needs the shape probe (floating-point image-like inputs whose sizes "
                         "besides the batch are fixed); give the shapes with --input-shape")
    if config.optimize:
        from engine.passes.pipeline import default_pipeline

        graph = run_passes(graph, default_pipeline(config.device))
    plan = _emit_plan(graph, config, max_batch)
    plan.header["source_nodes"] = source_nodes
    if reference is not None:
        optimized = probe(plan)
        compare_outputs(reference, optimized)
        _record_values(plan, optimized.values)
        if config.device == "cuda" and config.precision == "fp16":
            from engine.precision import choose_precisions
            from engine.probe import synthetic_feeds

            choose_precisions(plan, synthetic_feeds(plan.inputs, 1), config.fp16_layer_bound)
        if config.device == "cuda":
            _make_gpu_plan(plan, config)
        _plan_memory(plan)
        if config.device == "cuda":
            from engine.tune import DEFAULT_CACHE, tune_plan

            cache = DEFAULT_CACHE if config.timing_cache == "default" else config.timing_cache
            plan.header["tuning"] = tune_plan(plan, cache)
    log.info("built %s: %d layers from %d nodes", graph.name, layer_count(graph), source_nodes)
    return plan


def _record_values(plan: Plan, values: dict[str, dict]) -> None:
    for spec in plan.inputs:  # the probe records what layers write; graph inputs are values too
        values.setdefault(spec["name"], {"dtype": spec["dtype"], "shape": list(spec["shape"])})
    plan.header["values"] = values
    for spec in plan.outputs:
        if spec["name"] in values:
            spec.update(dtype=values[spec["name"]]["dtype"], shape=values[spec["name"]]["shape"])


def _make_gpu_plan(plan: Plan, config: BuildConfig) -> None:
    """Record the GPU the plan is for; an fp16 plan keeps activations in float16, except what its
    FP32 layers write (inputs and outputs stay as the user gives and expects them; kernels cast
    weights as they upload them)."""
    from engine.precision import activation_dtypes
    from kernels.cuda.device import describe_gpu

    plan.header["device"] = describe_gpu()
    plan.header["tf32"] = bool(config.tf32)
    if config.precision == "fp16":
        values = plan.header["values"]
        fp32_layers = plan.header.get("fp32_fallback", {})
        for name, dtype in activation_dtypes(plan.layers, values, fp32_layers).items():
            values[name]["dtype"] = dtype


def _plan_memory(plan: Plan) -> None:
    """The activation arena at the max batch, recorded for `inspect` and logged."""
    batch = plan.header["max_batch"] or 1
    external = {s["name"] for s in plan.inputs} | {s["name"] for s in plan.outputs}
    memory = plan_memory(plan.layers, concrete_shapes(plan.header["values"], batch), external)
    plan.header["memory"] = dict(memory.to_json(), batch=batch)
    if memory.activation_bytes:
        log.info("activation arena at batch %d: %.1f MB for %.1f MB of activations (%.0f%%)", batch,
                 memory.arena_bytes / 1e6, memory.activation_bytes / 1e6,
                 100.0 * memory.arena_bytes / memory.activation_bytes)


def _to_graph(model: Any) -> Graph:
    if isinstance(model, Graph):
        return model.copy()  # the build rewrites its graph; the caller's stays as it was
    from engine.onnx_import import import_model  # the runtime never imports onnx; the builder may

    name = None
    if isinstance(model, (str, os.PathLike)):
        name = os.path.splitext(os.path.basename(os.fspath(model)))[0]
    return import_model(model, name=name)


def _fix_input_shapes(graph: Graph, config: BuildConfig) -> int | None:
    """Apply shape overrides, name the batch dimension "N", and return the max batch."""
    overrides = dict(config.input_shapes or {})
    unknown = set(overrides) - set(graph.inputs)
    if unknown:
        raise BuildError(f"--input-shape names {sorted(unknown)}, which the model does not have; its inputs are {graph.inputs}")
    fixed_batches = set()
    symbolic = False
    for name in graph.inputs:
        value = graph.value(name)
        if name in overrides:
            shape = tuple(overrides[name])
            if value.shape is not None and len(value.shape) != len(shape):
                raise BuildError(
                    f"--input-shape {name}:{format_shape(shape)} has rank {len(shape)}; "
                    f"the model declares {format_shape(value.shape)}"
                )
            value.shape = shape
        if value.shape is None:
            raise BuildError(f"input '{name}' has no declared shape; give one with --input-shape {name}:1x3x224x224")
        if value.dtype is None:
            raise BuildError(f"input '{name}' has no declared element type")
        if not value.shape:
            continue
        if isinstance(value.shape[0], str):
            symbolic = True
            value.shape = (BATCH,) + tuple(value.shape[1:])
        else:
            fixed_batches.add(value.shape[0])
    if overrides:
        # Shapes inferred from the old input shapes are stale now; the probe records the new ones,
        # and where it cannot run, no pass must fold a stale shape into a constant.
        for value in graph.values.values():
            if not value.is_const and value.name not in graph.inputs:
                value.shape = None
    if symbolic:
        return config.max_batch or DEFAULT_MAX_BATCH
    if config.max_batch is not None and fixed_batches and config.max_batch not in fixed_batches:
        raise BuildError(
            f"model '{graph.name}' has a fixed batch of {sorted(fixed_batches)[0]}, so --max-batch "
            f"{config.max_batch} cannot apply; re-export it with a dynamic batch axis, or give the "
            f"batch with --input-shape"
        )
    return max(fixed_batches) if fixed_batches else config.max_batch


def _emit_plan(graph: Graph, config: BuildConfig, max_batch: int | None) -> Plan:
    tensors: dict[str, np.ndarray] = {}
    layers = []
    for node in graph.nodes:
        kernel = CPU_OPS.lookup(node.op_type, graph.opsets.get(node.domain, 0), node.domain)
        if kernel is None:
            raise BuildError(f"{node.describe()}: no kernel at opset {graph.opsets.get(node.domain)}")
        layers.append({
            "name": node.name,
            "kind": node.op_type,
            "kernel": kernel.key,
            "inputs": list(node.inputs),
            "outputs": list(node.outputs),
            "attrs": _encode_attrs(node, tensors),
            "members": list(node.members),
            "precision": config.precision,
            "tactic": "numpy",
        })
    used = {name for node in graph.nodes for name in node.inputs} | set(graph.outputs)
    weights = [v.name for v in graph.constants() if v.name in used]
    for name in weights:
        tensors[name] = graph.values[name].const
    header = {
        "format": "batchscore-plan",
        "builder_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_name": graph.name,
        "device": {"kind": "cpu", "arch": platform.machine()},  # a GPU build records its GPU later
        "precision": config.precision,
        "max_batch": max_batch,
        "opsets": graph.opsets,
        "inputs": [_spec(graph, name) for name in graph.inputs],
        "outputs": [_spec(graph, name) for name in graph.outputs],
        "weights": weights,
        "layers": layers,
        "values": {},
    }
    return Plan(header, tensors)


def _spec(graph: Graph, name: str) -> dict:
    value = graph.value(name)
    dtype = value.dtype if value.dtype is not None else (value.const.dtype if value.is_const else None)
    return {"name": name, "dtype": None if dtype is None else np.dtype(dtype).name,
            "shape": None if value.shape is None else list(value.shape)}


def _encode_attrs(node: Node, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    def encode(key: str, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            tensors[key] = value
            return {"tensor": key}
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, (list, tuple)):
            return [encode(f"{key}/{i}", v) for i, v in enumerate(value)]
        return value

    return {name: encode(f"attr/{node.name}/{name}", value) for name, value in node.attrs.items()}
