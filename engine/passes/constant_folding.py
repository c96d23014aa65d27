"""Constant folding: compute, once at build time, whatever does not depend on the runtime inputs.

Rules, applied in one sweep over the nodes in execution order (so a folded value feeds the next
fold):

- fold: a deterministic node whose inputs are all constants (weights, or values folded earlier in
  the sweep) is run once with the numpy kernel the runtime would use (same lookup, same call,
  `num_outputs` included) and its outputs become constant Values of the same names. This turns the
  light_* models' ConstantOfShape weight generators into ordinary weights and precomputes weight
  preprocessing (Unsqueeze / Transpose / Mul of constants).
- static Shape: `Shape(x)` when x's recorded shape is known at the dims it selects (all of them, or
  [start, end) for Shape-15) becomes a constant, so Gather/Concat/... on it fold by the first rule.
- Reshape target: a Reshape whose target shape is computed (typically Shape -> Gather -> Unsqueeze
  -> Concat on a symbolic batch, as exporters write `x.view(x.size(0), -1)`) but whose output shape
  is recorded gets a constant target: each int dim as is, and the one symbolic dim as 0 (copy the
  input's dim: allowzero is 0 and the input has the same symbol at that position) or else -1.
- Expand target: likewise for an Expand whose output shape is recorded and whose only symbolic dim
  is a batch that the input has at the same (right-aligned) position: that dim becomes 1.

Checks (refusals logged): random ops (RandomNormal, Bernoulli, ...) and training-mode Dropout are
never folded, nor ops of custom domains (the engine cannot know they are deterministic); a result
larger than MAX_FOLD_BYTES is not folded unless the inputs were already that large, or the op is a
Constant / ConstantOfShape (which is how the light_* models build their weights).

The last two rules only apply when the target is computed from constants and tensor shapes (Shape,
Size), never from a runtime tensor's values. The shape chains they make redundant, and the weights
only folded nodes read, are removed at the end by the dead-layer sweep
(engine.passes.dead_layers.remove_dead), which also removes anything that was dead before.
"""

from __future__ import annotations

import math

import numpy as np

from engine.ir import Graph, Node, Value
from engine.passes import FUSED_DOMAIN, graph_pass, log, refused
from engine.passes.dead_layers import remove_dead
from engine.runtime import RUNTIME_ATTRS
from kernels.cpu import CPU_OPS

RULE = "constant folding"
MAX_FOLD_BYTES = 64 * 1024 * 1024
RANDOM_OPS = frozenset({
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
})
# Ops whose result is the model's own data, however large: folding them costs nothing at run time.
ALWAYS_FOLD = frozenset({"Constant", "ConstantOfShape"})
_COMPUTED = "an input is computed at run time"


def _is_const(graph: Graph, name: str) -> bool:
    value = graph.values.get(name)
    return value is not None and value.is_const


def _const(graph: Graph, name: str) -> np.ndarray | None:
    value = graph.values.get(name)
    return None if value is None else value.const


def _known_bytes(value: Value | None) -> int | None:
    """Bytes of a value from its recorded shape and dtype, or None when not fully known."""
    if value is None or value.shape is None or value.dtype is None:
        return None
    if not all(isinstance(d, int) for d in value.shape):
        return None
    return math.prod(value.shape) * np.dtype(value.dtype).itemsize


# -------------------------------------------------------------------- rule: fold a node


def _check_fold(graph: Graph, node: Node):
    """The kernel to fold `node` with, or a reason string."""
    if node.domain not in ("", FUSED_DOMAIN):
        return f"op of custom domain '{node.domain}': the engine cannot tell it is deterministic"
    if node.op_type in RANDOM_OPS:
        return "random op"
    if not all(_is_const(graph, i) for i in node.inputs if i):
        return _COMPUTED
    if node.op_type == "Dropout" and len(node.inputs) > 2 and node.inputs[2]:
        training = np.asarray(_const(graph, node.inputs[2]))
        if training.size != 1 or bool(training.reshape(-1)[0]):
            return "training-mode Dropout is random"
    kernel = CPU_OPS.lookup(node.op_type, graph.opsets.get(node.domain, 0), node.domain)
    if kernel is None:
        return f"no kernel at opset {graph.opsets.get(node.domain)}"
    if node.op_type not in ALWAYS_FOLD:
        in_bytes = sum(_const(graph, i).nbytes for i in node.inputs if i)
        for out in node.outputs:
            size = _known_bytes(graph.values.get(out)) if out else None
            if size is not None and size > max(MAX_FOLD_BYTES, in_bytes):
                return f"result '{out}' would take {size / 2**20:.0f} MiB"
    return kernel


