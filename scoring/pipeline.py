"""The overlapped ring of one worker: read and decode the next batches while the engine runs this one.

    ring = HostRing(slots=3, capacity=64, row_shape=(3, 224, 224), dtype=np.float32)
    runner = CpuRunner(engine, batch=64, preprocess=preprocess)
    with Prefetcher(dataset, shard, decoder, ring, batch_rows=64) as batches:
        for slot in batches:                    # slot.batch: the decoded rows, slot.ids, slot.errors
            scores = runner.run(slot)           # (rows, classes) float32
            batches.release(slot)               # the buffer may now be refilled

The CPU path has two stages on two threads:

    background thread:  read rows (Parquet) -> decode into a free host slot -> hand the slot over
    calling thread:     run the engine on the slot -> release it -> write the output rows

A `HostRing` holds K preallocated host buffers; a slot goes round free -> filled -> in use -> free,
so with K >= 2 the decode of batch i+1 overlaps the compute of batch i and no batch allocates.
The seconds each stage takes (read and decode on the background thread; compute and write on the
calling thread, timed by the worker) go into a `scoring.report.Metrics`.

The seam for the GPU path
-------------------------
Everything a GPU changes sits behind two boundaries, and nothing above them (scoring/worker.py, the
launchers, outputs) needs to change:

1. `HostRing(..., allocate=...)`: the allocator of the host slots. The GPU path passes a pinned
   allocator (``cupyx.empty_pinned``) so H2D copies are truly asynchronous.
2. The runner, `run(slot) -> np.ndarray (rows, classes)` plus `capacity` and `num_classes`:
   `CpuRunner` runs the engine synchronously. A `GpuRunner` (not written yet) would, per slot,
   copy the slot to a device buffer on a copy stream (stage "h2d"), record an event, release the
   host slot once that event has completed (so the background thread refills it while the GPU
   computes), run the engine's CUDA graph for the padded batch size on the compute stream
   ("compute"), copy the scores back on the copy stream into a pinned output slot ("d2h"), and
   return the previous batch's scores (one batch of lag) so that copy, compute and the host
   writing rows all overlap. The device also decodes when [run] decode = "gpu" (nvImageCodec):
   the Prefetcher's decode step would then hand over encoded bytes and the runner decodes on the GPU.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from scoring.dataset import ImageDataset, Shard, read_shard
from scoring.decode import CpuDecoder, Preprocess
from scoring.errors import ScoringError

DEFAULT_SLOTS = 3


class PipelineError(ScoringError):
    """A plan whose input does not fit the job's preprocessing or batch size."""


# ---------------------------------------------------------------------------------------------
# Host buffers
# ---------------------------------------------------------------------------------------------


def host_empty(shape: tuple, dtype) -> np.ndarray:
    """The CPU path's allocator: plain pageable numpy memory. (GPU seam: pinned memory.)"""
    return np.empty(shape, dtype)


class HostRing:
    """K preallocated buffers of shape (capacity,) + row_shape; a free list hands them out."""

    def __init__(self, slots: int, capacity: int, row_shape: tuple, dtype,
                 allocate: Callable[[tuple, np.dtype], np.ndarray] = host_empty):
        if slots < 1 or capacity < 1:
            raise ValueError(f"a host ring needs at least one slot of at least one row, got {slots} x {capacity}")
        self.capacity = int(capacity)
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.buffers = [allocate((self.capacity,) + self.row_shape, self.dtype) for _ in range(slots)]

    def __len__(self) -> int:
        return len(self.buffers)


@dataclass
class Slot:
    """One filled ring buffer: rows [0, rows) of `buffer` hold the decoded images of `ids`; a row
    whose `errors` entry is not None could not be decoded (its pixels are zeros)."""

    index: int
    buffer: np.ndarray
    ids: np.ndarray
    errors: list
    rows: int
    released: bool = field(default=False, repr=False)

    @property
    def batch(self) -> np.ndarray:
        return self.buffer[: self.rows]


# ---------------------------------------------------------------------------------------------
# Read + decode on a background thread
# ---------------------------------------------------------------------------------------------

_DONE = object()


