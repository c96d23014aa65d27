"""Vertical fusion: Conv (+ bias Add) (+ residual Add) (+ activation) -> one FusedConv.

    Conv(x, W, B?) -> Add(., bias const)? -> Add(., other)? -> activation? -> y
        ==>  FusedConv(x, W, B', other?) {activation, activation_params, residual} -> y

Run after BN/scale folding, so that `Conv -> BN -> Relu` arrives here as `Conv(bias) -> Relu`.

- bias: an Add of a constant that varies only along the output channels (shapes (M,1,1), (1,M,1,1),
  a scalar...) is summed into the conv's bias (in float64, cast back), whether or not the conv has one.
- residual: an Add of another tensor with exactly the conv output's shape (ResNet's shortcut)
  becomes input Z. When both operands of the Add are outputs of single-consumer convs, the conv
  whose own input is private takes it (see _residual_preference), else the later one. The fused
  node takes the place of the chain's last node, where every input of the chain is computed.
- activation: one of kernels/cpu/activations.py's ONNX_ACTIVATIONS (Clip only with constant bounds),
  or the two-node SiLU pattern Mul(v, Sigmoid(v)).

A two-input Sum counts as an Add (older Caffe2 exports write ResNet's shortcut so). Every link
needs the value it fuses across to have a single consumer and not be a graph output; the chain's
final value keeps its name (it may be a graph output). A Conv with nothing to fuse stays a Conv.

The helpers at the bottom (sole_consumer, match_activation, replace_chain) are shared with
gemm_fusion and elementwise_fusion.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from engine.ir import Graph, Node
from engine.passes import FUSED_DOMAIN, graph_pass, refused
from kernels.cpu import CPU_OPS
from kernels.cpu.activations import activation_from_onnx

RULE = "conv fusion"
CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
ADD_OPS = ("Add", "Sum")  # a Sum of two inputs (older Caffe2 exports) is an Add


@graph_pass("conv fusion")
def fuse_conv_activation(graph: Graph) -> Graph:
    for conv in [n for n in graph.nodes if n.op_type == "Conv" and n.domain == ""]:
        plan = _plan(graph, conv)
        if isinstance(plan, str):
            refused(RULE, conv.name, plan)
            continue
        members, inputs, attrs, output = plan
        fused = Node(conv.name, "FusedConv", inputs, [output], attrs, domain=FUSED_DOMAIN,
                     members=[name for m in members for name in m.members])
        replace_chain(graph, members, fused)
        drop_unused_constants(graph, [name for m in members for name in m.inputs])
    return graph


def _plan(graph: Graph, conv: Node):
    """(members, inputs, attrs, output) of the FusedConv this conv grows into, or why not."""
    if len(conv.inputs) < 2 or not conv.inputs[1] or len(conv.outputs) != 1:
        return "not a Conv(X, W) with one output"
    weight = graph.values.get(conv.inputs[1])
    if weight is None or weight.shape is None or len(weight.shape) < 3 or not isinstance(weight.shape[0], int):
        return "the weight's shape is unknown"
    rank, channels = len(weight.shape), weight.shape[0]
    uses = graph.consumers()
    members, current = [conv], conv.outputs[0]
    bias = conv.inputs[2] if len(conv.inputs) > 2 else ""
    added = None  # the per-channel constants to add to the bias, summed in float64
    residual, stopped = "", ""

    # Adds: per-channel constants fold into the bias; then one Add of a same-shape tensor is Z.
    while True:
        add = sole_consumer(graph, uses, current)
        if isinstance(add, str) or add.op_type not in ADD_OPS or add.domain != "":
            break
        other = _other_operand(add, current)
        constant = graph.values.get(other) if other else None
        vector = None
        if not residual and constant is not None and constant.is_const:
            vector = _channel_vector(constant.const, rank, channels, weight.dtype)
        if isinstance(vector, np.ndarray) and (not bias or graph.values[bias].is_const):
            added = vector.astype(np.float64) + (0.0 if added is None else added)
            added_dtype = constant.const.dtype
        elif not residual:
            reason = _residual_problem(graph, uses, conv, current, other)
            if reason:
                not_bias = f"{vector}; " if isinstance(vector, str) else ""
                stopped = f"add '{add.name}': {not_bias}{reason}"
                break
            residual = other
        else:
            stopped = f"add '{add.name}' follows the residual add"
            break
        members.append(add)
        current = add.outputs[0]

    activation, current, stopped = take_activation(graph, uses, current, members, stopped)
    if len(members) == 1:
        return f"nothing to fuse ({stopped})"

    if added is not None:
        bias = _merged_bias(graph, conv, bias, added, added_dtype)
    attrs = {k: v for k, v in conv.attrs.items() if k in CONV_ATTRS}
    attrs["activation"] = activation.name if activation else ""
    attrs["activation_params"] = list(activation.params) if activation else []
    attrs["residual"] = 1 if residual else 0
    inputs = [conv.inputs[0], conv.inputs[1], bias]
    if residual:
        inputs.append(residual)
    while inputs[-1] == "":
        inputs.pop()
    return members, inputs, attrs, current


def _other_operand(add: Node, value: str) -> str | None:
    """The Add's operand that is not `value` (None when both are `value` or the Add is malformed)."""
    if len(add.inputs) != 2 or len(add.outputs) != 1:
        return None
    a, b = add.inputs
    if a == value and b != value:
        return b
    if b == value and a != value:
        return a
    return None