def _evaluate(graph: Graph, node: Node, kernel) -> list[np.ndarray] | str:
    """Run the kernel as engine.runtime.Layer.run does; a list of arrays or a reason string."""
    args = [_const(graph, i) if i else None for i in node.inputs]
    attrs = {k: v for k, v in node.attrs.items() if k not in RUNTIME_ATTRS}
    if kernel.wants_num_outputs:
        attrs = dict(attrs, num_outputs=len(node.outputs))
    try:
        with np.errstate(all="ignore"):
            result = kernel.fn(*args, **attrs)
    except Exception as exc:  # a kernel that cannot run here fails again, with its name, at build time
        return f"kernel {kernel.key} failed: {type(exc).__name__}: {exc}"
    results = result if isinstance(result, tuple) else (result,)
    if len(results) < len(node.outputs) and any(node.outputs[len(results):]):
        return f"kernel {kernel.key} gave {len(results)} result(s) for {len(node.outputs)} outputs"
    arrays = []
    for array in results:
        array = np.asarray(array)
        if array.dtype.kind in "OSUV":
            return f"result has dtype {array.dtype}, which a weight cannot hold"
        if any(np.may_share_memory(array, a) for a in args if isinstance(a, np.ndarray)):
            array = array.copy()  # a view of another weight (Reshape, Squeeze): weights own their data
        arrays.append(np.ascontiguousarray(array))
    if node.op_type not in ALWAYS_FOLD:
        in_bytes = sum(a.nbytes for a in args if isinstance(a, np.ndarray))
        out_bytes = sum(a.nbytes for a, name in zip(arrays, node.outputs) if name)
        if out_bytes > max(MAX_FOLD_BYTES, in_bytes):
            return f"result takes {out_bytes / 2**20:.0f} MiB"
    return arrays


def _store(graph: Graph, node: Node, arrays: list[np.ndarray]) -> None:
    """The node's outputs become weights of the same names (the caller drops the node)."""
    for name, array in zip(node.outputs, arrays):
        if not name:
            continue
        value = graph.values.get(name)
        if value is None:
            value = graph.values[name] = Value(name)
        value.const = array
        value.dtype = array.dtype
        value.shape = tuple(array.shape)


# -------------------------------------------------------------------- rule: static Shape


def _static_shape(graph: Graph, node: Node) -> np.ndarray | str:
    value = graph.values.get(node.inputs[0]) if node.inputs and node.inputs[0] else None
    if value is None or value.shape is None:
        return "input shape unknown"
    dims = tuple(value.shape)
    kernel = CPU_OPS.lookup("Shape", graph.opset)
    if kernel is not None and kernel.since >= 15:
        rank = len(dims)

        def clamp(i: int) -> int:
            i = i + rank if i < 0 else i
            return min(max(i, 0), rank)

        end = node.attrs.get("end")
        dims = dims[clamp(int(node.attrs.get("start", 0))):rank if end is None else clamp(int(end))]
    if not all(isinstance(d, int) for d in dims):
        return f"selected dims {list(dims)} are not all fixed"
    return np.array(dims, dtype=np.int64)


# -------------------------------------------------------------------- rule: Reshape / Expand targets


def reshape_target(in_shape, out_shape, allowzero: int = 0) -> list[int] | str:
    """A constant Reshape target that gives `out_shape` (ints and at most one symbolic dim) from an
    input of `in_shape` (may be None): the symbolic dim as 0 where the input has the same symbol at
    that position and allowzero is 0, else as -1. Returns a reason string when there is none."""
    symbolic = [i for i, d in enumerate(out_shape) if not isinstance(d, int)]
    if len(symbolic) > 1:
        return f"output shape {list(out_shape)} has more than one unknown dim"
    if any(isinstance(d, int) and d <= 0 for d in out_shape):
        return f"output shape {list(out_shape)} has a zero-size dim"
    target = [d if isinstance(d, int) else -1 for d in out_shape]
    if symbolic:
        (axis,) = symbolic
        same = in_shape is not None and axis < len(in_shape) and in_shape[axis] == out_shape[axis]
        if same and not allowzero and out_shape[axis] != "?":
            target[axis] = 0
    return target


