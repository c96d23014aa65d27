"""Concat elision: a Concat whose inputs can be written in place into its output buffer.

Pattern: a Concat node. Check (each refusal logged with its reason): every input is produced by a
node of this graph (not a graph input, not a weight), is read by this Concat only and only once,
is not a graph output, is not produced by a view op (its buffer belongs to someone else) nor by
another elided Concat (whose buffer is itself a slice), and all inputs have known shapes that agree
on every axis but `axis`, whose sizes are fixed integers.

Rewrite: `attrs["elided"] = 1` on the Concat, nothing else. The memory planner then gives each
producer a slice of the Concat's output buffer to write into, so no copy happens and the Concat
runs no kernel (`layer_count` does not count it). A runtime without that planner executes the
node as a plain Concat, which computes the same result.
"""

from __future__ import annotations

from engine.ir import Graph, Node
from engine.passes import VIEW_OPS, graph_pass, log, refused

RULE = "concat elision"


def check(graph: Graph, concat: Node, producers: dict[str, Node], consumers: dict[str, list[Node]]) -> str | None:
    """None if `concat` may be elided, else why not."""
    inputs = concat.inputs
    if not inputs or any(not name for name in inputs):
        return "has an omitted input"
    if len(set(inputs)) != len(inputs):
        repeated = sorted({name for name in inputs if inputs.count(name) > 1})
        return f"reads {repeated} more than once"
    for name in inputs:
        value = graph.value(name)
        if name in graph.inputs:
            return f"input '{name}' is a graph input"
        if value.is_const:
            return f"input '{name}' is a weight"
        producer = producers.get(name)
        if producer is None:
            return f"input '{name}' has no producer in this graph"
        if name in graph.outputs:
            return f"input '{name}' is a graph output"
        readers = consumers.get(name, [])
        if len(readers) != 1:
            others = sorted(n.name for n in readers if n is not concat)
            return f"input '{name}' is also read by {others}"
        if producer.op_type in VIEW_OPS:
            return f"input '{name}' is produced by view op '{producer.name}' ({producer.op_type})"
        if producer.op_type == "Concat" and producer.attrs.get("elided"):
            return f"input '{name}' is produced by elided concat '{producer.name}'"
    shapes = [graph.value(name).shape for name in inputs]
    if any(s is None for s in shapes):
        unknown = [name for name, s in zip(inputs, shapes) if s is None]
        return f"shapes of {unknown} are unknown"
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        return f"inputs differ in rank: {shapes}"
    axis = int(concat.attrs.get("axis", 0))
    if not -rank <= axis < rank:
        return f"axis {axis} is out of range for rank {rank}"
    axis %= rank
    for i in range(rank):
        if i != axis and len({s[i] for s in shapes}) > 1:
            return f"input shapes {shapes} differ on axis {i}, not only on the concat axis {axis}"
    if not all(isinstance(s[axis], int) for s in shapes):
        return f"sizes along the concat axis are not all fixed: {[s[axis] for s in shapes]}"
    return None


@graph_pass("concat elision")
def elide_concats(graph: Graph) -> Graph:
    """Mark every Concat whose producers can write straight into its output as `elided`."""
    producers = graph.producers()
    consumers = graph.consumers()
    concats = elided = 0
    for node in graph.nodes:
        if node.domain != "" or node.op_type != "Concat" or node.attrs.get("elided"):
            continue
        concats += 1
        reason = check(graph, node, producers, consumers)
        if reason is not None:
            refused(RULE, node.name, reason)
            continue
        node.attrs["elided"] = 1
        elided += 1
    log.info("concat elision: elided %d of %d concat(s)", elided, concats)
    return graph