class Prefetcher:
    """Reads one shard in batches of `batch_rows` and decodes them into the ring's free slots on a
    background thread, at most len(ring) batches ahead of the caller. Iterate to get filled slots in
    row order; `release(slot)` gives a buffer back (the iterator also releases the slot it handed
    out last when the next one is asked for). An error on the background thread (an unreadable
    file) is raised in the caller at the point it was reached. `stages` holds the seconds spent
    reading and decoding."""

    def __init__(self, dataset: ImageDataset, shard: Shard, decoder: CpuDecoder, ring: HostRing,
                 batch_rows: int):
        if batch_rows > ring.capacity:
            raise ValueError(f"batches of {batch_rows} rows do not fit ring slots of {ring.capacity} rows")
        self.dataset, self.shard, self.decoder, self.ring = dataset, shard, decoder, ring
        self.batch_rows = batch_rows
        self.stages = {"read": 0.0, "decode": 0.0}
        self._free: queue.Queue = queue.Queue()
        for i in range(len(ring)):
            self._free.put(i)
        self._ready: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._last: Slot | None = None
        self._thread = threading.Thread(target=self._produce, name=f"prefetch-{shard.key}", daemon=True)
        self._thread.start()

    # -- the background thread ---------------------------------------------------------------
    def _produce(self) -> None:
        batches = read_shard(self.dataset, self.shard, self.batch_rows)
        try:
            while not self._stop.is_set():
                start = time.perf_counter()
                batch = next(batches, None)
                self.stages["read"] += time.perf_counter() - start
                if batch is None:
                    break
                index = self._free.get()
                if index is None or self._stop.is_set():
                    return
                buffer = self.ring.buffers[index]
                start = time.perf_counter()
                errors = self.decoder.decode_into(batch.items, buffer)
                self.stages["decode"] += time.perf_counter() - start
                self._ready.put(Slot(index, buffer, batch.ids, errors, len(batch)))
            self._ready.put(_DONE)
        except BaseException as exc:  # handed to the caller, raised there
            self._ready.put(exc)
        finally:
            batches.close()

    # -- the caller --------------------------------------------------------------------------
    def release(self, slot: Slot) -> None:
        if not slot.released:
            slot.released = True
            self._free.put(slot.index)

    def __iter__(self) -> Iterator[Slot]:
        while True:
            if self._last is not None:
                self.release(self._last)
                self._last = None
            item = self._ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            self._last = item
            yield item

    def close(self) -> None:
        """Stop the background thread (early, when the caller gives up) and wait for it."""
        self._stop.set()
        self._free.put(None)  # wakes a producer waiting for a free slot
        self._thread.join()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# The engine step (CPU: synchronous; the GPU runner replaces this class, see the module docstring)
# ---------------------------------------------------------------------------------------------


class CpuRunner:
    """Runs a loaded engine on a slot and returns (rows, classes) float32 scores: the raw model
    outputs of the plan's first output, flattened per row when they are not already 2-D.

    A plan with a symbolic batch runs each batch at its own size (the last, partial one too); a
    plan with a fixed batch gets every batch padded to that size, and the padding rows dropped."""

    def __init__(self, engine, batch: int, preprocess: Preprocess):
        self.engine = engine
        self.context = engine.create_context()
        if len(engine.inputs) != 1:
            names = ", ".join(s.describe() for s in engine.inputs)
            raise PipelineError(f"plan {engine.source} has {len(engine.inputs)} inputs ({names}); batch scoring "
                                f"feeds one image tensor, so the plan must have exactly one input")
        spec = self.input = engine.inputs[0]
        self.output = engine.outputs[0]
        row = tuple(preprocess.output_shape)
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
        out_shape = self.output.shape
        self.num_classes = (int(np.prod(out_shape[1:])) if out_shape is not None and len(out_shape) >= 2
                            and all(isinstance(d, int) for d in out_shape[1:]) else None)

    def run(self, slot: Slot) -> np.ndarray:
        rows = slot.rows
        x = slot.buffer[: self.fixed_batch] if self.fixed_batch else slot.batch
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        out = np.asarray(self.context.run({self.input.name: x})[self.output.name])
        if out.ndim == 0 or out.shape[0] < rows:
            raise PipelineError(f"plan {self.engine.source}: output '{self.output.name}' has shape {out.shape} "
                                f"for a batch of {x.shape[0]}; expected one row of scores per image")
        return out[:rows].reshape(rows, -1).astype(np.float32, copy=False)