def _channel_vector(array: np.ndarray, rank: int, channels: int, dtype) -> np.ndarray | str:
    """The constant as an (M,) vector if adding it to an (N, M, ...) conv output is a per-channel
    bias (shape (M,1,1), (1,M,1,1), a scalar...), else why not."""
    if dtype is not None and array.dtype != dtype:
        return f"constant of type {array.dtype}, conv of {dtype}"
    if array.ndim > rank:
        return f"constant of shape {array.shape} grows the rank-{rank} conv output"
    for axis, size in zip(range(rank - array.ndim, rank), array.shape):
        if size != 1 and not (axis == 1 and size == channels):
            return f"constant of shape {array.shape} is not a per-channel bias for {channels} channels"
    return np.broadcast_to(array.reshape(-1), (channels,))


def _merged_bias(graph: Graph, conv: Node, bias: str, added: np.ndarray, dtype) -> str:
    """A new constant: the conv's bias (if any) plus `added` (float64), in the weights' dtype."""
    total = added
    if bias:
        total = total + graph.values[bias].const.astype(np.float64).reshape(-1)
    return graph.add_constant(f"{conv.name}.fused_bias", total.astype(dtype))


def _residual_problem(graph: Graph, uses, conv: Node, current: str, other: str | None) -> str | None:
    """None if `other` can be the residual input Z of the fused conv, else why not."""
    if not other:
        return "both operands are the conv's own output"
    here, there = graph.values.get(current), graph.values.get(other)
    if here is None or there is None or here.shape is None or there.shape is None:
        return "the operands' shapes are unknown"
    if tuple(here.shape) != tuple(there.shape):
        return f"the other operand's shape {tuple(there.shape)} differs from the conv output's {tuple(here.shape)}"
    if here.dtype is not None and there.dtype is not None and here.dtype != there.dtype:
        return f"the other operand is {there.dtype}, the conv output {here.dtype}"
    producer = next((n for n in graph.nodes if other in n.outputs), None)
    if (producer is not None and producer.op_type == "Conv" and producer.domain == ""
            and not isinstance(sole_consumer(graph, uses, other), str)
            and _residual_preference(graph, uses, producer) > _residual_preference(graph, uses, conv)):
        return f"the other operand comes from conv '{producer.name}', which takes the add instead"
    return None


def _residual_preference(graph: Graph, uses, conv: Node) -> tuple[int, int]:
    """Which of two convs feeding one Add should absorb it. First choice: the conv whose input no
    other node reads (ResNet's branch 2c), so the other (the projection shortcut, which shares the
    block input with branch 2a) stays a plain sibling for horizontal fusion. Then: the later one."""
    private_input = int(len(uses.get(conv.inputs[0], [])) == 1)
    return private_input, _position(graph, conv)


def _position(graph: Graph, node: Node) -> int:
    return next(i for i, n in enumerate(graph.nodes) if n is node)


# ----------------------------------------------------------------------------------------------
# Shared with gemm_fusion and elementwise_fusion