def expand_target(in_shape, out_shape) -> list[int] | str:
    """A constant Expand target giving `out_shape` from `in_shape`: ints as is, and a symbolic dim
    (only allowed where the input has the same symbol, right-aligned) as 1 (keep the input's)."""
    if in_shape is None:
        return "input shape unknown"
    if len(in_shape) > len(out_shape):
        return f"output rank {len(out_shape)} is below the input's {len(in_shape)}"
    offset = len(out_shape) - len(in_shape)
    target = []
    for axis, d in enumerate(out_shape):
        if isinstance(d, int):
            target.append(d)
            continue
        source = in_shape[axis - offset] if axis >= offset else None
        if d == "?" or source != d:
            return f"output dim {axis} is '{d}', not a batch the input has at that position"
        target.append(1)
    return target


def _shape_only_source(graph: Graph, name: str, producers: dict[str, Node]) -> str | None:
    """None when value `name` is computed from constants and tensor shapes only (Shape / Size of
    anything), so the recorded shapes determine it; else the runtime value it reads."""
    stack, seen = [name], set()
    while stack:
        current = stack.pop()
        if not current or current in seen or _is_const(graph, current):
            continue
        seen.add(current)
        node = producers.get(current)
        if node is None:
            return current
        if node.op_type in ("Shape", "Size") and node.domain == "":
            continue
        stack.extend(node.inputs)
    return None


def _check_target(graph: Graph, node: Node, producers: dict[str, Node]) -> list[int] | str:
    if len(node.inputs) < 2 or not node.inputs[1]:
        return "no target shape input"
    if _is_const(graph, node.inputs[1]):
        return "target shape is already a constant"
    source = _shape_only_source(graph, node.inputs[1], producers)
    if source is not None:
        return f"it is computed from the values of '{source}', not only from shapes"
    if node.op_type == "Reshape" and CPU_OPS.lookup("Reshape", graph.opset) is None:
        return "no Reshape kernel at this opset"
    out = graph.values.get(node.outputs[0])
    if out is None or out.shape is None:
        return "output shape not recorded"
    data = graph.values.get(node.inputs[0])
    in_shape = None if data is None else data.shape
    if node.op_type == "Reshape":
        return reshape_target(in_shape, out.shape, int(node.attrs.get("allowzero", 0)))
    return expand_target(in_shape, out.shape)


# -------------------------------------------------------------------- the pass


def _try_fold(graph: Graph, node: Node) -> str | None:
    """Fold `node` into constants; None when done, else why not."""
    kernel = _check_fold(graph, node)
    if isinstance(kernel, str):
        return kernel
    arrays = _evaluate(graph, node, kernel)
    if isinstance(arrays, str):
        return arrays
    _store(graph, node, arrays)
    return None


@graph_pass(RULE)
def fold_constants(graph: Graph) -> Graph:
    folded: set[int] = set()
    shapes = targets = 0
    producers = graph.producers()  # only read for values still computed, which keep their producers
    for node in graph.nodes:
        if node.op_type == "Shape" and node.domain == "" and node.inputs and not _is_const(graph, node.inputs[0]):
            dims = _static_shape(graph, node)
            if isinstance(dims, str):
                refused(RULE, node.name, dims)
                continue
            _store(graph, node, [dims])
            folded.add(id(node))
            shapes += 1
            continue
        reason = _try_fold(graph, node)
        if reason is None:
            folded.add(id(node))
            continue
        if node.op_type in ("Reshape", "Expand") and node.domain == "":
            target = _check_target(graph, node, producers)
            if isinstance(target, str):
                refused(RULE, node.name, f"target shape: {target}")
                continue
            node.inputs[1] = graph.add_constant(f"{node.name}/shape", np.array(target, dtype=np.int64))
            targets += 1
            if _try_fold(graph, node) is None:  # the data was constant too
                folded.add(id(node))
            continue
        if reason != _COMPUTED:  # the common case, every layer on the data path: not worth a line
            refused(RULE, node.name, reason)
    # The folded nodes' outputs are weights now: drop the nodes but keep their Values.
    graph.nodes = [n for n in graph.nodes if id(n) not in folded]
    dead_nodes, dead_weights = remove_dead(graph)
    log.info(
        "%s: folded %d node(s) (%d static Shape), gave %d Reshape/Expand a constant target, "
        "then removed %d node(s) and %d weight(s) no longer used",
        RULE, len(folded), shapes, targets, dead_nodes, dead_weights,
    )
    return graph
