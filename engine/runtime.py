"""The runtime: an Engine is a loaded plan; an ExecutionContext runs it.

Nothing here imports onnx or torch: a worker needs only numpy (and CuPy on a GPU) to load a plan
and score with it. Several contexts may share one Engine; the weights are held once, by the Engine.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

import numpy as np

from engine.arena import Arena
from engine.errors import InputError, LayerError, PlanFormatError
from engine.ir import format_shape
from engine.memory import VIEW_OPS
from engine.plan import Plan, read_plan
from kernels.cpu import CPU_OPS
from kernels.dtypes import resolve
from kernels.registry import OpKernel


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype | None
    shape: tuple | None  # ints, or strings for symbolic dimensions; None if unknown

    def describe(self) -> str:
        return f"{self.name} ({self.dtype}, {format_shape(self.shape)})"


# Attributes the runtime reads itself and does not pass to kernels.
RUNTIME_ATTRS = ("elided",)


@dataclasses.dataclass
class Layer:
    name: str
    kind: str
    kernel: OpKernel
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    elided: bool = False  # a Concat whose producers already wrote into its buffer

    @property
    def is_view(self) -> bool:
        return self.kind in VIEW_OPS and self.kernel.domain == ""

    def run(self, args: list[np.ndarray | None], out: np.ndarray | None = None) -> tuple:
        attrs = self.attrs
        if self.kernel.wants_num_outputs:
            attrs = dict(attrs, num_outputs=len(self.outputs))
        if out is not None:
            attrs = dict(attrs, out=out)
        result = self.kernel.fn(*args, **attrs)
        return result if isinstance(result, tuple) else (result,)


def decode_attrs(attrs: dict[str, Any], tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Plan attributes: tensors are stored as {"tensor": name} references into the plan's data."""

    def decode(value):
        if isinstance(value, dict) and "tensor" in value:
            return tensors[value["tensor"]]
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    return {k: decode(v) for k, v in attrs.items()}


def _spec(entry: dict) -> TensorSpec:
    """Inputs always have a dtype and shape (the builder insists); an output may lack either."""
    dtype = None if entry["dtype"] is None else resolve(entry["dtype"])
    shape = None if entry["shape"] is None else tuple(entry["shape"])
    return TensorSpec(entry["name"], dtype, shape)


class Engine:
    def __init__(self, plan: Plan, source: str = "<plan>"):
        header = plan.header
        device = header.get("device", {}).get("kind", "cpu")
        if device != "cpu":
            raise PlanFormatError(f"{source}: the plan was built for device '{device}'; this runtime runs 'cpu' plans")
        self.source = source
        self.header = header
        self.name = header.get("model_name", "model")
        self.max_batch = header.get("max_batch")
        self.inputs = [_spec(e) for e in header["inputs"]]
        self.outputs = [_spec(e) for e in header["outputs"]]
        self.weights = {name: plan.tensors[name] for name in header.get("weights", [])}
        self.layers = []
        for entry in header["layers"]:
            try:
                kernel = CPU_OPS.by_key(entry["kernel"])
            except KeyError:
                raise PlanFormatError(
                    f"{source}: layer '{entry['name']}' needs kernel {entry['kernel']}, which this "
                    f"batchscore does not have; rebuild the plan with this version"
                ) from None
            attrs = decode_attrs(entry.get("attrs", {}), plan.tensors)
            elided = bool(attrs.get("elided"))
            for key in RUNTIME_ATTRS:
                attrs.pop(key, None)
            self.layers.append(Layer(entry["name"], entry["kind"], kernel, entry["inputs"], entry["outputs"], attrs, elided))
        # per layer, the values no later layer reads (a run drops them after that layer)
        self.last_reads = _last_uses(self.layers, {s.name for s in self.outputs})

    def create_context(self, arena: bool | None = None) -> "ExecutionContext":
        """A context to run the plan. `arena=False` gives every activation its own allocation (for
        debugging); the default plans one activation arena, unless BATCHSCORE_ARENA=0 is set."""
        if arena is None:
            arena = os.environ.get("BATCHSCORE_ARENA", "1") != "0"
        return ExecutionContext(self, arena)

    def batch_of(self, feeds: Mapping[str, np.ndarray]) -> int:
        for spec in self.inputs:
            if spec.shape and isinstance(spec.shape[0], str):
                return int(np.shape(feeds[spec.name])[0])
        return int(self.max_batch or 1)


def _last_uses(layers: list[Layer], keep: set[str]) -> list[list[str]]:
    """After layer i runs, which values no later layer reads (so the context can drop them)."""
    last: dict[str, int] = {}
    for i, layer in enumerate(layers):
        for name in layer.inputs + layer.outputs:
            if name:
                last[name] = i
    release: list[list[str]] = [[] for _ in layers]
    for name, i in last.items():
        if name not in keep:
            release[i].append(name)
    return release


Observer = Callable[[Layer, tuple], None]


