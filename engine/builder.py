"""build(model, BuildConfig) -> Plan.

The build imports the model into the IR, fixes the input shapes (a symbolic batch becomes "N"),
turns every node into a layer bound to a kernel version, and probes the plan once on synthetic
inputs so every activation's shape is known, and so a model that cannot run fails here, at build
time, with the layer named, rather than in every worker.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import platform
from typing import Any

import numpy as np

from engine.errors import BuildError, LayerError
from engine.ir import Graph, Node, Shape, format_shape
from engine.plan import Plan
from engine.runtime import Engine, Layer
from engine.version import __version__
from kernels.cpu import CPU_OPS
from kernels.dtypes import resolve

log = logging.getLogger("batchscore.build")

BATCH = "N"
DEFAULT_MAX_BATCH = 256
PRECISIONS = ("fp32",)
DEVICES = ("cpu",)


@dataclasses.dataclass
class BuildConfig:
    precision: str = "fp32"
    max_batch: int | None = None  # None: the model's fixed batch, or DEFAULT_MAX_BATCH if symbolic
    device: str = "cpu"
    input_shapes: dict[str, tuple] | None = None  # override declared input shapes
    probe: bool = True  # run once on synthetic inputs to record shapes and catch failures

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise BuildError(f"precision '{self.precision}' is not available on device '{self.device}'; choose from {PRECISIONS}")
        if self.device not in DEVICES:
            raise BuildError(f"device '{self.device}' is not available in this build; choose from {DEVICES}")
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
    plan = _emit_plan(graph, config, max_batch)
    if config.probe:
        _probe_shapes(plan, graph)
    log.info("built %s: %d layers", graph.name, len(plan.layers))
    return plan


def _to_graph(model: Any) -> Graph:
    if isinstance(model, Graph):
        return model
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
            "members": [node.name],
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
        "device": {"kind": config.device, "arch": platform.machine()},
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


def _probe_shapes(plan: Plan, graph: Graph) -> None:
    """Run the plan on synthetic inputs and record every activation's shape and dtype.

    Runs only for image-like graphs: every input floating point, of rank >= 2, every non-batch
    dimension fixed. With a symbolic batch it runs at batch 1 and 2, so that a dimension that
    grows with the batch is recorded as "N" (or "3N" and so on).
    """
    specs = plan.inputs
    if not all(s["dtype"] and resolve(s["dtype"]).kind == "f" and len(s["shape"]) >= 2 for s in specs):
        # Random data is only a safe stand-in for images and feature maps, not for scales or indices.
        log.info("shape probe skipped: not every input is a floating-point tensor of rank 2 or more")
        return
    if not all(isinstance(d, int) for s in specs for d in s["shape"][1:]):
        log.info("shape probe skipped: an input has a symbolic non-batch dimension")
        return
    symbolic_batch = any(s["shape"][0] == BATCH for s in specs)
    engine = Engine(plan, f"<build of {plan.header['model_name']}>")
    runs = [_probe_once(engine, specs, batch) for batch in ((1, 2) if symbolic_batch else (1,))]
    values = {}
    for name, (dtype, shape) in runs[0].items():
        if len(runs) == 2 and name in runs[1]:
            shape = _batch_dims(shape, runs[1][name][1])
        values[name] = {"dtype": dtype, "shape": list(shape)}
    plan.header["values"] = values
    for spec in plan.outputs:
        if spec["name"] in values:
            spec.update(dtype=values[spec["name"]]["dtype"], shape=values[spec["name"]]["shape"])


def _probe_once(engine: Engine, specs: list[dict], batch: int) -> dict[str, tuple[str, tuple]]:
    rng = np.random.default_rng(0)
    feeds = {}
    for s in specs:
        shape = [batch if d == BATCH else d for d in s["shape"]]
        feeds[s["name"]] = rng.standard_normal(shape).astype(resolve(s["dtype"]))
    seen: dict[str, tuple[str, tuple]] = {}

    def record(layer: Layer, results: tuple) -> None:
        for name, value in zip(layer.outputs, results):
            if name:
                array = np.asarray(value)
                seen[name] = (array.dtype.name, array.shape)

    try:
        engine.create_context().run(feeds, observer=record)
    except LayerError as exc:
        raise BuildError(f"the build's shape probe at batch {batch} failed: {exc}") from None
    return seen


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
