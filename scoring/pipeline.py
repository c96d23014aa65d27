"""The overlapped ring of one worker: read and decode the next batches while the engine runs this one.

    runner = CpuRunner(engine, batch=64, preprocess=preprocess)       # scoring.runner, or gpu_runner.GpuRunner
    ring = runner.make_ring(slots=3)
    with Prefetcher(dataset, shards, decoder, ring, batch_rows=64) as batches:
        for slot in batches:                    # slot.seq, slot.segments, slot.ids, slot.errors
            pending = runner.submit(slot)       # the slot's buffer is consumed when submit returns
            batches.release(slot)               # so it may be refilled now
            scores = pending.result()           # (rows, classes); on a GPU, later (see below)

The threads of a worker:

    shard feed:         ask the launcher for the next shard, one ahead of the reader (scoring/shard_feed.py)
    reader:             read the shards' rows (Parquet) in batches -> queue them for the decoders
    decoders (1 or more): decode a batch into a free ring slot -> hand it over
    calling thread:     submit the slot to the runner -> release it -> write the rows of a finished batch

With several decoders, slots are handed over in the order their decoding ends, not the order they
were read: a decode call that takes five times the usual (they vary that much on a GPU) would
otherwise hold back the batches decoded behind it, and the engine would wait with work ready.
Each slot carries its read-order number `seq` (0, 1, 2, ... over every slot of the run), so the
caller can put rows back in read order before writing them (scoring.shard_writer); how
far out of order it may get is bounded (`max_ahead`).

A ring holds K preallocated buffers; a slot goes round free -> filled -> in use -> free, so with
K >= 2 the decode of batch i+1 overlaps the compute of batch i and no batch allocates. The
reader goes on from one shard into the next, so the device is not left idle at shard boundaries
while the next shard's first batch is read and decoded, and a batch is filled across the boundary:
a shard of 4,166 rows in batches of 256 would otherwise end in a batch of 70 rows that costs the
engine as much as a full one (4% of a GPU's time where every shard is that size). Each slot's
`segments` say which shard each of its rows belongs to, and whether they are the shard's first
and last rows. A shard with no rows is a segment of no rows (its empty part file is written).

The runners that take the slots (`CpuRunner`, `GpuRunner`) are in scoring/runner.py and
scoring/gpu_runner.py. The seconds each stage takes (read and decode on the background threads;
the runner's stages; write on the calling thread) go into a `scoring.report.Metrics`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from scoring.dataset import ImageDataset, RowBatch, Shard, read_shard
from scoring.row_group_reads import ReadCpu
from scoring.shard_feed import END, NOT_YET, ShardFeed, Stopped
from scoring.slow_cpus import SlowCpus, watch
from scoring.thread_names import name_this_thread

log = logging.getLogger(__name__)

DEFAULT_SLOTS = 3
# How far past the oldest batch still being decoded a Prefetcher hands batches over: what the
# caller may have to hold to put rows back in read order. On an H100 a decode call took up to 12
# times the engine's time for a batch (benchmarks/results/scoring/h100_2026-11-22_s16_ablation).
DEFAULT_MAX_AHEAD = 32


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
class Segment:
    """Rows [start, start + rows) of a slot, all of `shard`; `first` and `last` say whether they
    are the shard's first and last rows."""

    shard: Shard
    start: int
    rows: int
    first: bool = True
    last: bool = True


@dataclass
class Slot:
    """One filled ring buffer: rows [0, rows) of `buffer` hold the decoded images of `ids`; a row
    whose `errors` entry is not None could not be decoded (its pixels are zeros). `segments` say
    which shard each run of rows belongs to: one, or several where a shard's last rows share the
    batch with the next shard's first. `seq` is the slot's place in read order. An empty shard
    with nothing to share a batch with gets a slot of its own: rows = 0, index -1, no buffer."""

    index: int
    buffer: Any
    ids: np.ndarray
    errors: list
    rows: int
    segments: list[Segment] = field(default_factory=list)
    seq: int = 0
    released: bool = field(default=False, repr=False)

    @property
    def batch(self):
        return self.buffer[: self.rows]


# ---------------------------------------------------------------------------------------------
# Read + decode on a background thread
# ---------------------------------------------------------------------------------------------

_DONE = object()

# How long the reader waits for the next shard before it hands over a shard's last rows as a batch
# short of full (a launcher may hold the next shard back until this one is recorded: Ray).
SHARD_WAIT_S = 0.01


