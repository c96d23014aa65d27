"""Activation memory: tensor lifetimes over the execution order -> offsets in one arena.

`plan_memory(layers, shapes, ...)` works on the plan's layer list (dicts with kind, inputs, outputs,
attrs) and the activations' shapes at one batch size. It is pure: no arrays, no device.

- A view layer (Reshape, Flatten, Squeeze, Unsqueeze, Identity) gets no memory: its output is its
  input seen with another shape, so it joins the input's *root* buffer.
- An elided Concat (attrs["elided"]) owns the root buffer; each of its inputs is a slice of it along
  the concat axis, so producers write straight into place and the concat copies nothing.
- Graph inputs (the caller's arrays) and graph outputs (returned to the caller, so never overwritten
  by the next run) live outside the arena; so does anything aliased to them.
- Every other root lives from the first layer that writes it (or an alias) to the last layer that
  reads it (or an alias). Roots are placed greedily, largest first, at the lowest offset that does
  not overlap a placed root whose lifetime overlaps (the classic greedy-by-size heuristic).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence

import numpy as np

VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
ALIGNMENT = 256  # bytes; what cudaMalloc gives and what vectorised kernels like


@dataclasses.dataclass(frozen=True)
class Slice:
    """This value is `root[..., start:stop, ...]` along `axis` (a producer of an elided concat)."""

    root: str
    axis: int
    start: int
    stop: int


@dataclasses.dataclass
class MemoryPlan:
    offsets: dict[str, int]  # root value -> byte offset in the arena
    sizes: dict[str, int]  # root value -> bytes
    views: dict[str, str]  # view value -> the value it is a view of
    slices: dict[str, Slice]  # concat member -> its slice of the root
    arena_bytes: int
    activation_bytes: int  # what every activation would take with no reuse and no aliasing

    def to_json(self) -> dict:
        return {
            "arena_bytes": self.arena_bytes,
            "activation_bytes": self.activation_bytes,
            "offsets": self.offsets,
            "sizes": self.sizes,
            "views": self.views,
            "slices": {k: dataclasses.asdict(v) for k, v in self.slices.items()},
        }


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def tensor_bytes(shape: Sequence[int], dtype: str) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def plan_memory(
    layers: Sequence[Mapping],
    shapes: Mapping[str, tuple[Sequence[int], str]],
    external: Iterable[str],
) -> MemoryPlan:
    """Plan the arena. `shapes` maps every activation to (concrete shape, dtype name); `external`
    names values that must not live in the arena (graph inputs and outputs)."""
    views: dict[str, str] = {}
    slices: dict[str, Slice] = {}
    for layer in layers:
        if layer["kind"] in VIEW_OPS and layer["outputs"][0]:
            views[layer["outputs"][0]] = layer["inputs"][0]
        elif layer["kind"] == "Concat" and layer.get("attrs", {}).get("elided"):
            out = layer["outputs"][0]
            rank = len(shapes[out][0])
            axis = layer["attrs"].get("axis", 0) % rank
            start = 0
            for name in layer["inputs"]:
                stop = start + shapes[name][0][axis]
                slices[name] = Slice(out, axis, start, stop)
                start = stop

    def root(name: str) -> str:
        while True:
            if name in views:
                name = views[name]
            elif name in slices:
                name = slices[name].root
            else:
                return name

    external_roots = {root(n) for n in external}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    activation_bytes = 0
    for step, layer in enumerate(layers):
        for name in layer["outputs"]:
            if name and name in shapes:
                activation_bytes += tensor_bytes(*shapes[name])
                r = root(name)
                first.setdefault(r, step)
                last[r] = max(last.get(r, step), step)
        for name in layer["inputs"]:
            if name and name in shapes:
                r = root(name)
                if r in first:
                    last[r] = max(last[r], step)

    sizes = {r: _align(tensor_bytes(*shapes[r])) for r in first if r not in external_roots and r in shapes}
    offsets = _greedy_by_size(sizes, first, last)
    arena = max((offsets[r] + sizes[r] for r in offsets), default=0)
    return MemoryPlan(offsets, sizes, views, slices, arena, activation_bytes)


def _greedy_by_size(sizes: dict[str, int], first: dict[str, int], last: dict[str, int]) -> dict[str, int]:
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    offsets: dict[str, int] = {}
    for name in sorted(sizes, key=lambda n: (-sizes[n], first[n], n)):
        size, lo, hi = sizes[name], first[name], last[name]
        busy = sorted((off, end) for off, end, f, l in placed if f <= hi and lo <= l)
        offset = 0
        for off, end in busy:
            if offset + size <= off:
                break
            offset = max(offset, end)
        offsets[name] = offset
        placed.append((offset, offset + size, lo, hi))
    return offsets


def concrete_shapes(values: Mapping[str, Mapping], batch: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shapes at one batch size from the plan's recorded values ("N", "3N" for batch multiples).
    Values with any other symbolic or unknown dimension are left out (they cannot be planned)."""
    out = {}
    for name, info in values.items():
        dims = []
        for d in info["shape"]:
            if isinstance(d, int):
                dims.append(d)
            elif isinstance(d, str) and d.endswith("N") and (d == "N" or d[:-1].isdigit()):
                dims.append(batch * (int(d[:-1]) if d != "N" else 1))
            else:
                break
        else:
            out[name] = (tuple(dims), info["dtype"])
    return out
