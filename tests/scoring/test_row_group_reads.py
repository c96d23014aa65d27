"""scoring/row_group_reads.py: row groups read on threads at once, in order, cut where the caller's batches end."""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring import row_group_reads
from scoring.row_group_reads import ReadCpu, first_batch_rows, row_group_batches


@pytest.mark.parametrize("offset, first, size, rows", [
    (0, 3, 4, 3), (2, 3, 4, 1), (3, 3, 4, 4), (7, 3, 4, 4), (8, 3, 4, 3), (0, 4, 4, 4), (9, 4, 4, 3)])
def test_a_row_groups_first_batch_ends_where_the_callers_does(offset, first, size, rows):
    assert first_batch_rows(offset, first, size) == rows


def write(path, sizes):
    table = pa.table({"n": pa.array(range(sum(sizes)), pa.int64())})
    with pq.ParquetWriter(path, table.schema) as writer:
        at = 0
        for n in sizes:
            writer.write_table(table.slice(at, n), row_group_size=n)
            at += n
    return [(g, n) for g, n in enumerate(sizes)]


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_batches_come_in_order_cut_at_the_callers_batch_ends(tmp_path, threads):
    groups = write(tmp_path / "a.parquet", [5, 6, 2, 7])
    cpu = ReadCpu()
    batches = list(row_group_batches(lambda: pq.ParquetFile(tmp_path / "a.parquet"), groups, ["n"], 3, 4,
                                     threads, cpu))
    rows = [b.column(0).to_pylist() for b in batches]
    assert sum(rows, []) == list(range(20))
    # caller's batches end after rows 3, 7, 11, 15, 19: each Arrow batch lies inside one of them
    ends = {3, 7, 11, 15, 19, 20}
    assert all(len({next(e for e in sorted(ends) if e > x) for x in r}) == 1 for r in rows)
    assert (cpu.seconds > 0) == (threads > 1)


def test_a_failing_row_group_raises_at_its_turn_after_those_before(tmp_path, monkeypatch):
    groups = write(tmp_path / "a.parquet", [4, 4, 4, 4])
    real = row_group_reads.read_row_group

    def failing(open_file, group, columns, first, size):
        if group == 2:
            raise OSError("disk gone")
        return real(open_file, group, columns, first, size)

    monkeypatch.setattr(row_group_reads, "read_row_group", failing)
    got = []
    with pytest.raises(OSError, match="disk gone"):
        for batch in row_group_batches(lambda: pq.ParquetFile(tmp_path / "a.parquet"), groups, ["n"], 4, 4, 2):
            got += batch.column(0).to_pylist()
    assert got == list(range(8))


def test_a_consumer_that_stops_early_leaves_no_thread_behind(tmp_path):
    groups = write(tmp_path / "a.parquet", [3] * 10)
    before = threading.active_count()
    batches = row_group_batches(lambda: pq.ParquetFile(tmp_path / "a.parquet"), groups, ["n"], 3, 3, 3)
    assert next(batches).column(0).to_pylist() == [0, 1, 2]
    batches.close()
    assert threading.active_count() == before


def test_bad_arguments():
    with pytest.raises(ValueError, match="must be positive"):
        next(row_group_batches(lambda: None, [(0, 1)], ["n"], 1, 1, 0))
