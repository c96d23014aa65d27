"""BatchNorm folding: a BatchNormalization after a layer with constant weights disappears into them.

Pattern: a BatchNormalization node (inference form: only its first output is used).

Rule "fold into producer": its input X is the only output of a Conv, ConvTranspose, Gemm (constant
B, constant or no C) or MatMul (constant 2-D B, 2-D output), read by the BN alone and not a graph
output. Rewrite: the producer's weights and bias become W * scale and b * scale + shift per output
channel (engine/weights.py; a bias input is added where there was none, and a MatMul becomes a Gemm
with C = the bias), the BN is removed, and the producer writes the BN's output value (so its
readers, and a graph output of that name, still work). The producer keeps its name; its `members`
gain the BN's ("conv1", "bn1").

Rule "per-channel affine": a BN that cannot fold (its input comes from a Concat, a pooling layer, a
graph input, or is read by others too: DenseNet's pre-activation BNs) becomes Mul by a constant
(C, 1, ..., 1) scale then Add of a constant shift, two plain ONNX nodes named after the BN with
members [bn], which element-wise fusion then merges with what follows. Refused for a BN in training
mode, with its extra outputs in use, with non-constant or mis-shaped parameters, or an input of
unknown rank.

The shared part, "which layer can absorb a per-channel affine map of its output, and how", is
`linear_producer` and `fold_affine`, which engine/passes/scale_folding.py uses too.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from engine import weights
from engine.ir import Graph, Node, Value
from engine.passes import graph_pass, refused

RULE = "batch-norm folding"
LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


# ------------------------------------------------------------------ layers that absorb an affine map

@dataclasses.dataclass
class LinearLayer:
    """A producer whose output channels can absorb y -> y * scale + shift (see `linear_producer`)."""

    node: Node
    rank: int  # rank of its output
    channel_axis: int  # non-negative: 1 for Conv / ConvTranspose / Gemm, the last axis for MatMul
    channels: int
    dtype: np.dtype  # of its weights

    @property
    def can_take_bias(self) -> bool:
        """MatMul has no bias input; one with a 2-D output becomes a Gemm to get one."""
        return self.node.op_type != "MatMul" or self.rank == 2


def _const(graph: Graph, node: Node, index: int) -> np.ndarray | None:
    if len(node.inputs) <= index or not node.inputs[index]:
        return None
    return graph.value(node.inputs[index]).const


def _has_input(node: Node, index: int) -> bool:
    return len(node.inputs) > index and bool(node.inputs[index])


def linear_producer(graph: Graph, x: str, reader: Node, producers: dict[str, Node],
                    consumers: dict[str, list[Node]]) -> tuple[LinearLayer | None, str | None]:
    """The layer that computes `x`, if `reader` is its only reader and it can absorb a per-channel
    affine map; else (None, why not)."""
    if x in graph.inputs:
        return None, f"its input '{x}' is a graph input"
    producer = producers.get(x)
    if producer is None:
        return None, f"its input '{x}' has no producer (a weight)"
    if producer.domain != "" or producer.op_type not in LINEAR_OPS:
        return None, f"its input comes from {producer.op_type} '{producer.name}', which has no weights to fold into"
    if x in graph.outputs:
        return None, f"'{x}' ({producer.op_type} '{producer.name}') is a graph output"
    readers = consumers.get(x, [])
    if len(readers) != 1 or readers[0] is not reader:
        others = sorted({n.name for n in readers if n is not reader})
        return None, f"'{x}' ({producer.op_type} '{producer.name}') is also read by {others}"
    if len([o for o in producer.outputs if o]) != 1:
        return None, f"{producer.op_type} '{producer.name}' has several outputs"
    w = _const(graph, producer, 1)
    if w is None:
        return None, f"the weights of {producer.op_type} '{producer.name}' are not constants"
    if _has_input(producer, 2) and _const(graph, producer, 2) is None:
        return None, f"the bias of {producer.op_type} '{producer.name}' is not a constant"
    if w.dtype.kind != "f":
        return None, f"the weights of {producer.op_type} '{producer.name}' are {w.dtype}, not floating point"
    op = producer.op_type
    if op in ("Conv", "ConvTranspose"):
        if w.ndim < 3:
            return None, f"{op} '{producer.name}' has a weight of shape {w.shape}, not (M, C, k...)"
        group = int(producer.attrs.get("group", 1) or 1)
        if op == "Conv":
            channels = w.shape[0]
        elif group < 1 or w.shape[0] % group:
            return None, f"ConvTranspose '{producer.name}': weight {w.shape} does not split into {group} groups"
        else:
            channels = w.shape[1] * group
        return LinearLayer(producer, w.ndim, 1, int(channels), w.dtype), None
    if op == "Gemm":
        if w.ndim != 2:
            return None, f"Gemm '{producer.name}' has B of shape {w.shape}"
        c = _const(graph, producer, 2)
        if c is not None and c.ndim > 2:
            return None, f"Gemm '{producer.name}' has C of shape {c.shape}"
        channels = w.shape[0] if producer.attrs.get("transB", 0) else w.shape[1]
        return LinearLayer(producer, 2, 1, int(channels), w.dtype), None
    # MatMul
    if w.ndim != 2:
        return None, f"MatMul '{producer.name}' has B of shape {w.shape}; only a 2-D B folds"
    shape = graph.value(producer.inputs[0]).shape
    if shape is None:
        shape = graph.value(x).shape
    if shape is None:
        return None, f"the rank of MatMul '{producer.name}''s input is unknown"
    rank = max(len(shape), 1)
    return LinearLayer(producer, rank, rank - 1, int(w.shape[1]), w.dtype), None


def _replace_weight(graph: Graph, node: Node, index: int, array: np.ndarray, name: str) -> None:
    """Give input `index` of `node` the array: in place where only this node reads the old weight
    (its name is kept), else as a new constant; an old weight nobody reads any more is dropped."""
    old = node.inputs[index] if _has_input(node, index) else ""
    shared = old and (old in graph.outputs or any(
        old in n.inputs for n in graph.nodes if n is not node) or node.inputs.count(old) > 1)
    if old and not shared:
        value = graph.values[old]
        value.const, value.dtype, value.shape = array, array.dtype, tuple(array.shape)
        return
    new = graph.add_constant(name if not old else f"{old}_folded", array)
    while len(node.inputs) <= index:
        node.inputs.append("")
    node.inputs[index] = new


def fold_affine(graph: Graph, layer: LinearLayer, scale=None, shift=None) -> None:
    """Rewrite `layer`'s weights so that it computes y * scale + shift per output channel (scale and
    shift: per-channel vectors, scalars or None). A shift needs `layer.can_take_bias`."""
    node = layer.node
    op = node.op_type
    w = _const(graph, node, 1)
    b = _const(graph, node, 2)
    if op == "Conv":
        new_w, new_b = weights.fold_affine_into_conv(w, b, scale, shift)
    elif op == "ConvTranspose":
        group = int(node.attrs.get("group", 1) or 1)
        new_w, new_b = weights.fold_affine_into_conv_transpose(w, b, scale, shift, group)
    else:
        trans_b = bool(node.attrs.get("transB", 0)) if op == "Gemm" else False
        beta = float(node.attrs.get("beta", 1.0)) if op == "Gemm" else 1.0
        new_w, new_b = weights.fold_affine_into_gemm(w, b, scale, shift, trans_b=trans_b, beta=beta)
        if op == "MatMul" and new_b is not None:
            node.op_type = "Gemm"
            node.attrs = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}
        elif new_b is not None:
            node.attrs["beta"] = 1.0
    _replace_weight(graph, node, 1, new_w, f"{node.name}.weight")
    if new_b is not None:
        _replace_weight(graph, node, 2, new_b, f"{node.name}.bias")


def absorb(graph: Graph, keeper: Node, follower: Node) -> None:
    """Remove `follower`, whose first input is `keeper`'s first output and whose work `keeper` now
    does: `keeper` writes the follower's output value instead and gains its members. The follower's
    constant inputs are dropped where nothing else reads them."""
    old, new = keeper.outputs[0], follower.outputs[0]
    kept, gone = graph.values[new], graph.values[old]
    if kept.shape is None:
        kept.shape = gone.shape
    if kept.dtype is None:
        kept.dtype = gone.dtype
    graph.nodes = [n for n in graph.nodes if n is not follower]
    for name in follower.outputs[1:]:
        if name and name not in graph.outputs:
            graph.values.pop(name, None)
    del graph.values[old]
    keeper.outputs[0] = new
    keeper.members = keeper.members + follower.members
    drop_unused_constants(graph, follower.inputs)


def drop_unused_constants(graph: Graph, names) -> None:
    for name in set(names):
        value = graph.values.get(name)
        if value is None or not value.is_const or name in graph.outputs:
            continue
        if not any(name in n.inputs for n in graph.nodes):
            del graph.values[name]


# ------------------------------------------------------------------ the pass

def check_batch_norm(graph: Graph, bn: Node, consumers: dict[str, list[Node]]) -> str | None:
    """None if `bn` is an inference-form BN with constant per-channel parameters, else why not."""
    if int(bn.attrs.get("training_mode", 0) or 0):
        return "training_mode=1 (it normalises with the batch's own statistics)"
    for name in bn.outputs[1:]:
        if name and (consumers.get(name) or name in graph.outputs):
            return f"its training output '{name}' is used"
    if len(bn.inputs) != 5 or not all(bn.inputs):
        return f"has {len(bn.inputs)} inputs, expected X, scale, B, mean, var"
    params = [graph.value(name).const for name in bn.inputs[1:]]
    if any(p is None for p in params):
        missing = [name for name, p in zip(bn.inputs[1:], params) if p is None]
        return f"parameters {missing} are not constants"
    if any(p.ndim != 1 or p.shape != params[0].shape for p in params):
        return f"parameters have shapes {[p.shape for p in params]}, not one per channel"
    if any(p.dtype.kind != "f" for p in params):
        return f"parameters are {[str(p.dtype) for p in params]}, not floating point"
    shape = graph.value(bn.inputs[0]).shape
    if shape is not None:
        if len(shape) < 2:
            return f"input has shape {shape}, not (N, C, ...)"
        if isinstance(shape[1], int) and shape[1] != params[0].shape[0]:
            return f"input has {shape[1]} channels but the parameters {params[0].shape[0]}"
    return None


def _bn_params(graph: Graph, bn: Node) -> tuple[np.ndarray, ...]:
    return tuple(graph.value(name).const for name in bn.inputs[1:])


def _fold_into_producer(graph: Graph, bn: Node, layer: LinearLayer) -> str | None:
    gamma, beta, mean, var = _bn_params(graph, bn)
    if layer.channel_axis != 1:
        return (f"{layer.node.op_type} '{layer.node.name}' has its channels on axis {layer.channel_axis} of "
                f"{layer.rank}, and BatchNormalization normalises axis 1")
    if not layer.can_take_bias:
        return f"MatMul '{layer.node.name}' has a {layer.rank}-D output and no bias input"
    if layer.channels != gamma.shape[0]:
        return f"{layer.node.op_type} '{layer.node.name}' has {layer.channels} outputs, the BN {gamma.shape[0]} channels"
    eps = float(bn.attrs.get("epsilon", 1e-5))
    scale, shift = weights.batch_norm_affine(gamma, beta, mean, var, eps, dtype=np.float64)
    fold_affine(graph, layer, scale, shift)
    absorb(graph, layer.node, bn)
    return None


def _unique_node_name(graph: Graph, name: str) -> str:
    taken = {n.name for n in graph.nodes}
    unique, i = name, 0
    while unique in taken:
        i += 1
        unique = f"{name}_{i}"
    return unique


def _unique_value_name(graph: Graph, name: str) -> str:
    unique, i = name, 0
    while unique in graph.values:
        i += 1
        unique = f"{name}_{i}"
    return unique


def _to_affine(graph: Graph, bn: Node) -> str | None:
    """Replace `bn` by Mul(X, scale) -> Add(shift); None, or why it cannot."""
    x, y = bn.inputs[0], bn.outputs[0]
    x_value = graph.value(x)
    shape = x_value.shape if x_value.shape is not None else graph.value(y).shape
    if shape is None:
        return "the rank of its input is unknown (the scale needs shape (C, 1, ..., 1))"
    gamma, beta, mean, var = _bn_params(graph, bn)
    dtype = x_value.dtype or graph.value(y).dtype or gamma.dtype
    if np.dtype(dtype).kind != "f":
        return f"its input is {np.dtype(dtype)}, not floating point"
    eps = float(bn.attrs.get("epsilon", 1e-5))
    scale, shift = weights.batch_norm_affine(gamma, beta, mean, var, eps, dtype=dtype)
    trailing = (1,) * (len(shape) - 2)
    scale_name = graph.add_constant(f"{bn.name}.scale", scale.reshape(scale.shape + trailing))
    shift_name = graph.add_constant(f"{bn.name}.shift", shift.reshape(shift.shape + trailing))
    mid = _unique_value_name(graph, f"{y}_scaled")
    graph.values[mid] = Value(mid, np.dtype(dtype), shape)
    mul = Node(_unique_node_name(graph, f"{bn.name}_mul"), "Mul", [x, scale_name], [mid], members=list(bn.members))
    add = Node(_unique_node_name(graph, f"{bn.name}_add"), "Add", [mid, shift_name], [y], members=list(bn.members))
    at = next(i for i, n in enumerate(graph.nodes) if n is bn)
    graph.nodes[at:at + 1] = [mul, add]
    for name in bn.outputs[1:]:
        if name and name not in graph.outputs:
            graph.values.pop(name, None)
    drop_unused_constants(graph, bn.inputs[1:])
    return None


@graph_pass("batch-norm folding")
def fold_batch_norm(graph: Graph) -> Graph:
    """Fold every inference BatchNormalization into the Conv / Gemm / MatMul before it, or else turn
    it into a per-channel Mul + Add."""
    for bn in [n for n in graph.nodes if n.op_type == "BatchNormalization" and n.domain == ""]:
        consumers = graph.consumers()
        reason = check_batch_norm(graph, bn, consumers)
        if reason is not None:
            refused(RULE, bn.name, reason)
            continue
        layer, reason = linear_producer(graph, bn.inputs[0], bn, graph.producers(), consumers)
        if layer is not None:
            reason = _fold_into_producer(graph, bn, layer)
            if reason is None:
                continue
        refused(RULE, bn.name, f"not folded into its producer: {reason}; trying a per-channel Mul + Add")
        reason = _to_affine(graph, bn)
        if reason is not None:
            refused("batch-norm to affine", bn.name, reason)
    return graph
