"""Scale folding: Mul / Add by constants after a layer with constant weights go into its weights.

Pattern: Mul(x, c), Add(x, c) or Sub(x, c) (Mul and Add either way round) with c a constant and x a
computed value.

Rule "fold into producer": x is the only output of a Conv, ConvTranspose, Gemm or MatMul with
constant weights (the conditions of engine.passes.bn_folding.linear_producer: x is read by this node
alone and is not a graph output), c has x's dtype and broadcasts only along the layer's output-
channel axis (shape (C, 1, 1), (1, C, 1, 1), (C,) for a Gemm, a scalar...). Rewrite: a Mul scales
the weights and bias, an Add (Sub) adds c (-c) to the bias (adding a bias input where there was
none; a MatMul with a 2-D output becomes a Gemm for that); the Mul/Add is removed and the layer
writes its output value. Refused for a constant that varies over the batch or spatial axes, or of
another dtype.

Rule "merge affine": x comes from a Mul or Add by a constant (as BatchNormalization folding leaves
behind where a BN cannot fold: DenseNet's pre-activation BNs, followed in the light_* models by a
Caffe-style Scale pair Mul -> Add), read by this node alone: Mul(Mul(y, a), c) -> Mul(y, a * c);
Add(Add(z, b), c) -> Add(z, b + c); Mul(Add(Mul(y, a), b), c) -> Add(Mul(y, a * c), b * c). All
constants must keep y's shape (no broadcast to a bigger tensor) and have its dtype.

Rules apply in graph order, so chains (Conv -> BN -> Mul -> Add, the Caffe-era Scale layer) fold
one after another into the Conv.
"""

from __future__ import annotations

import numpy as np

from engine.ir import Graph, Node
from engine.passes import graph_pass, refused
from engine.passes.bn_folding import LinearLayer, absorb, fold_affine, linear_producer

RULE = "scale folding"
OPS = ("Mul", "Add", "Sub")


def split_operands(graph: Graph, node: Node) -> tuple[str, np.ndarray] | str:
    """(x, c) for a Mul/Add/Sub of a computed value x and a constant c, else why not."""
    if len(node.inputs) != 2 or not all(node.inputs) or len([o for o in node.outputs if o]) != 1:
        return "is not a binary op with one output"
    a, b = (graph.value(name) for name in node.inputs)
    if a.is_const and b.is_const:
        return "both operands are constants (constant folding's work)"
    if not a.is_const and not b.is_const:
        return "neither operand is a constant"
    if a.is_const:
        if node.op_type == "Sub":
            return "subtracts from a constant (c - x)"
        a, b = b, a
    if a.dtype is not None and b.const.dtype != a.dtype:
        return f"its constant is {b.const.dtype} but '{a.name}' is {a.dtype}"
    if b.const.dtype.kind != "f":
        return f"its constant is {b.const.dtype}, not floating point"
    return a.name, b.const


def channel_vector(c: np.ndarray, layer: LinearLayer) -> np.ndarray | str:
    """c as a per-output-channel vector (float64, length 1 or layer.channels), else why not."""
    if c.ndim > layer.rank:
        return f"its constant of shape {c.shape} has more axes than the {layer.rank}-D output"
    aligned = (1,) * (layer.rank - c.ndim) + tuple(c.shape)
    for axis, size in enumerate(aligned):
        if axis == layer.channel_axis:
            if size not in (1, layer.channels):
                return f"its constant of shape {c.shape} has {size} values on the channel axis, not {layer.channels}"
        elif size != 1:
            what = "the batch axis" if axis == 0 and layer.channel_axis != 0 else f"axis {axis}"
            return f"its constant of shape {c.shape} varies over {what}, not only over the output channels"
    return c.astype(np.float64).reshape(-1)


def _fold_into_producer(graph: Graph, node: Node, c: np.ndarray, layer: LinearLayer) -> str | None:
    if c.dtype != layer.dtype:
        return f"its constant is {c.dtype} but the weights of '{layer.node.name}' are {layer.dtype}"
    vector = channel_vector(c, layer)
    if isinstance(vector, str):
        return vector
    if node.op_type == "Mul":
        fold_affine(graph, layer, scale=vector)
    else:
        if not layer.can_take_bias:
            return f"MatMul '{layer.node.name}' has a {layer.rank}-D output and no bias input"
        fold_affine(graph, layer, shift=-vector if node.op_type == "Sub" else vector)
    absorb(graph, layer.node, node)
    return None


# ------------------------------------------------------------------ merging constant affine maps

