"""The one IR every importer, pass and the builder read and write.

A Graph is a list of Nodes in execution order plus a table of Values. A Value is a named tensor:
its dtype, its shape (ints, or strings for symbolic dimensions such as the batch "N"), and, for
constants (weights), the numpy array itself. Nodes refer to values by name, which keeps rewriting
simple: a pass replaces names in node.inputs, and `Graph.consumers()` rebuilds the use lists.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, Iterable, Iterator

import numpy as np

Dim = int | str  # a fixed size, or a symbolic name ("N" is the batch)
Shape = tuple[Dim, ...]


@dataclasses.dataclass
class Value:
    name: str
    dtype: np.dtype | None = None
    shape: Shape | None = None  # None: rank unknown
    const: np.ndarray | None = None  # set for weights and folded constants

    @property
    def is_const(self) -> bool:
        return self.const is not None


@dataclasses.dataclass
class Node:
    name: str
    op_type: str
    inputs: list[str]  # "" marks an omitted optional input
    outputs: list[str]  # "" marks an omitted optional output
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    domain: str = ""
    # The source nodes this node stands for after fusion, in order ("conv1", "bn1", "relu1").
    members: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if not self.members:
            self.members = [self.name]

    def describe(self) -> str:
        return f"node '{self.name}' ({self.op_type})"


@dataclasses.dataclass
class Graph:
    name: str
    nodes: list[Node]
    values: dict[str, Value]
    inputs: list[str]  # runtime inputs only; weights are values with .const
    outputs: list[str]
    opsets: dict[str, int] = dataclasses.field(default_factory=lambda: {"": 13})

    def copy(self) -> "Graph":
        """A structural copy: new Nodes and Values, the same (never mutated) weight arrays."""
        nodes = [dataclasses.replace(n, inputs=list(n.inputs), outputs=list(n.outputs), attrs=dict(n.attrs),
                                     members=list(n.members)) for n in self.nodes]
        values = {k: dataclasses.replace(v) for k, v in self.values.items()}
        return Graph(self.name, nodes, values, list(self.inputs), list(self.outputs), dict(self.opsets))

    @property
    def opset(self) -> int:
        """The default-domain opset, which picks each op's kernel version."""
        return self.opsets.get("", 1)

    def value(self, name: str) -> Value:
        if name not in self.values:
            raise KeyError(f"graph '{self.name}' has no value named '{name}'")
        return self.values[name]

    def constants(self) -> Iterator[Value]:
        return (v for v in self.values.values() if v.is_const)

    def producers(self) -> dict[str, Node]:
        return {out: node for node in self.nodes for out in node.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        uses: dict[str, list[Node]] = defaultdict(list)
        for node in self.nodes:
            for name in node.inputs:
                if name:
                    uses[name].append(node)
        return uses

    def remove_nodes(self, dead: Iterable[Node]) -> None:
        """Drop nodes and the Values only they produced (weights and graph inputs stay)."""
        ids = {id(n) for n in dead}
        for node in self.nodes:
            if id(node) in ids:
                for name in node.outputs:
                    if name and name not in self.outputs:
                        self.values.pop(name, None)
        self.nodes = [n for n in self.nodes if id(n) not in ids]

    def replace_uses(self, old: str, new: str) -> None:
        """Point every node that reads value `old` at value `new`. Graph outputs keep their names
        (users bind them): a pass that removes a graph output's producer renames instead."""
        for node in self.nodes:
            node.inputs = [new if name == old else name for name in node.inputs]

    def rename_value(self, old: str, new: str) -> None:
        """Give value `old` the name `new` everywhere (producer, readers); `new` must be unused."""
        if new in self.values and new != old:
            raise GraphError(f"cannot rename '{old}' to '{new}': the name is taken")
        value = self.values.pop(old)
        value.name = new
        self.values[new] = value
        for node in self.nodes:
            node.inputs = [new if name == old else name for name in node.inputs]
            node.outputs = [new if name == old else name for name in node.outputs]
        self.outputs = [new if name == old else name for name in self.outputs]
        self.inputs = [new if name == old else name for name in self.inputs]

    def add_constant(self, name: str, array: np.ndarray) -> str:
        """A new weight with a name no other value has (suffixes _1, _2... where needed)."""
        unique, i = name, 0
        while unique in self.values:
            i += 1
            unique = f"{name}_{i}"
        array = np.asarray(array, order="C")
        self.values[unique] = Value(unique, array.dtype, tuple(array.shape), array)
        return unique

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for node in self.nodes:
            counts[node.op_type] += 1
        return dict(counts)

    def validate(self) -> None:
        """Every input is defined before use, every name is produced once, outputs exist."""
        defined = set(self.inputs) | {v.name for v in self.constants()}
        for node in self.nodes:
            for name in node.inputs:
                if name and name not in defined:
                    raise GraphError(
                        f"{node.describe()} reads '{name}', which no earlier node, input or "
                        f"weight defines (a cycle, or a missing producer)"
                    )
            for name in node.outputs:
                if not name:
                    continue
                if name in defined:
                    raise GraphError(f"{node.describe()} writes '{name}', which is already defined")
                defined.add(name)
                if name not in self.values:
                    raise GraphError(f"{node.describe()} writes '{name}', which has no Value entry")
        for name in self.outputs:
            if name not in defined:
                raise GraphError(f"graph output '{name}' is never produced")

    def topo_sorted(self) -> None:
        """Reorder nodes so producers come first; raise on a cycle, naming the nodes in it."""
        produced_by = self.producers()
        ready = set(self.inputs) | {v.name for v in self.constants()}
        remaining = list(self.nodes)
        ordered: list[Node] = []
        while remaining:
            progress = [n for n in remaining if all(i in ready or i not in produced_by for i in n.inputs if i)]
            if not progress:
                stuck = ", ".join(n.name for n in remaining[:8])
                raise GraphError(f"graph '{self.name}' has a cycle among nodes: {stuck}")
            for node in progress:
                ordered.append(node)
                ready.update(o for o in node.outputs if o)
            done = {id(n) for n in progress}
            remaining = [n for n in remaining if id(n) not in done]
        self.nodes = ordered


class GraphError(ValueError):
    """A graph that breaks the IR's rules (cycle, undefined value, duplicate name)."""


def format_shape(shape: Iterable[Dim] | None) -> str:
    if shape is None:
        return "?"
    return "x".join(str(d) for d in shape) or "scalar"