@dataclass
class _Read:
    """One batch read from Parquet, numbered in read order, waiting for a decoder."""

    seq: int
    segments: list[Segment]
    ids: np.ndarray
    items: Sequence  # a RowBatch's items: EncodedItems or a list
    route: object = None  # the decoders' route(items), made on the reader thread (GpuDecoder)


@dataclass
class _Carry:
    """A shard's last rows, fewer than a batch, waiting to share a batch with the next shard's."""

    segments: list[Segment]
    batch: RowBatch


class Prefetcher:
    """Reads `shards` one after another in batches of `batch_rows` on a reader thread and decodes
    them into the ring's free slots on one thread per decoder, at most len(ring) batches ahead of
    the caller. `shards` is any iterable (a launcher's generator that asks for the next shard) and
    is iterated on a thread of its own, one shard ahead of the reader. A shard's last rows, where
    they are fewer than a batch, share a batch with the next shard's first rows when the next
    shard is there (within SHARD_WAIT_S): the engine runs full batches, and only the run's last
    may be short. Iterate the Prefetcher to get filled slots as they are decoded
    (order="decoded", at most `max_ahead` slots past the oldest one not yet handed over) or in
    read order (order="read"); `release(slot)` gives a buffer back (the iterator also releases
    the slot it handed out last when the next one is asked for). An error on a background thread
    (an unreadable file, a launcher that cannot be reached) is raised in the caller at the point
    it was reached.

    `decoders` is one decoder or a list: with several (GPU decoders on their own streams, say),
    consecutive batches are decoded at the same time. The end of the shards, and an error on a
    background thread, come in read order: after every slot read before them. `stages` holds the
    seconds spent reading and decoding (decode summed over the decoder threads)."""

    def __init__(self, dataset: ImageDataset, shards: Shard | Iterable[Shard], decoders, ring: HostRing,
                 batch_rows: int, slow_cpus: SlowCpus | None = None, order: str = "decoded",
                 max_ahead: int = DEFAULT_MAX_AHEAD):
        if order not in ("decoded", "read"):
            raise ValueError(f"a Prefetcher hands slots over in order \"decoded\" or \"read\", not {order!r}")
        if max_ahead < 1:
            raise ValueError(f"max_ahead must be at least 1, got {max_ahead}")
        if batch_rows > ring.capacity:
            raise ValueError(f"batches of {batch_rows} rows do not fit ring slots of {ring.capacity} rows")
        self.decoders = list(decoders) if isinstance(decoders, (list, tuple)) else [decoders]
        if not self.decoders or len(ring) < len(self.decoders) + 1:
            raise ValueError(f"{len(self.decoders)} decoders need a ring of at least {len(self.decoders) + 1} "
                             f"slots, got {len(ring)}")
        self.dataset, self.ring = dataset, ring
        # GPU decoders sort a batch's rows (hardware decoder, nvImageCodec, Pillow) on the host: the
        # reader thread does it, so the decoder threads go from one GPU call to the next.
        kinds = {type(d) for d in self.decoders}
        self._route = getattr(self.decoders[0], "route", None) if len(kinds) == 1 else None
        self.batch_rows = batch_rows
        self.slow_cpus = slow_cpus  # the reader and decoders move off CPUs that run them slowly
        self.stages = {"read": 0.0, "decode": 0.0}
        # CPU seconds of each background thread (time.thread_time), set as it ends: "read",
        # "decode-0", ...: a worker that falls behind the others shows which one got dear.
        self.thread_cpu_s: dict[str, float] = {}
        self._read_cpu = ReadCpu()  # the reader's helper threads (row groups read at once), counted in "read"
        self._free: queue.Queue = queue.Queue()
        for i in range(len(ring)):
            self._free.put(i)
        self._reads: queue.Queue = queue.Queue(maxsize=len(ring))
        self._take = threading.Lock()  # a decoder takes the next read and a free slot together, in order
        self._done = threading.Condition()
        self._slots: dict[int, object] = {}  # seq -> Slot, an exception, or _DONE
        self._next = 0  # the oldest seq not yet handed over
        self._ahead = 0 if order == "read" else max_ahead  # how far past it a slot may be handed over
        self._handed_ahead: set[int] = set()  # seqs past _next already handed over
        self._stop = threading.Event()
        self._last: Slot | None = None
        self._seq = 0  # the reader's next batch number
        self._carry: _Carry | None = None  # the reader's: a shard's last rows, fewer than a batch
        self._feed = ShardFeed([shards] if isinstance(shards, Shard) else shards, self._stop)
        self._threads = [threading.Thread(target=self._read_all, name="prefetch-read", daemon=True)]
        self._threads += [threading.Thread(target=self._decode_all, args=(d,), name=f"prefetch-decode-{k}",
                                           daemon=True) for k, d in enumerate(self.decoders)]
        for t in self._threads:
            t.start()

    # -- the reader thread -------------------------------------------------------------------
    def _read_all(self) -> None:
        name_this_thread("bs-read")  # threads it starts (Arrow's) inherit the name
        cpu_at_start = time.thread_time()
        cpu_watch = watch(self.slow_cpus, "read")
        try:
            try:
                while True:
                    # Holding a shard's last rows, wait only briefly for the next shard to fill
                    # the batch: the source may hold it back until those rows are scored.
                    shard = self._feed.get(SHARD_WAIT_S if self._carry is not None else None)
                    if shard is END:
                        break
                    if shard is NOT_YET:  # the batch goes short
                        self._queue_carry(cpu_watch)
                        continue
                    self._read_shard(shard, cpu_watch)
            except Stopped:
                return
            except BaseException as exc:  # handed to the caller after the rows read before it
                self._queue_carry(cpu_watch)
                self._hand_over(self._seq, exc)
                return
            self._queue_carry(cpu_watch)
            self._hand_over(self._seq, _DONE)
        except Stopped:
            return
        finally:
            self.thread_cpu_s["read"] = time.thread_time() - cpu_at_start + self._read_cpu.seconds
            for _ in self.decoders:  # one end marker per decoder thread
                while not self._stop.is_set():
                    try:
                        self._reads.put(None, timeout=0.1)
                        break
                    except queue.Full:
                        continue

    def _read_shard(self, shard: Shard, cpu_watch) -> None:
        """Queue the shard's batches for the decoders, the first one filled up with the carried
        rows; its last rows, where they are fewer than a batch, become the carry (they wait for the
        next shard's). The carry is always current, so rows are queued once when this raises."""
        carry = self._carry
        if shard.num_rows == 0:  # its empty part file is written with the batch it joins
            segment = Segment(shard, len(carry.batch) if carry is not None else 0, 0)
            if carry is not None:
                carry.segments.append(segment)
                return
            self._hand_over(self._seq, Slot(-1, None, np.empty(0, np.int64), [], 0, [segment], self._seq))
            self._seq += 1
            return
        fill = self.batch_rows - len(carry.batch) if carry is not None else None
        batches = read_shard(self.dataset, shard, self.batch_rows, first_rows=fill, cpu=self._read_cpu)
        done = 0
        try:
            while True:
                start = time.perf_counter()
                batch = next(batches, None)
                if batch is None:
                    self.stages["read"] += time.perf_counter() - start
                    return
                segment = Segment(shard, 0, len(batch), done == 0, done + len(batch) >= shard.num_rows)
                done += len(batch)
                segments = [segment]
                if self._carry is not None:
                    segment.start = len(self._carry.batch)
                    segments, batch = self._carry.segments + segments, self._carry.batch.joined(batch)
                    self._carry = None
                self.stages["read"] += time.perf_counter() - start
                if segment.last and len(batch) < self.batch_rows:
                    self._carry = _Carry(segments, batch)
                    return
                self._queue(segments, batch, cpu_watch)
        finally:
            batches.close()

    def _queue_carry(self, cpu_watch) -> None:
        """The carried rows as a batch of their own, short of full (there is no next shard's to
        fill it with, or not in time)."""
        if self._carry is not None:
            carry, self._carry = self._carry, None
            self._queue(carry.segments, carry.batch, cpu_watch)

    def _queue(self, segments: list[Segment], batch: RowBatch, cpu_watch) -> None:
        """Number a batch and queue it for the decoders (with its route, where they have one)."""
        start = time.perf_counter()
        read = _Read(self._seq, segments, batch.ids, batch.items, self._route_ahead(batch.items))
        self.stages["read"] += time.perf_counter() - start
        cpu_watch.note(len(batch))
        while True:
            if self._stop.is_set():
                raise Stopped
            try:
                self._reads.put(read, timeout=0.1)
                break
            except queue.Full:
                continue
        self._seq += 1

    def _route_ahead(self, items):
        """The decoders' route for a batch, or None (no route method, or it failed: the decoder
        then routes the batch itself, and any error is raised where decoding errors are)."""
        if self._route is None:
            return None
        try:
            return self._route(items)
        except Exception:
            log.warning("routing a batch ahead failed; its decoder routes it", exc_info=True)
            return None

    # -- the decoder threads -----------------------------------------------------------------
    def _decode_all(self, decoder) -> None:
        name = threading.current_thread().name.replace("prefetch-", "")  # decode-k
        name_this_thread("bs-" + name)
        cpu_at_start = time.thread_time()
        try:
            self._decode_reads(decoder, watch(self.slow_cpus, name))
        finally:
            self.thread_cpu_s[name] = time.thread_time() - cpu_at_start

    def _decode_reads(self, decoder, cpu_watch) -> None:
        while True:
            with self._take:
                read = self._poll(self._reads)
                index = self._poll(self._free) if read is not None else None
            if read is None or index is None:
                return
            try:
                buffer = self.ring.buffers[index]
                start = time.perf_counter()
                if read.route is not None:
                    errors = decoder.decode_into(read.items, buffer, read.route)
                else:
                    errors = decoder.decode_into(read.items, buffer)
                self.stages["decode"] += time.perf_counter() - start
                cpu_watch.note(len(read.items))
                slot = Slot(index, buffer, read.ids, errors, len(read.items), read.segments, read.seq)
            except BaseException as exc:
                slot = exc
            self._hand_over(read.seq, slot)

    def _poll(self, source: queue.Queue):
        """The next item of `source`, or None once close() was called (checked every 0.1 s)."""
        while not self._stop.is_set():
            try:
                return source.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def _hand_over(self, seq: int, item) -> None:
        with self._done:
            self._slots[seq] = item
            self._done.notify_all()

    # -- the caller --------------------------------------------------------------------------
    def release(self, slot: Slot) -> None:
        if not slot.released:
            slot.released = True
            if slot.index >= 0:
                self._free.put(slot.index)

    def has_next(self, timeout: float = 0.0) -> bool:
        """Whether a slot (or the end) can be handed over now, waiting up to `timeout` seconds for
        one, so that iterating would not wait."""
        with self._done:
            if self._ready_seq() is None and timeout > 0:
                self._done.wait(timeout)
            return self._ready_seq() is not None

    def _ready_seq(self) -> int | None:
        """The seq to hand over next, or None: the oldest one where it is there, else the first
        decoded slot within `max_ahead` of it (not the end or an error: those wait their turn)."""
        if self._next in self._slots:
            return self._next
        ready = [seq for seq, item in self._slots.items()
                 if seq <= self._next + self._ahead and isinstance(item, Slot)]
        return min(ready) if ready else None

    def _wait_for_next(self) -> int:
        """Wait (holding self._done) until a slot or the end can be handed over; its seq."""
        while (seq := self._ready_seq()) is None:
            self._done.wait()
        return seq

    def __iter__(self) -> Iterator[Slot]:
        while True:
            if self._last is not None:
                self.release(self._last)
                self._last = None
            with self._done:
                seq = self._wait_for_next()
                item = self._slots.pop(seq)
                self._count_handed_over(seq)
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            self._last = item
            yield item

    def _count_handed_over(self, seq: int) -> None:
        """Note `seq` handed over; move `_next` past every seq handed over from it on."""
        if seq != self._next:
            self._handed_ahead.add(seq)
            return
        self._next += 1
        while self._next in self._handed_ahead:
            self._handed_ahead.remove(self._next)
            self._next += 1

    def close(self) -> None:
        """Stop the background threads (early, when the caller gives up) and wait for them."""
        self._stop.set()
        for t in self._threads[1:]:  # decoders notice the stop flag within 0.1 s
            t.join()
        self._threads[0].join()  # the reader too: it never waits on the shard source itself
        # The feed's thread notices it too, unless it is parked in the launcher's shard source (a
        # Ray actor's inbox, fed only after a shard in flight is answered), which may never return:
        # then it is left to end on its own (a daemon thread): it checks the stop flag before it
        # touches anything.
        feed = self._feed.thread
        while feed.is_alive() and not self._feed.parked:
            feed.join(0.05)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
