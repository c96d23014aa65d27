"""A shard's rows as Arrow record batches, with its row groups read ahead on a few threads.

One thread reading a worker's Parquet has too little room to spare: on 4 x H200 a GPU worker's
reader used about 0.35 of a core at ~30,000 images/s, and in one worker of most 4-GPU runs that
same reading took ~3x the CPU per image for seconds at a time, the reader became the bottleneck and
the worker fell to 20-24k images/s (benchmarks/results/scaling/h200x4_2026-11-22_s10_threads/).
pyarrow decodes a row group without holding the GIL, so two threads read two row groups at once:
on the 2-core dev box 9.1 us per ~30 kB JPEG row with one thread, 4.6 with two.

A row group is read whole, so only small ones are read ahead: those whose uncompressed size in the
footer is at most READ_AHEAD_MAX_GROUP_BYTES, with at most `ahead` of them in flight. A shard with a
larger row group streams as before (pyarrow's iter_batches, one thread, memory bounded by the
batch, not the row group). Each read opens the file on its own (footers are small, and a
ParquetFile is not shared between threads).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Executor, Future
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

READ_AHEAD_MAX_GROUP_BYTES = 64 << 20
READ_AHEAD_THREADS = 2  # a worker's pool (scoring.pipeline.Prefetcher)


def shard_batches(pf: pq.ParquetFile, file: str, groups: range, columns: Sequence[str], batch_rows: int,
                  pool: Executor | None = None, ahead: int = READ_AHEAD_THREADS + 1) -> Iterator[pa.RecordBatch]:
    """The rows of row groups `groups` of `pf` (opened from `file`), in order, as record batches of
    any size: read ahead on `pool` when every group is small, else streamed from `pf`."""
    if pool is None or not groups or not all_small(pf.metadata, groups):
        yield from pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=list(columns), use_threads=False)
        return
    for table in read_ahead(file, groups, columns, pool, ahead):
        yield from table.to_batches()


def all_small(meta: pq.FileMetaData, groups: range) -> bool:
    return all(meta.row_group(g).total_byte_size <= READ_AHEAD_MAX_GROUP_BYTES for g in groups)


def read_ahead(file: str, groups: range, columns: Sequence[str], pool: Executor, ahead: int) -> Iterator[pa.Table]:
    """Row groups `groups` of `file` as tables, in order, up to `ahead` being read at once. Closing
    the iterator early cancels the reads not yet started (those running finish, unread)."""
    pending: deque[Future] = deque()
    todo = iter(groups)
    try:
        while True:
            while len(pending) < max(1, ahead):
                g = next(todo, None)
                if g is None:
                    break
                pending.append(pool.submit(read_row_group, file, g, list(columns)))
            if not pending:
                return
            yield pending.popleft().result()  # a read's error is raised here, in order
    finally:
        for future in pending:
            future.cancel()


def read_row_group(file: str, group: int, columns: list[str]) -> pa.Table:
    pf = pq.ParquetFile(file, memory_map=True)  # see scoring.dataset._read_footer
    try:
        return pf.read_row_group(group, columns=columns, use_threads=False)
    finally:
        pf.close()