class ExecutionContext:
    def __init__(self, engine: Engine, arena: bool = True):
        self.engine = engine
        self.use_arena = arena and bool(engine.header.get("values"))
        self._arenas: dict[int, Arena] = {}

    def arena(self, batch: int) -> Arena | None:
        """The activation arena for this batch size (planned once per size, then reused)."""
        if not self.use_arena:
            return None
        if batch not in self._arenas:
            engine = self.engine
            external = {s.name for s in engine.inputs} | {s.name for s in engine.outputs}
            self._arenas[batch] = Arena(engine.header["layers"], engine.header["values"], external, batch)
        return self._arenas[batch]

    def run(self, feeds: Mapping[str, Any], observer: Observer | None = None) -> dict[str, np.ndarray]:
        """Run the plan on named input arrays; returns the named outputs as numpy arrays.

        `observer(layer, outputs)` is called after each layer (the builder's shape probe uses it).
        """
        engine = self.engine
        env: dict[str, Any] = dict(engine.weights)
        env.update(self._check_inputs(feeds))
        arena = self.arena(engine.batch_of(env))
        if arena is not None:
            arena.start_run()
        with np.errstate(all="ignore"):
            for layer, release in zip(engine.layers, engine.last_reads):
                args = [env[name] if name else None for name in layer.inputs]
                if layer.elided and arena is not None:
                    results = (arena.target(layer.outputs[0]),)  # producers filled it in place
                else:
                    results = self._run_layer(layer, args, arena)
                for name, value in zip(layer.outputs, results):
                    if name:
                        env[name] = value if isinstance(value, np.ndarray) else np.asarray(value)
                if observer is not None:
                    observer(layer, results)
                for name in release:
                    if name not in engine.weights:
                        env.pop(name, None)
        return {spec.name: env[spec.name] for spec in engine.outputs}

    @staticmethod
    def _run_layer(layer: Layer, args: list, arena: Arena | None) -> tuple:
        targets = [None] * len(layer.outputs) if arena is None or layer.is_view else [
            arena.target(name) if name else None for name in layer.outputs]
        direct = len(targets) == 1 and targets[0] is not None and layer.kernel.accepts_out
        try:
            results = layer.run(args, out=targets[0] if direct else None)
        except Exception as exc:
            raise LayerError(_layer_failure(layer, args, exc)) from exc
        if direct:
            return results
        placed = []
        for name, result, target in zip(layer.outputs, results, targets):
            if target is not None and result is not target:
                result = np.asarray(result)
                if result.shape != target.shape:
                    raise LayerError(
                        f"layer '{layer.name}' ({layer.kind}) produced {name} with shape {format_shape(result.shape)}, "
                        f"but the plan recorded {format_shape(target.shape)}")
                np.copyto(target, result)
                result = target
            placed.append(result)
        return tuple(placed) + tuple(results[len(placed):])

    def _check_inputs(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return check_feeds(self.engine.inputs, self.engine.max_batch, feeds)


def check_feeds(specs: list[TensorSpec], max_batch: int | None, feeds: Mapping[str, Any], asarray=np.asarray) -> dict:
    """The feeds, checked against the plan's inputs: names, dtypes, ranks, fixed dims, max batch."""
    expected = {s.name: s for s in specs}
    wanted = "; the plan's inputs are: " + ", ".join(s.describe() for s in specs)
    unknown = sorted(set(feeds) - set(expected))
    if unknown:
        raise InputError(f"unknown input(s) {', '.join(map(repr, unknown))}{wanted}")
    checked = {}
    for spec in specs:
        if spec.name not in feeds:
            raise InputError(f"missing input '{spec.name}'{wanted}")
        checked[spec.name] = _check_array(spec, asarray(feeds[spec.name]), max_batch)
    return checked


def _check_array(spec: TensorSpec, array: np.ndarray, max_batch: int | None) -> np.ndarray:
    if array.dtype != spec.dtype:
        raise InputError(f"input '{spec.name}' has dtype {array.dtype}; the plan expects {spec.dtype}")
    if len(array.shape) != len(spec.shape):
        raise InputError(
            f"input '{spec.name}' has shape {format_shape(array.shape)} (rank {array.ndim}); "
            f"the plan expects {format_shape(spec.shape)} (rank {len(spec.shape)})"
        )
    for axis, (got, want) in enumerate(zip(array.shape, spec.shape)):
        if isinstance(want, int) and got != want:
            raise InputError(
                f"input '{spec.name}' has shape {format_shape(array.shape)}; the plan expects "
                f"{format_shape(spec.shape)} (axis {axis} must be {want})"
            )
    if max_batch is not None and spec.shape and isinstance(spec.shape[0], str) and array.shape[0] > max_batch:
        raise InputError(
            f"input '{spec.name}' has batch {array.shape[0]}, more than the plan's max batch {max_batch}; "
            f"split the batch or rebuild with a larger --max-batch"
        )
    return array


def _layer_failure(layer: Layer, args: list, exc: Exception) -> str:
    shapes = ", ".join(
        f"{name or '-'}: {format_shape(a.shape)} {a.dtype}" if isinstance(a, np.ndarray) else f"{name or '-'}: none"
        for name, a in zip(layer.inputs, args)
    )
    return f"layer '{layer.name}' ({layer.kind}, kernel {layer.kernel.key}) failed on inputs [{shapes}]: {exc}"


def load(path: str | os.PathLike):
    """Load a plan file (runtime only: no onnx, no torch): an Engine for CPU plans, a GpuEngine for
    plans built for a CUDA GPU."""
    plan = read_plan(path)
    return engine_for(plan, str(path))


def engine_for(plan: Plan, source: str = "<plan>"):
    if plan.header.get("device", {}).get("kind", "cpu") == "cuda":
        from engine.gpu_runtime import GpuEngine

        return GpuEngine(plan, source)
    return Engine(plan, source)
