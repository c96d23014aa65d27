"""The engine step: runners take the Prefetcher's slots (scoring.pipeline) and give back scores.

    runner = CpuRunner(engine, batch=64, preprocess=preprocess)   # or scoring.gpu_runner.GpuRunner
    ring = runner.make_ring(slots=3)
    pending = runner.submit(slot)                                 # the slot may be refilled on return
    scores = pending.result()                                     # (rows, classes) float32 on a CPU

Runners (`CpuRunner` here, `GpuRunner` in scoring/gpu_runner.py: scores in the plan output's type) share one interface:
`make_ring(slots)`, `submit(slot) -> Pending` (`Pending.result()` gives the scores), `lag` (how
many submitted batches may be outstanding before the caller must collect the oldest: 1 for both,
whose engines run beside the caller), `capacity`, `num_classes` and `ring_preprocess` (what the
decoders are made with: the job's, its layout the plan input's). `PlanBinding` checks once what
both need of a plan.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from scoring.decode import Preprocess
from scoring.errors import ScoringError
from scoring.pipeline import DEFAULT_SLOTS, HostRing, Slot, host_empty


class PipelineError(ScoringError):
    """A plan whose input does not fit the job's preprocessing or batch size."""


class PlanBinding:
    """What a runner needs to know of a plan to feed it batches of the job's rows, checked once:
    exactly one input whose row shape matches [preprocess], a batch within the plan's limit.

    A plan with a symbolic batch runs each batch at its own size on the CPU; a plan with a fixed
    batch gets every batch padded to that size, and the padding rows dropped. `capacity` is the
    rows a ring slot must hold."""

    def __init__(self, engine, batch: int, preprocess: Preprocess):
        self.engine = engine
        if len(engine.inputs) != 1:
            names = ", ".join(s.describe() for s in engine.inputs)
            raise PipelineError(f"plan {engine.source} has {len(engine.inputs)} inputs ({names}); batch scoring "
                                f"feeds one image tensor, so the plan must have exactly one input")
        spec = self.input = engine.inputs[0]
        self.output = engine.outputs[0]
        row = tuple(preprocess.output_shape)
        self.row_shape = row
        self.ring_preprocess = preprocess  # how decoders write the ring's rows (GpuRunner may change the layout)
        shape = tuple(spec.shape) if spec.shape is not None else None
        if shape is not None:
            fixed_row = tuple(d for d in shape[1:])
            if len(shape) != 1 + len(row) or any(isinstance(d, int) and d != r for d, r in zip(fixed_row, row)):
                raise PipelineError(
                    f"plan {engine.source} takes input {spec.describe()}, but [preprocess] makes rows of shape "
                    f"{'x'.join(map(str, row))} ({preprocess.layout}, crop {preprocess.crop}); set [preprocess] "
                    f"crop and layout to match the model")
        self.fixed_batch = shape[0] if shape is not None and isinstance(shape[0], int) else None
        max_batch = self.fixed_batch or engine.max_batch
        if max_batch is not None and batch > max_batch:
            raise PipelineError(f"[run] batch {batch} is larger than the plan's max batch {max_batch} "
                                f"({engine.source}); lower [run] batch or rebuild the plan with a larger max batch")
        self.batch = batch
        self.capacity = max(batch, self.fixed_batch or 0)
        self.dtype = np.dtype(spec.dtype) if spec.dtype is not None else np.dtype(preprocess.dtype)
        self.ring_dtype = np.dtype(preprocess.dtype)
        out_shape = self.output.shape
        self.num_classes = (int(np.prod(out_shape[1:])) if out_shape is not None and len(out_shape) >= 2
                            and all(isinstance(d, int) for d in out_shape[1:]) else None)

    def check_output(self, out, batch_rows: int, rows: int) -> None:
        if out.ndim == 0 or out.shape[0] < rows:
            raise PipelineError(f"plan {self.engine.source}: output '{self.output.name}' has shape {out.shape} "
                                f"for a batch of {batch_rows}; expected one row of scores per image")


class CpuRunner(PlanBinding):
    """Runs a loaded engine on a slot and returns (rows, classes) float32 scores: the raw model
    outputs of the plan's first output, flattened per row when they are not already 2-D.

    `submit` copies the slot's rows and runs the engine on a thread of its own (numpy releases
    the GIL in its heavy kernels), so the caller writes batch i-1's rows while batch i computes:
    lag 1, as on a GPU. `run` is the synchronous form (Ray Data's EngineMapper uses it)."""

    lag = 1
    spin_wait = False  # its waits (a future's result) sleep; GpuRunner's may spin (scoring.gpu_wait)

    def __init__(self, engine, batch: int, preprocess: Preprocess):
        super().__init__(engine, batch, preprocess)
        self.context = engine.create_context()
        self.stages: dict[str, float] = {"compute": 0.0}
        self.busy_fraction = None
        self.thread_cpu_s: dict[str, float] = {}  # {"engine": CPU seconds of the engine's thread}, at close()
        self._executor: ThreadPoolExecutor | None = None

    def make_ring(self, slots: int = DEFAULT_SLOTS, allocate=host_empty, layout: str | None = None) -> HostRing:
        """`layout`: the decoders' rows, which the numpy engine takes only in the job's layout."""
        if layout not in (None, self.ring_preprocess.layout):
            raise PipelineError(f"the CPU runner takes {self.ring_preprocess.layout} rows, not {layout}")
        return HostRing(slots, self.capacity, self.row_shape, self.ring_dtype, allocate=allocate)

    def submit(self, slot: Slot):
        """Start the engine on a copy of the slot's rows (the slot may be refilled at once); the
        returned future's result() is the scores."""
        x = slot.buffer[: self.fixed_batch] if self.fixed_batch else slot.batch
        x = x.astype(self.dtype, copy=True)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        return self._executor.submit(self._timed, x, slot.rows)

    def _timed(self, x: np.ndarray, rows: int) -> np.ndarray:
        start = time.perf_counter()
        try:
            return self._scores(x, rows)
        finally:
            self.stages["compute"] += time.perf_counter() - start

    def run(self, slot: Slot) -> np.ndarray:
        x = slot.buffer[: self.fixed_batch] if self.fixed_batch else slot.batch
        return self._scores(x.astype(self.dtype, copy=False), slot.rows)

    def _scores(self, x: np.ndarray, rows: int) -> np.ndarray:
        out = np.asarray(self.context.run({self.input.name: x})[self.output.name])
        self.check_output(out, x.shape[0], rows)
        return out[:rows].reshape(rows, -1).astype(np.float32, copy=False)

    def close(self) -> None:
        if self._executor is not None:
            # time.thread_time() on that thread: its CPU time since it started
            self.thread_cpu_s["engine"] = self._executor.submit(time.thread_time).result()
            self._executor.shutdown(wait=True)
            self._executor = None
