"""Op registry: (domain, op type) -> kernels, one entry per opset version range.

A kernel is a plain function: ONNX inputs positionally (None where an optional input is omitted),
ONNX attributes as keyword arguments with the operator's defaults. It returns one array or a tuple
of arrays, one per output. `lookup` picks the entry with the highest `since` version that is not
newer than the model's opset, as onnx/reference does; a model at opset 9 gets the Slice kernel
registered `since=1` (attributes), a model at opset 13 the one `since=10` (inputs).

This module knows nothing of the engine's IR: callers hand kernels arrays and attributes.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections import defaultdict
from typing import Callable


@dataclasses.dataclass(frozen=True, eq=False)
class OpKernel:
    op_type: str
    since: int  # first opset version this kernel implements
    fn: Callable
    domain: str = ""
    # Some ops (Split before opset 18) decide their output count from the node; the executor then
    # passes `num_outputs=len(node.outputs)`.
    wants_num_outputs: bool = False

    @functools.cached_property
    def accepts_out(self) -> bool:
        """Whether the kernel can write its (single) output into a given array: `fn(..., out=array)`."""
        return "out" in inspect.signature(self.fn).parameters

    @property
    def key(self) -> str:
        """A stable name for the plan file: 'Conv-11', 'ai.onnx.ml:Foo-1'."""
        prefix = f"{self.domain}:" if self.domain else ""
        return f"{prefix}{self.op_type}-{self.since}"


class OpRegistry:
    def __init__(self, name: str):
        self.name = name
        self._entries: dict[tuple[str, str], list[OpKernel]] = defaultdict(list)

    def register(self, op_type: str, since: int = 1, *, domain: str = "", wants_num_outputs: bool = False):
        def decorator(fn: Callable) -> Callable:
            entry = OpKernel(op_type, since, fn, domain, wants_num_outputs)
            versions = self._entries[(domain, op_type)]
            if any(e.since == since for e in versions):
                raise ValueError(f"{self.name}: {entry.key} is registered twice")
            versions.append(entry)
            versions.sort(key=lambda e: e.since)
            return fn

        return decorator

    def lookup(self, op_type: str, opset: int, domain: str = "") -> OpKernel | None:
        """The kernel for this op at this opset, or None if none is registered that early."""
        best = None
        for entry in self._entries.get((domain, op_type), ()):
            if entry.since <= opset:
                best = entry
        return best

    def by_key(self, key: str) -> OpKernel:
        """The kernel a plan file names (see OpKernel.key)."""
        domain, _, rest = key.rpartition(":")
        op_type, _, since = rest.rpartition("-")
        for entry in self._entries.get((domain, op_type), ()):
            if str(entry.since) == since:
                return entry
        raise KeyError(f"{self.name} has no kernel '{key}'")

    def op_types(self, domain: str = "") -> set[str]:
        return {op for (d, op) in self._entries if d == domain}

    def versions(self, op_type: str, domain: str = "") -> list[int]:
        return [e.since for e in self._entries.get((domain, op_type), ())]


class KernelError(ValueError):
    """Raised by a kernel for inputs it cannot handle; the executor adds the node's name and shapes."""
