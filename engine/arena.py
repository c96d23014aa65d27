"""One context's activation memory on the numpy backend: the MemoryPlan made real.

An Arena is planned for one batch size (the context keeps one per batch it has seen): a single
uint8 buffer, and for each planned value a view of it with the value's shape and dtype. Producers
of an elided concat get their slice of the concat's buffer; roots kept out of the arena (graph
outputs) get a fresh array per run, so results handed to the caller are never overwritten.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from engine.memory import MemoryPlan, concrete_shapes, plan_memory


class Arena:
    """`xp` is numpy or cupy. With `channels_last`, 4-D values live as NHWC memory seen through an
    NCHW-shaped view (what cuDNN's fast FP16 kernels want). With `fresh_per_run` (the numpy
    backend), roots kept out of the arena are new arrays each run, because the caller keeps them;
    on a GPU they are copied out, so they are allocated once."""

    def __init__(self, layers: list[Mapping], values: Mapping[str, Mapping], external: set[str], batch: int,
                 xp=np, channels_last: bool = False, fresh_per_run: bool = True):
        self.xp, self.channels_last, self.fresh_per_run = xp, channels_last, fresh_per_run
        self.shapes = concrete_shapes(values, batch)
        self.plan: MemoryPlan = plan_memory(layers, self.shapes, external)
        self.buffer = xp.empty(self.plan.arena_bytes, dtype=np.uint8)
        self._views: dict = {}
        for name, offset in self.plan.offsets.items():
            shape, dtype = self.shapes[name]
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            self._views[name] = self._shaped(self.buffer[offset:offset + nbytes].view(dtype), shape)
        self._fresh: dict = {}

    def _shaped(self, flat, shape):
        if self.channels_last and len(shape) == 4:
            n, c, h, w = shape
            return flat.reshape(n, h, w, c).transpose(0, 3, 1, 2)
        return flat.reshape(shape)

    def allocate(self, shape, dtype):
        """A standalone array laid out as the arena lays out its values."""
        return self._shaped(self.xp.empty(int(np.prod(shape, dtype=np.int64)), dtype=dtype), shape)

    def start_run(self) -> None:
        if self.fresh_per_run:
            self._fresh = {}

    def target(self, name: str) -> np.ndarray | None:
        """Where the layer producing `name` must write it, or None to let the kernel allocate."""
        part = self.plan.slices.get(name)
        if part is not None:
            base = self._root_array(part.root)
            index = [slice(None)] * base.ndim
            index[part.axis] = slice(part.start, part.stop)
            return base[tuple(index)]
        if name in self.plan.views:
            return None  # a view op's output is its input, reshaped: nothing to write
        if name in self._views or name in self._sliced_roots:
            return self._root_array(name)
        return None

    @property
    def _sliced_roots(self) -> set[str]:
        return {s.root for s in self.plan.slices.values()}

    def _root_array(self, name: str) -> np.ndarray:
        if name in self._views:
            return self._views[name]
        if name not in self._fresh:  # a sliced root kept out of the arena (a graph output)
            shape, dtype = self.shapes[name]
            self._fresh[name] = self.allocate(shape, dtype)
        return self._fresh[name]
