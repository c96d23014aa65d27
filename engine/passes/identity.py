"""Identity removal: Identity nodes, and Dropout at inference, pass their input through unchanged.

Pattern: an `Identity` node, or a `Dropout` node (default domain) in inference mode.

Check: a Dropout is in inference mode when it can never drop anything: before opset 12 the engine's
Dropout is always the inference one; from Dropout-12 on, the `training_mode` input must be absent or
a constant False. Its mask output (which a reader might use) must be unused and not a graph output.
When the node's output is a graph output, its input's value will take the output's name; that is
refused when the input is a graph input, a weight or another graph output (those names are bound
or shared, so the node stays as a copy).

Rewrite: readers of the output read the input instead (Graph.replace_uses). When the output is a
graph output, the input's value is renamed to the output's name instead (Graph.rename_value), so its
producer writes the graph output directly.
"""

from __future__ import annotations

import numpy as np

from engine.ir import Graph, Node
from engine.passes import graph_pass, log, refused
from kernels.cpu import CPU_OPS

RULE = "identity removal"


def _check(graph: Graph, node: Node, consumers: dict) -> str | None:
    if node.domain != "" or node.op_type not in ("Identity", "Dropout"):
        return "not an Identity or Dropout"
    if not node.inputs or not node.inputs[0] or not node.outputs or not node.outputs[0]:
        return "no data input or output"
    if node.op_type == "Dropout":
        mask = node.outputs[1] if len(node.outputs) > 1 else ""
        if mask and (consumers.get(mask) or mask in graph.outputs):
            return f"its mask output '{mask}' is used"
        kernel = CPU_OPS.lookup("Dropout", graph.opset)
        if kernel is not None and kernel.since >= 12:
            training = node.inputs[2] if len(node.inputs) > 2 else ""
            if training:
                value = graph.values.get(training)
                if value is None or not value.is_const:
                    return f"training_mode '{training}' is computed, not a constant"
                if np.asarray(value.const).size != 1 or bool(np.asarray(value.const).reshape(-1)[0]):
                    return "training_mode is True (training-mode dropout is random)"
    x, y = node.inputs[0], node.outputs[0]
    if y in graph.outputs:
        if x in graph.inputs:
            return f"output '{y}' is a graph output and its input '{x}' is a graph input"
        if x in graph.outputs:
            return f"output '{y}' is a graph output and its input '{x}' is another graph output"
        if x in graph.values and graph.values[x].is_const:
            return f"output '{y}' is a graph output and its input '{x}' is a weight"
        if graph.outputs.count(y) > 1:
            return f"output '{y}' is listed as a graph output more than once"
    return None


def _rewrite(graph: Graph, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    graph.nodes = [n for n in graph.nodes if n is not node]
    for name in node.outputs[1:]:  # an unused Dropout mask
        if name and name not in graph.outputs:
            graph.values.pop(name, None)
    if y in graph.outputs:
        # The graph output keeps its name: x's producer now writes it.
        out_value = graph.values.pop(y)
        graph.rename_value(x, y)
        merged = graph.values[y]
        if merged.dtype is None:
            merged.dtype = out_value.dtype
        if merged.shape is None:
            merged.shape = out_value.shape
    else:
        graph.replace_uses(y, x)
        graph.values.pop(y, None)


@graph_pass(RULE)
def remove_identities(graph: Graph) -> Graph:
    removed = 0
    for node in list(graph.nodes):
        if node.domain != "" or node.op_type not in ("Identity", "Dropout"):
            continue
        reason = _check(graph, node, graph.consumers())
        if reason is not None:
            refused(RULE, node.name, reason)
            continue
        _rewrite(graph, node)
        removed += 1
    log.info("%s: removed %d node(s)", RULE, removed)
    return graph
