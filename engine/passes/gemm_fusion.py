"""Vertical fusion of fully connected layers into FusedGemm.

    Gemm(A, B, C?) (+ Add(., bias const) when C is omitted) (+ activation) -> y
        ==>  FusedGemm(A, B, C') {alpha, beta, transA, transB, activation, activation_params} -> y
    MatMul(A 2-D, B const 2-D) (+ Add(., bias const)) (+ activation) -> y
        ==>  FusedGemm(A, B, bias) {transB=0, ...} -> y

A bias must broadcast along the rows only: shape (N,), (1, N), (1,) or a scalar, N being the
output features; the constant is used as it is (Gemm's C broadcasts the same way). Activations are
those of kernels/cpu/activations.py (see conv_fusion.match_activation). Each link needs a single
consumer and no graph output in the middle; a Gemm or MatMul with nothing to fuse stays as it is.
Only floating-point layers are fused (the activations are float math).
"""

from __future__ import annotations

import numpy as np

from engine.ir import Graph, Node
from engine.passes import FUSED_DOMAIN, graph_pass, refused
from engine.passes.conv_fusion import ADD_OPS, replace_chain, sole_consumer, take_activation

RULE = "gemm fusion"
GEMM_ATTRS = ("alpha", "beta", "transA", "transB")


@graph_pass("gemm fusion")
def fuse_gemm_activation(graph: Graph) -> Graph:
    for node in [n for n in graph.nodes if n.op_type in ("Gemm", "MatMul") and n.domain == ""]:
        plan = _plan(graph, node)
        if isinstance(plan, str):
            refused(RULE, node.name, plan)
            continue
        members, inputs, attrs, output = plan
        fused = Node(node.name, "FusedGemm", inputs, [output], attrs, domain=FUSED_DOMAIN,
                     members=[name for m in members for name in m.members])
        replace_chain(graph, members, fused)
    return graph


def _plan(graph: Graph, node: Node):
    """(members, inputs, attrs, output) of the FusedGemm, or why not."""
    if len(node.inputs) < 2 or not all(node.inputs[:2]) or len(node.outputs) != 1:
        return "not a product of two inputs with one output"
    a, b = graph.values.get(node.inputs[0]), graph.values.get(node.inputs[1])
    if a is None or b is None:
        return "an operand has no Value entry"
    dtype = a.dtype if a.dtype is not None else b.dtype
    if dtype is None or np.dtype(dtype).kind != "f":
        return f"element type {dtype} is not a known floating-point type"
    if node.op_type == "MatMul":
        if a.shape is None or len(a.shape) != 2:
            return f"A's shape {a.shape} is not known to be 2-D"
        if not b.is_const or b.const.ndim != 2:
            return "B is not a constant matrix"
        attrs = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}
        features = b.const.shape[1]
        bias = ""
    else:
        attrs = {k: v for k, v in node.attrs.items() if k in GEMM_ATTRS}
        bias = node.inputs[2] if len(node.inputs) > 2 else ""
        features = _gemm_features(b, attrs)

    uses = graph.consumers()
    members, current = [node], node.outputs[0]
    stopped = ""
    add = sole_consumer(graph, uses, current)
    if not bias and isinstance(add, Node) and add.op_type in ADD_OPS and add.domain == "" and len(add.inputs) == 2:
        other = add.inputs[1] if add.inputs[0] == current else add.inputs[0]
        constant = graph.values.get(other)
        reason = _bias_problem(constant, features, dtype) if other != current else "adds its own output"
        if reason:
            stopped = f"add '{add.name}': {reason}"
        else:
            bias = other
            attrs["beta"] = 1.0
            members.append(add)
            current = add.outputs[0]

    activation, current, stopped = take_activation(graph, uses, current, members, stopped)
    if len(members) == 1:
        return f"nothing to fuse ({stopped})"
    attrs["activation"] = activation.name if activation else ""
    attrs["activation_params"] = list(activation.params) if activation else []
    inputs = [node.inputs[0], node.inputs[1]] + ([bias] if bias else [])
    return members, inputs, attrs, current


def _gemm_features(b, attrs: dict) -> int | None:
    """The Gemm's output features N (None when B's shape is unknown)."""
    if b.shape is None or len(b.shape) != 2:
        return None
    n = b.shape[0] if attrs.get("transB", 0) else b.shape[1]
    return n if isinstance(n, int) else None


def _bias_problem(constant, features: int | None, dtype) -> str | None:
    """None if the constant is a bias over the output features (broadcast along rows only)."""
    if constant is None or not constant.is_const:
        return "the other operand is not a constant"
    array = constant.const
    if array.dtype != dtype:
        return f"bias of type {array.dtype}, product of {dtype}"
    if features is None:
        return "the output features are unknown"
    if array.ndim > 2 or array.size not in (1, features) or (array.ndim == 2 and array.shape[0] != 1) \
            or (array.ndim >= 1 and array.shape[-1] not in (1, features)):
        return f"constant of shape {array.shape} is not a bias over {features} features"
    return None
