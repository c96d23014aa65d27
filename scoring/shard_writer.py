"""A worker's output side: each batch's rows into the part files of the shards they belong to, each
shard recorded in the manifest once its part file is complete.

    writer = ShardWriter(job, spec, manifest, metrics, on_batch, on_shard)
    meta = writer.begin(slot)              # before the slot goes back to the ring
    writer.finish(meta, pending)           # the batch's scores: written when its turn comes
    writer.reap()                          # record the shards whose part files are in place
    writer.close()                         # at the end; writer.abort() on a failure

Batches reach it in the order they were decoded (scoring.pipeline.Prefetcher), not always the order
they were read: a batch's scores wait in `held` until every batch read before it is written, so
each part file gets its rows in the dataset's order. A batch may hold the end of one shard and the
start of the next (its slot's segments).

Every call on a part file (PartWriter's add and close: top-k, Arrow arrays, Parquet encoding, the
hash, fsync and rename) runs on one thread of its own, in the order they were asked for; the
calling thread only hands them over, so the next batch's launch never waits on them. On the
calling thread the part files held up launches: a close took 3.3-3.9 ms on an H100 host's disk,
and a shared filesystem can take far longer; with raw outputs an add took 3.3 ms a batch on the
2-core dev box. What the part thread did is taken back on the calling thread (`reap`), oldest first:
an error is raised there, and a closed shard is recorded and reported (on_shard "done") there, in
read order.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from scoring.dataset import Shard
from scoring.errors import ScoringError
from scoring.job import JobSpec
from scoring.manifest import Manifest
from scoring.outputs import OutputSpec, PartWriter
from scoring.pipeline import Segment, Slot
from scoring.report import Metrics

log = logging.getLogger(__name__)

# Calls the part thread may have outstanding before the calling thread waits for the oldest: a disk
# slower than the engine then slows the engine, instead of piling up batches of scores in memory.
MAX_PART_TASKS = 64


class BadRowError(ScoringError):
    """A row that could not be scored while [run] fail_fast is on."""


class ShardWriter:
    """One open part file per shard in flight; its calls run on the part thread (see the module)."""

    def __init__(self, job: JobSpec, spec: OutputSpec, manifest: Manifest, metrics: Metrics, on_batch, on_shard):
        self.job, self.spec, self.manifest, self.metrics = job, spec, manifest, metrics
        self.on_batch, self.on_shard = on_batch, on_shard
        self.open: dict[str, PartWriter] = {}
        self.images = self.errors = 0
        self.held: dict[int, tuple] = {}  # seq -> (what begin() kept, scores): read after one not yet written
        self.next_seq = 0  # the seq of the next batch to write
        # What the part thread was asked to do, oldest first: the shard for a close, None for an
        # add or an abort, with the future of the call.
        self.tasks: deque = deque()
        self._part_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bs-parts")
        self.cpu_s: float | None = None  # the part thread's CPU seconds, set by close()

    def begin(self, slot: Slot) -> tuple:
        """What finish() needs of the slot (the slot itself is recycled before its scores arrive)."""
        return slot.seq, slot.segments, slot.ids, list(slot.errors), slot.rows

    def finish(self, meta: tuple, handle) -> None:
        """Take a batch's scores (waiting for them), then write every batch whose turn has come."""
        self.held[meta[0]] = (meta, handle.result() if handle is not None else None)
        while self.next_seq in self.held:
            meta, scores = self.held.pop(self.next_seq)
            self.next_seq += 1
            self._write(meta, scores)
        self.reap()
        while len(self.tasks) > MAX_PART_TASKS:
            self._take_back(*self.tasks.popleft())

    def _write(self, meta: tuple, scores) -> None:
        """A batch's rows into the part files of its segments' shards."""
        _, segments, ids, errors, rows = meta
        for segment in segments:
            rows_of = slice(segment.start, segment.start + segment.rows)
            self._write_segment(segment, ids[rows_of], errors[rows_of], None if scores is None else scores[rows_of])
        bad = sum(e is not None for e in errors)
        self.images += rows
        self.errors += bad
        if rows:
            self.metrics.tick(self.images, self.errors)
            if self.on_batch is not None:
                self.on_batch(rows, bad)

    def _write_segment(self, segment: Segment, ids, errors: list, scores) -> None:
        shard = segment.shard
        self._check(shard, ids, errors)
        if segment.first:
            if self.on_shard is not None:
                self.on_shard("start", shard, {})
            self.open[shard.key] = PartWriter(self.job.output.dir, shard.key, self.spec)
        if segment.rows:
            self.tasks.append((None, self._part_thread.submit(_add, self.open[shard.key], ids, scores, errors)))
        if segment.last:
            part = self.open.pop(shard.key)
            self.tasks.append((shard, self._part_thread.submit(_close, part)))

    def _check(self, shard: Shard, ids, errors: list) -> None:
        """Stop at the first bad row (in read order) when [run] fail_fast is on."""
        failed = [i for i, e in enumerate(errors) if e is not None]
        if failed and self.job.run.fail_fast:
            i = failed[0]
            row_id = ids[i].item() if isinstance(ids[i], np.generic) else ids[i]  # 2, not np.int64(2)
            raise BadRowError(
                f"row with id {row_id!r} (shard {shard.key}, {shard.file}) cannot be scored: "
                f"{errors[i]}. [run] fail_fast is on, so the job stops at the first bad row; set "
                f"fail_fast = false to write such rows with an error message and carry on")

    def reap(self, wait: bool = False) -> None:
        """Take back what the part thread has done, oldest first (with `wait`, all of it): a
        failed call raises here; a closed shard is recorded."""
        while self.tasks and (wait or self.tasks[0][1].done()):
            self._take_back(*self.tasks.popleft())

    def _take_back(self, shard: Shard | None, future) -> None:
        info, seconds = future.result()
        self.metrics.add_stage("write", seconds)
        if shard is None:  # an add or an abort
            return
        self.manifest.record(info)
        if info.rows != shard.num_rows:  # pragma: no cover - read_shard guarantees it
            raise ScoringError(f"shard {shard.key}: {shard.num_rows} rows expected, {info.rows} written")
        if self.on_shard is not None:  # the part's own counts: the rows and error rows it holds
            self.on_shard("done", shard, {"rows": info.rows, "errors": info.errors})

    def close(self) -> None:
        """At the end: every shard recorded, every batch handed over written."""
        self.reap(wait=True)
        if self.held:  # pragma: no cover - the Prefetcher hands over every seq before its end
            raise ScoringError(f"batches {sorted(self.held)} were scored but never written: batch "
                               f"{self.next_seq} before them never arrived")
        self.cpu_s = self._part_thread.submit(time.thread_time).result()  # that thread's CPU time
        self._part_thread.shutdown(wait=True)  # after the checks: abort() still has the thread

    def abort(self) -> None:
        """A failure: drop every part file not finished (nothing of those shards is left behind).
        Those closed already are whole: they are recorded, as they were before the failure."""
        for part in self.open.values():  # on the part thread, after the adds asked of it
            self.tasks.append((None, self._part_thread.submit(_abort, part)))
        self.open.clear()
        while self.tasks:
            shard, future = self.tasks.popleft()
            try:
                self._take_back(shard, future)
            except Exception:  # the failure being handled is the one to raise
                log.debug("a part file's call failed as the job stopped", exc_info=True)
        self._part_thread.shutdown(wait=True)


# -- on the part thread: (what the call returned, its seconds) ---------------------------------------

def _add(part: PartWriter, ids, scores, errors):
    start = time.perf_counter()
    try:
        part.add(ids, scores, errors)
    except BaseException:
        part.abort()  # its close must fail too: a part file short of rows is never recorded
        raise
    return None, time.perf_counter() - start


def _close(part: PartWriter):
    start = time.perf_counter()
    info = part.close()
    return info, time.perf_counter() - start


def _abort(part: PartWriter):
    part.abort()
    return None, 0.0
