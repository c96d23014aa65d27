"""Chains of element-wise ops -> one ElementwiseChain layer.

    x -> Mul(., scale) -> Add(., shift) -> Relu -> y     (DenseNet's BatchNorm-as-affine + ReLU)
        ==>  ElementwiseChain(x, scale, shift) {steps: [["Mul-7", [-1, 1], {}],
                                                        ["Add-7", [-1, 2], {}],
                                                        ["Relu-6", [-1], {}]]} -> y

A chain is maximal: it starts at the first eligible node (in node order) and grows while the
running value has a single reader (possibly reading it twice, as in Mul(v, v)), is not a graph
output, and that reader is eligible:
- unary element-wise ops (activations, Exp, Log, Sqrt, Neg, Abs, Erf, Clip...), which keep the shape;
- binary Add/Sub/Mul/Div/Max/Min/Pow/PRelu (and a two-input Sum) whose other operand is a
  constant or any value computed outside the chain, as long as the result keeps the running
  value's shape (broadcasting the operand, never the running value), known from the graph's shapes.
The fused node takes the place of the chain's last node, where every operand is already computed,
so any outside value will do. Chains of one node stay as they are. Steps name the numpy registry's
kernels (OpKernel.key at the graph's opset); their attributes must be plain JSON values.
"""

from __future__ import annotations

import numpy as np

from engine.ir import Graph, Node
from engine.passes import FUSED_DOMAIN, graph_pass, refused
from engine.passes.conv_fusion import replace_chain
from kernels.cpu import CPU_OPS

RULE = "element-wise fusion"

UNARY_OPS = frozenset({
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu", "Softplus",
    "Softsign", "ThresholdedRelu", "Mish", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs",
    "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Clip",
})
BINARY_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "PRelu", "Sum"})  # variadic: 2 inputs


@graph_pass("element-wise fusion")
def fuse_elementwise_chains(graph: Graph) -> Graph:
    chained: set[int] = set()
    for start in list(graph.nodes):
        if id(start) in chained or not _eligible(graph, start):
            continue
        plan = _plan(graph, start)
        if isinstance(plan, str):
            refused(RULE, start.name, plan)
            continue
        members, inputs, steps = plan
        chained.update(id(m) for m in members)
        fused = Node(start.name, "ElementwiseChain", inputs, [members[-1].outputs[0]], {"steps": steps},
                     domain=FUSED_DOMAIN, members=[name for m in members for name in m.members])
        replace_chain(graph, members, fused)
    return graph


def _eligible(graph: Graph, node: Node) -> bool:
    return (node.domain == "" and len(node.outputs) == 1 and node.op_type in UNARY_OPS | BINARY_OPS
            and CPU_OPS.lookup(node.op_type, graph.opset) is not None)


def _plan(graph: Graph, start: Node):
    """(members, fused inputs, steps) of the maximal chain that starts at `start`, or why none."""
    running = _running_input(graph, start)
    if running is None:
        return "no input of the first node has the output's shape"
    x_value = graph.values.get(running)
    shape = x_value.shape if x_value is not None and x_value.shape is not None else graph.value(start.outputs[0]).shape
    inputs = [running]
    steps: list = []
    step = _step(graph, start, running, shape, inputs)
    if isinstance(step, str):
        return step
    steps.append(step)
    members = [start]
    uses = graph.consumers()
    stopped = ""
    while True:
        current = members[-1].outputs[0]
        if current in graph.outputs:
            stopped = f"'{current}' is a graph output"
            break
        readers = uses.get(current, [])
        if not readers or any(r is not readers[0] for r in readers):
            stopped = f"'{current}' has {len({id(r) for r in readers})} consumers"
            break
        nxt = readers[0]
        if not _eligible(graph, nxt):
            stopped = f"its consumer '{nxt.name}' ({nxt.op_type}) is not element-wise"
            break
        step = _step(graph, nxt, current, shape, inputs)
        if isinstance(step, str):
            stopped = step
            break
        steps.append(step)
        members.append(nxt)
    if len(members) == 1:
        return f"a chain of one node ({stopped})"
    return members, inputs, steps


def _running_input(graph: Graph, node: Node) -> str | None:
    """Which input of a chain's first node is the running value X: one with the output's shape."""
    candidates = [node.inputs[0]] if node.op_type in UNARY_OPS or node.op_type == "PRelu" else node.inputs[:2]
    out = graph.values.get(node.outputs[0])
    for name in candidates:
        value = graph.values.get(name) if name else None
        if value is None:
            continue
        if node.op_type in UNARY_OPS and not value.is_const:
            return name
        if not value.is_const and value.shape is not None and out is not None and out.shape is not None \
                and tuple(value.shape) == tuple(out.shape):
            return name
    return None


def _step(graph: Graph, node: Node, running: str, shape, inputs: list[str]) -> list | str:
    """[kernel_key, operand_inputs, attrs] for one node, adding its operands to `inputs`; or why not."""
    kernel = CPU_OPS.lookup(node.op_type, graph.opset)
    attrs = _plain(node.attrs)
    if attrs is None:
        return f"'{node.name}' has attributes that are not plain values"
    names = list(node.inputs)
    while names and names[-1] == "":
        names.pop()
    if "" in names:
        return f"'{node.name}' omits an optional input before a given one"
    if node.op_type in BINARY_OPS and len(names) != 2:
        return f"'{node.name}' ({node.op_type}) has {len(names)} inputs, not 2"
    if node.op_type == "PRelu" and names[0] != running:
        return f"'{node.name}' reads the running value as its slope"
    refs, operands = [], list(inputs[1:])  # committed to `inputs` only if the whole step fits
    for position, name in enumerate(names):
        if name == running:
            refs.append(-1)
            continue
        if position == 0 and node.op_type in UNARY_OPS:
            return f"'{node.name}' does not read the running value as its data input"
        problem = _operand_problem(graph, node, name, running, shape)
        if problem:
            return f"'{node.name}': {problem}"
        # Input 0 of the fused node is X; an operand (X included) gets an input k >= 1 of its own.
        if name not in operands:
            operands.append(name)
        refs.append(1 + operands.index(name))
    inputs[1:] = operands
    return [kernel.key, refs, attrs]


def _operand_problem(graph: Graph, node: Node, name: str, running: str, shape) -> str | None:
    """None if the step's result keeps the running value's shape and element type."""
    value = graph.values.get(name)
    if value is None or value.shape is None:
        return f"the shape of operand '{name}' is unknown"
    if shape is None:
        return "the running value's shape is unknown"
    other = tuple(value.shape)
    if len(other) > len(shape) or any(o != 1 and o != s for o, s in zip(other[::-1], tuple(shape)[::-1])):
        return f"operand '{name}' of shape {other} would change the running shape {tuple(shape)}"
    mine = graph.values.get(running)
    if node.op_type == "Pow" and node.inputs[0] == running:
        return None  # the result has the base's type, whatever the exponent's
    if mine is not None and mine.dtype is not None and value.dtype is not None and mine.dtype != value.dtype:
        return f"operand '{name}' is {value.dtype}, the running value {mine.dtype}"
    return None


def _plain(attrs: dict) -> dict | None:
    """The attributes as plain JSON values (numpy scalars unwrapped), or None if some are not."""
    def plain(v):
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, (list, tuple)):
            return [plain(i) for i in v]
        raise TypeError(type(v).__name__)

    try:
        return {k: plain(v) for k, v in attrs.items()}
    except TypeError:
        return None
