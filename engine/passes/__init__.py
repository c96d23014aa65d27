"""Graph -> Graph optimization passes, one per file, and the manager that runs them.

A pass is a function decorated with `@graph_pass("readable name")` that rewrites the Graph in place
and returns it. Rules inside a pass follow pattern / check / rewrite: `check` returns None to accept
or a short reason to refuse ("conv output has 2 consumers"), and refusals are logged at debug
level, so `batchscore build -v` can say why a fusion did not fire.

Fused layers are nodes of domain "batchscore" (FusedConv, FusedGemm, ElementwiseChain; see
kernels/cpu/fused.py for their contracts), with `members` naming the source nodes they replace.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

from engine.errors import BuildError
from engine.ir import Graph, GraphError

log = logging.getLogger("batchscore.build")

FUSED_DOMAIN = "batchscore"
# Ops that never run a kernel once memory is planned: their output is a view of their input.
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


@dataclasses.dataclass(frozen=True)
class GraphPass:
    name: str
    fn: Callable[[Graph], Graph]

    def __call__(self, graph: Graph) -> Graph:
        return self.fn(graph)


def graph_pass(name: str) -> Callable[[Callable[[Graph], Graph]], GraphPass]:
    def decorator(fn: Callable[[Graph], Graph]) -> GraphPass:
        return GraphPass(name, fn)

    return decorator


def refused(rule: str, node_name: str, reason: str) -> None:
    """Log why a rule did not fire on a node (visible with `batchscore build -v -v`)."""
    log.debug("%s: %s not rewritten: %s", rule, node_name, reason)


def layer_count(graph: Graph) -> int:
    """Layers that run a kernel: views and concats whose producers write in place do not."""
    return sum(1 for n in graph.nodes if not (n.op_type in VIEW_OPS or n.attrs.get("elided")))


def run_passes(graph: Graph, passes: list[GraphPass]) -> Graph:
    """Run passes in order; after each, check the graph and log the layer count."""
    log.info("before optimization: %d layers", layer_count(graph))
    for p in passes:
        try:
            graph = p(graph)
        except BuildError:
            raise
        except Exception as exc:
            raise BuildError(f"optimization pass '{p.name}' failed: {type(exc).__name__}: {exc}") from exc
        try:
            graph.validate()
        except GraphError as exc:
            raise BuildError(f"optimization pass '{p.name}' broke the graph: {exc}") from None
        log.info("after %s: %d layers", p.name, layer_count(graph))
    return graph
