"""A shard's rows as Arrow record batches, its row groups read on a few threads at once, in order.

    cpu = ReadCpu()
    for batch in row_group_batches(open_file, groups=[(4, 1042), (5, 1042)], columns=["image", "id"],
                                   first=100, size=256, threads=2, cpu=cpu):
        ...                               # pyarrow.RecordBatch, the rows in file order
    cpu.seconds                           # CPU time the helper threads spent reading

Why: with JPEGs as heavy as real photos (about 120 KB), Arrow's reading of one shard on one
thread was what held a GPU worker back. It used a whole core at about 21,000-23,000 images/s on
an H100 host, where the engine alone runs 31,500 (benchmarks/results/scoring/
h100_2026-11-23_s27/NOTES.md, section 7). Arrow's reader gives up the GIL while it decodes, so row
groups read on threads of their own decode side by side.

Each row group's first batch is cut where the caller's batches will end: batches of `first` rows,
then `size` at a time, counted from the first group's first row. The later batches then lie inside
one Arrow batch each, and need no copy (scoring.encoded_items). Only a batch that runs on into the
next row group spans two.

At most `threads` row groups are read ahead of the one being handed out. A row group's batches are
held until their turn, so memory holds about `threads` + 1 row groups. An error reading a row group
is raised where its batches would have come. A consumer that stops early (closes the generator)
waits for the reads in flight, and nothing more is read.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from scoring.thread_names import name_this_thread

# Threads a shard's row groups are read on ($BATCHSCORE_READ_THREADS overrides it: scoring.dataset).
# 1 reads each shard in one Arrow read on the reader thread. With 119.6 KB JPEGs on an H100, 2 scored
# 0.720-0.740 of the engine alone against 0.676-0.716 with 1, alternating: the decoders were then
# what held it back, and a fourth did not help (0.730-0.736; benchmarks/results/scoring/
# h100_2026-11-23_s27/NOTES.md, section 7, call 9). Not measured on lighter files, so 1 stays.
READ_THREADS = 1


@dataclass
class ReadCpu:
    """CPU seconds spent reading on helper threads, which the reading thread's own clock misses."""

    seconds: float = 0.0


def first_batch_rows(offset: int, first: int, size: int) -> int:
    """Rows from `offset` (a row group's first row, counted from the shard's) to the end of the
    caller's batch that holds it, when batches are `first` rows, then `size` at a time."""
    if offset < first:
        return first - offset
    return size - (offset - first) % size


def cut_batches(pf: pq.ParquetFile, row_groups: Sequence[int], columns: Sequence[str], first: int,
                size: int) -> Iterator[pa.RecordBatch]:
    """Row groups `row_groups` of `pf` in one Arrow read on this thread: `first` rows, then `size`
    at a time (where this pyarrow lets the batch size change mid-read; else all of `first`),
    Arrow's batches running on across the row groups.

    The later batches are resized because a shard whose first batch fills another shard's last
    (first_rows) would otherwise have every later batch straddle two of Arrow's, and EncodedItems
    copy such a batch's bytes into one buffer. With row groups of 1,041-1,042 rows and shards of
    4,096 rows, 369 of the 414 batches of 256 did (benchmarks/results/scoring/h100_2026-11-23_s27/
    NOTES.md)."""
    batches = pf.iter_batches(batch_size=first, row_groups=list(row_groups), columns=list(columns), use_threads=False)
    for n, batch in enumerate(batches):
        if n == 0 and first != size:
            resize_batches(pf, size)
        yield batch


def read_row_group(open_file: Callable[[], pq.ParquetFile], group: int, columns: Sequence[str], first: int,
                   size: int) -> list[pa.RecordBatch]:
    """One row group's batches, cut_batches' way, from a reader of its own."""
    pf = open_file()
    try:
        return list(cut_batches(pf, [group], columns, first, size))
    finally:
        pf.close()


def resize_batches(pf: pq.ParquetFile, size: int) -> None:
    """Have the batches `pf` is reading from here on be `size` rows long, where Arrow lets it: its
    reader takes the new size at its next batch. Where it does not (another pyarrow), the batches
    keep their first size and the caller's slicing still gives the right rows."""
    set_batch_size = getattr(getattr(pf, "reader", None), "set_batch_size", None)
    if set_batch_size is not None:
        set_batch_size(size)


def _on_helper(open_file, group, columns, first, size) -> tuple[list[pa.RecordBatch], float]:
    """read_row_group on a helper thread, with the CPU time it took there."""
    name_this_thread("bs-read-rg")
    start = time.thread_time()
    batches = read_row_group(open_file, group, columns, first, size)
    return batches, time.thread_time() - start


def row_group_batches(open_file: Callable[[], pq.ParquetFile], groups: Sequence[tuple[int, int]],
                      columns: Sequence[str], first: int, size: int, threads: int = 1,
                      cpu: ReadCpu | None = None) -> Iterator[pa.RecordBatch]:
    """The record batches of row groups `groups` ((index, rows) pairs, in order) of the file
    `open_file()` opens (once per row group: each read has a reader of its own), read on up to
    `threads` threads; `cpu` adds up the helper threads' CPU time. See the module."""
    if threads < 1 or first < 1 or size < 1:
        raise ValueError(f"threads, first and size must be positive, got {threads}, {first}, {size}")
    cuts, offset = [], 0
    for group, rows in groups:
        cuts.append((group, first_batch_rows(offset, first, size)))
        offset += rows
    if threads == 1 or len(cuts) < 2:  # on this thread, one row group at a time
        for group, cut in cuts:
            yield from read_row_group(open_file, group, columns, cut, size)
        return
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bs-read-rg")
    pending: deque[Future] = deque()

    def take_oldest() -> list[pa.RecordBatch]:
        batches, seconds = pending.popleft().result()
        if cpu is not None:
            cpu.seconds += seconds
        return batches

    try:
        for group, cut in cuts:
            pending.append(pool.submit(_on_helper, open_file, group, columns, cut, size))
            if len(pending) > threads:
                yield from take_oldest()
        while pending:
            yield from take_oldest()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