def _keeps_shape(c: np.ndarray, shape) -> bool:
    """True if broadcasting c against a tensor of `shape` leaves the shape as it is."""
    if shape is None or c.ndim > len(shape):
        return False
    return all(d == 1 or d == s for d, s in zip(c.shape, tuple(shape)[len(shape) - c.ndim:]))


def _const_step(graph: Graph, node: Node | None, op_types, reader: Node, consumers) -> tuple[str, str] | None:
    """(running input, constant name) of `node` if it is an op of `op_types` by a constant whose
    output only `reader` reads and is no graph output."""
    if node is None or node.domain != "" or node.op_type not in op_types:
        return None
    operands = split_operands(graph, node)
    if isinstance(operands, str):
        return None
    out = node.outputs[0]
    if out in graph.outputs or [id(n) for n in consumers.get(out, [])] != [id(reader)]:
        return None
    x = operands[0]
    return x, next(name for name in node.inputs if name != x)


def _set_constant(graph: Graph, node: Node, old: str, array: np.ndarray) -> None:
    """Point `node` at a constant holding `array` in place of `old` (a new name if `old` is shared)."""
    value = graph.values[old]
    array = np.ascontiguousarray(array.astype(value.const.dtype))
    if old not in graph.outputs and not any(old in n.inputs for n in graph.nodes if n is not node):
        value.const, value.shape = array, tuple(array.shape)
        return
    new = graph.add_constant(f"{old}_merged", array)
    node.inputs = [new if name == old else name for name in node.inputs]


def _merge_affine(graph: Graph, node: Node, x: str, c: np.ndarray, producers, consumers) -> str | None:
    """Merge `node` (op by constant c, input x) into the constant Mul / Add before it; None if done."""
    prev = producers.get(x)
    step = _const_step(graph, prev, ("Mul", "Add"), node, consumers)
    if step is None:
        return "its input does not come from a Mul or Add by a constant that only it reads"
    y, prev_const = step
    shape = graph.value(y).shape
    first = None  # the Mul before an Add: Mul(Add(Mul(y, a), b), c)
    if node.op_type == "Mul" and prev.op_type == "Add":
        first_step = _const_step(graph, producers.get(y), ("Mul",), prev, consumers)
        if first_step is None:
            return "it scales the output of an Add by a constant that follows no Mul by a constant"
        first = producers[y]
        y, first_const = first_step
        shape = graph.value(y).shape
    elif node.op_type != prev.op_type and not (node.op_type == "Sub" and prev.op_type == "Add"):
        return f"{node.op_type} after {prev.op_type} '{prev.name}' does not merge"
    dtype = graph.value(y).dtype
    constants = [c, graph.value(prev_const).const] + ([graph.value(first_const).const] if first else [])
    if shape is None:
        return f"the shape of '{y}' is unknown"
    if not all(_keeps_shape(k, shape) for k in constants):
        return f"constants of shapes {[k.shape for k in constants]} would broadcast '{y}' ({shape}) to a bigger tensor"
    if dtype is not None and any(k.dtype != dtype for k in constants):
        return f"constants are {[str(k.dtype) for k in constants]} but '{y}' is {dtype}"
    c64 = c.astype(np.float64)
    b64 = graph.value(prev_const).const.astype(np.float64)
    if node.op_type == "Mul" and first is not None:
        _set_constant(graph, first, first_const, graph.value(first_const).const.astype(np.float64) * c64)
        _set_constant(graph, prev, prev_const, b64 * c64)
    elif node.op_type == "Mul":
        _set_constant(graph, prev, prev_const, b64 * c64)
    else:
        _set_constant(graph, prev, prev_const, b64 - c64 if node.op_type == "Sub" else b64 + c64)
    absorb(graph, prev, node)
    return None


@graph_pass("scale folding")
def fold_scales(graph: Graph) -> Graph:
    """Fold Mul / Add / Sub by per-channel constants into the Conv / Gemm / MatMul before them, and
    merge runs of constant Mul / Add into one Mul + Add."""
    for node in [n for n in graph.nodes if n.op_type in OPS and n.domain == ""]:
        operands = split_operands(graph, node)
        if isinstance(operands, str):
            refused(RULE, node.name, operands)
            continue
        x, c = operands
        producers, consumers = graph.producers(), graph.consumers()
        layer, reason = linear_producer(graph, x, node, producers, consumers)
        if layer is not None:
            reason = _fold_into_producer(graph, node, c, layer)
            if reason is None:
                continue
            refused(RULE, node.name, reason)
            continue
        merge_reason = _merge_affine(graph, node, x, c, producers, consumers)
        if merge_reason is not None:
            refused(RULE, node.name, f"{reason}; and {merge_reason}")
    return graph
