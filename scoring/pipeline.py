"""The overlapped ring of one worker: read and decode the next batches while the engine runs this one.

    runner = CpuRunner(engine, batch=64, preprocess=preprocess)       # or scoring.gpu_runner.GpuRunner
    ring = runner.make_ring(slots=3)
    with Prefetcher(dataset, shards, decoder, ring, batch_rows=64) as batches:
        for slot in batches:                    # slot.shard, slot.first, slot.last, slot.ids, slot.errors
            pending = runner.submit(slot)       # the slot's buffer is consumed when submit returns
            batches.release(slot)               # so it may be refilled now
            scores = pending.result()           # (rows, classes) float32; on a GPU, later (see below)

Two threads per worker:

    background thread:  next shard -> read rows (Parquet) -> decode into a free ring slot -> hand it over
    calling thread:     submit the slot to the runner -> release it -> write the rows of a finished batch

A ring holds K preallocated buffers; a slot goes round free -> filled -> in use -> free, so with
K >= 2 the decode of batch i+1 overlaps the compute of batch i and no batch allocates. The
background thread goes on from one shard into the next (it pulls `shards` itself), so the device
is not left idle at shard boundaries while the next shard's first batch is read and decoded; each
slot says which shard it belongs to and whether it is the shard's first and last batch. A shard
with no rows still yields one slot (rows = 0, first and last) so its empty part file is written.

Runners (`CpuRunner` here, `GpuRunner` in scoring/gpu_runner.py) share one interface:
`make_ring(slots)`, `submit(slot) -> Pending` (`Pending.result()` gives the scores), `lag` (how
many submitted batches may be outstanding before the caller must collect the oldest: 0 for the
CPU, 1 for the GPU, whose copies and compute run asynchronously), `capacity` and `num_classes`.
The seconds each stage takes (read and decode on the background thread; the runner's stages;
write on the calling thread) go into a `scoring.report.Metrics`.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

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
    """One filled ring buffer: rows [0, rows) of `buffer` hold the decoded images of `ids`, rows of
    `shard`; a row whose `errors` entry is not None could not be decoded (its pixels are zeros).
    `first` and `last` mark the shard's first and last batch. An empty shard's only slot has
    rows = 0, index -1 and no buffer."""

    index: int
    buffer: Any
    ids: np.ndarray
    errors: list
    rows: int
    shard: Shard | None = None
    first: bool = True
    last: bool = True
    released: bool = field(default=False, repr=False)

    @property
    def batch(self):
        return self.buffer[: self.rows]


# ---------------------------------------------------------------------------------------------
# Read + decode on a background thread
# ---------------------------------------------------------------------------------------------

_DONE = object()


class Prefetcher:
    """Reads `shards` one after another in batches of `batch_rows` and decodes them into the ring's
    free slots on a background thread, at most len(ring) batches ahead of the caller. `shards` is
    any iterable (a launcher's generator that asks for the next shard) and is iterated on the
    background thread. Iterate the Prefetcher to get filled slots in order; `release(slot)` gives a
    buffer back (the iterator also releases the slot it handed out last when the next one is asked
    for). An error on the background thread (an unreadable file, a launcher that cannot be
    reached) is raised in the caller at the point it was reached. `stages` holds the seconds spent
    reading and decoding."""

    def __init__(self, dataset: ImageDataset, shards: Shard | Iterable[Shard], decoder, ring: HostRing,
                 batch_rows: int):
        if batch_rows > ring.capacity:
            raise ValueError(f"batches of {batch_rows} rows do not fit ring slots of {ring.capacity} rows")
        self.dataset, self.decoder, self.ring = dataset, decoder, ring
        self.shards = [shards] if isinstance(shards, Shard) else shards
        self.batch_rows = batch_rows
        self.stages = {"read": 0.0, "decode": 0.0}
        self._free: queue.Queue = queue.Queue()
        for i in range(len(ring)):
            self._free.put(i)
        self._ready: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._last: Slot | None = None
        self._waiting_for_shard = False
        self._thread = threading.Thread(target=self._produce, name="prefetch", daemon=True)
        self._thread.start()

    # -- the background thread ---------------------------------------------------------------
    def _produce(self) -> None:
        try:
            shards = iter(self.shards)
            while True:
                self._waiting_for_shard = True  # close() need not wait for a launcher that holds us here
                shard = next(shards, None)
                self._waiting_for_shard = False
                if shard is None:
                    break
                if self._stop.is_set() or not self._produce_shard(shard):
                    return
            self._ready.put(_DONE)
        except BaseException as exc:  # handed to the caller, raised there
            self._ready.put(exc)

    def _produce_shard(self, shard: Shard) -> bool:
        """Hand over the shard's batches; False when told to stop."""
        if shard.num_rows == 0:
            self._ready.put(Slot(-1, None, np.empty(0, np.int64), [], 0, shard, True, True))
            return True
        batches = read_shard(self.dataset, shard, self.batch_rows)
        done = 0
        try:
            while True:
                start = time.perf_counter()
                batch = next(batches, None)
                self.stages["read"] += time.perf_counter() - start
                if batch is None:
                    return True
                index = self._free.get()
                if index is None or self._stop.is_set():
                    return False
                buffer = self.ring.buffers[index]
                start = time.perf_counter()
                errors = self.decoder.decode_into(batch.items, buffer)
                self.stages["decode"] += time.perf_counter() - start
                first, done = done == 0, done + len(batch)
                self._ready.put(Slot(index, buffer, batch.ids, errors, len(batch), shard, first,
                                     done >= shard.num_rows))
        finally:
            batches.close()

    # -- the caller --------------------------------------------------------------------------
    def release(self, slot: Slot) -> None:
        if not slot.released:
            slot.released = True
            if slot.index >= 0:
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
        # A producer blocked in the launcher's shard source (a Ray actor's inbox, which is fed only
        # after a shard in flight is answered) may never return: it touches no buffer once it does,
        # because it checks the stop flag first, so it is left to end on its own (a daemon thread).
        while self._thread.is_alive() and not self._waiting_for_shard:
            self._thread.join(0.05)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# The engine step
# ---------------------------------------------------------------------------------------------


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


class Done:
    """A result that is ready (the CPU runner's `Pending`)."""

    def __init__(self, scores: np.ndarray):
        self.scores = scores

    def result(self) -> np.ndarray:
        return self.scores


class CpuRunner(PlanBinding):
    """Runs a loaded engine on a slot synchronously and returns (rows, classes) float32 scores: the
    raw model outputs of the plan's first output, flattened per row when they are not already 2-D."""

    lag = 0

    def __init__(self, engine, batch: int, preprocess: Preprocess):
        super().__init__(engine, batch, preprocess)
        self.context = engine.create_context()
        self.stages: dict[str, float] = {}
        self.busy_fraction = None

    def make_ring(self, slots: int = DEFAULT_SLOTS) -> HostRing:
        return HostRing(slots, self.capacity, self.row_shape, self.ring_dtype)

    def submit(self, slot: Slot) -> Done:
        start = time.perf_counter()
        scores = self.run(slot)
        self.stages["compute"] = self.stages.get("compute", 0.0) + time.perf_counter() - start
        return Done(scores)

    def run(self, slot: Slot) -> np.ndarray:
        rows = slot.rows
        x = slot.buffer[: self.fixed_batch] if self.fixed_batch else slot.batch
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        out = np.asarray(self.context.run({self.input.name: x})[self.output.name])
        self.check_output(out, x.shape[0], rows)
        return out[:rows].reshape(rows, -1).astype(np.float32, copy=False)

    def close(self) -> None:
        pass
