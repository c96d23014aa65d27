"""Dead-layer elimination: drop nodes whose results never reach a graph output, and unread weights.

Pattern: a node none of whose outputs is read (transitively) on the way to a graph output, e.g. an
auxiliary classifier head left in an exported graph, or the Shape -> Gather -> Concat chain that
computed a Reshape target which constant folding has since replaced with a constant.

Check: liveness is computed backwards from the graph outputs, so the result is the fixpoint in one
sweep: a node is live when any of its outputs is a graph output or is read by a live node (a node
with several outputs stays when any one of them is used). A graph output's producer is therefore
never removed. Graph inputs stay even when nothing reads them: users bind them by name.

Rewrite: remove the dead nodes (with the Values only they produced), then every weight that no
remaining node reads and that is not itself a graph output.
"""

from __future__ import annotations

from engine.ir import Graph, Node
from engine.passes import graph_pass, log

RULE = "dead-layer elimination"


def live_nodes(graph: Graph) -> list[Node]:
    """The nodes whose results reach a graph output, in graph order."""
    producers = graph.producers()
    live_ids: set[int] = set()
    needed = [name for name in graph.outputs if name]
    seen_values: set[str] = set()
    while needed:
        name = needed.pop()
        if name in seen_values:
            continue
        seen_values.add(name)
        node = producers.get(name)
        if node is None or id(node) in live_ids:
            continue
        live_ids.add(id(node))
        needed.extend(i for i in node.inputs if i and i not in seen_values)
    return [n for n in graph.nodes if id(n) in live_ids]


def remove_dead(graph: Graph) -> tuple[int, int]:
    """Remove dead nodes and unread weights in place; returns (nodes removed, weights removed).

    Shared with constant folding, which leaves the shape chains it made redundant behind."""
    live = live_nodes(graph)
    live_ids = {id(n) for n in live}
    dead = [n for n in graph.nodes if id(n) not in live_ids]
    if dead:
        graph.remove_nodes(dead)
    read = {name for node in graph.nodes for name in node.inputs if name} | set(graph.outputs)
    unread = [v.name for v in graph.constants() if v.name not in read]
    for name in unread:
        del graph.values[name]
    return len(dead), len(unread)


@graph_pass(RULE)
def eliminate_dead_layers(graph: Graph) -> Graph:
    nodes, weights = remove_dead(graph)
    log.info("%s: removed %d node(s) and %d unread weight(s)", RULE, nodes, weights)
    return graph