def sole_consumer(graph: Graph, uses, value: str) -> Node | str:
    """The one node that reads `value`, or why fusing across it is not safe."""
    if value in graph.outputs:
        return f"'{value}' is a graph output"
    readers = uses.get(value, [])
    if len(readers) != 1:
        return f"'{value}' has {len(readers)} consumers"
    return readers[0]


@dataclasses.dataclass
class ActivationMatch:
    nodes: list[Node]  # the activation's nodes in order (two for SiLU)
    output: str  # the activation's output value
    name: str
    params: list[float]


def take_activation(graph: Graph, uses, current: str, members: list[Node], stopped: str | None):
    """End of a vertical chain: absorb the activation `current` flows into, if the chain did not stop
    earlier and it is fusable. Returns (activation or None, the chain's new output, why it stopped)."""
    if stopped:
        return None, current, stopped
    activation = match_activation(graph, uses, current)
    if isinstance(activation, str):
        return None, current, activation
    members.extend(activation.nodes)
    return activation, activation.output, None


def match_activation(graph: Graph, uses, value: str) -> ActivationMatch | str:
    """The activation that `value` flows into, if it is fusable, else why not."""
    if value in graph.outputs:
        return f"'{value}' is a graph output"
    readers = uses.get(value, [])
    if len(readers) == 2:
        silu = _match_silu(graph, uses, value, readers)
        if silu is not None:
            return silu
    if len(readers) != 1:
        return f"'{value}' has {len(readers)} consumers"
    node = readers[0]
    if node.domain != "" or len(node.outputs) != 1 or not node.inputs or node.inputs[0] != value:
        return f"its consumer '{node.name}' ({node.op_type}) is not an activation"
    bounds = None
    if node.op_type == "Clip" and CPU_OPS.lookup("Clip", graph.opset).since >= 11:
        bounds = []
        for name in node.inputs[1:3]:
            bound = graph.values.get(name) if name else None
            if name and (bound is None or not bound.is_const):
                return f"Clip '{node.name}' has a computed bound '{name}'"
            bounds.append(bound.const if bound is not None else None)
    elif node.op_type == "Clip" and len([i for i in node.inputs if i]) > 1:
        return f"Clip '{node.name}' has bound inputs before opset 11"
    found = activation_from_onnx(node.op_type, node.attrs, bounds)
    if found is None:
        return f"its consumer '{node.name}' ({node.op_type}) is not a fusable activation"
    return ActivationMatch([node], node.outputs[0], found[0], found[1])


def _match_silu(graph: Graph, uses, value: str, readers: list[Node]) -> ActivationMatch | None:
    """Mul(v, Sigmoid(v)) (either operand order): v's two readers are the Sigmoid and the Mul."""
    sigmoid = next((n for n in readers if n.op_type == "Sigmoid" and n.domain == ""), None)
    mul = next((n for n in readers if n.op_type == "Mul" and n.domain == ""), None)
    if sigmoid is None or mul is None or len(sigmoid.outputs) != 1 or len(mul.outputs) != 1:
        return None
    gate = sigmoid.outputs[0]
    if sorted(mul.inputs) != sorted([value, gate]) or sole_consumer(graph, uses, gate) is not mul:
        return None
    return ActivationMatch([sigmoid, mul], mul.outputs[0], "SiLU", [])


def drop_unused_constants(graph: Graph, names) -> None:
    """Forget constants among `names` that no node reads any more (a bias merged into a new one)."""
    candidates = {n for n in names if n and n in graph.values and graph.values[n].is_const}
    if not candidates:
        return
    read = {i for node in graph.nodes for i in node.inputs}
    for name in candidates - read - set(graph.outputs):
        del graph.values[name]


def replace_chain(graph: Graph, members: list[Node], fused: Node) -> None:
    """Put `fused` where the chain's last node was and drop the other members.

    The last node's position is safe: every input of every member is computed before it, and the
    values between members have no readers outside the chain. Members are in chain order, each
    reading the one before, so the last member is also the last in the node order.
    """
    graph.opsets.setdefault(FUSED_DOMAIN, 1)
    last = next(i for i, n in enumerate(graph.nodes) if n is members[-1])
    graph.nodes[last] = fused
    graph.remove_nodes(members[:-1])
