"""scoring/row_groups.py: a shard's row groups read ahead on a pool give exactly the rows read one
after another; big row groups stream; errors and early closes behave."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring import row_groups
from scoring.dataset import open_dataset, read_shard
from scoring.errors import DatasetError
from tests.scoring.test_dataset import HF_TYPE, binary_file, fake_bytes, write


class CountingPool(ThreadPoolExecutor):
    """A real pool that counts what it was given."""

    def __init__(self, workers=2):
        super().__init__(workers)
        self.submitted = 0
        self._count = threading.Lock()

    def submit(self, fn, *args, **kwargs):
        with self._count:
            self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def rows_of(ds, shards, batch_rows, pool):
    out = []
    for shard in shards:
        for batch in read_shard(ds, shard, batch_rows, pool):
            assert 0 < len(batch) <= batch_rows
            out.append((batch.ids.tolist(), list(batch.items)))
    return out


@pytest.mark.parametrize("batch_rows", [1, 3, 7, 64])
def test_read_ahead_gives_the_same_batches(tmp_path, batch_rows):
    # uneven row groups, an empty one among them, nulls, two files
    write(tmp_path / "a.parquet", {"image": pa.array([fake_bytes(r) if r % 9 else None for r in range(40)])},
          [5, 11, 0, 3, 21])
    binary_file(tmp_path / "b.parquet", range(40, 75), row_group_rows=6, with_id=True)
    ds = open_dataset(tmp_path / "a.parquet")
    ds_b = open_dataset(tmp_path / "b.parquet")
    with CountingPool() as pool:
        for dataset in (ds, ds_b):
            shards = dataset.shards(13)
            assert rows_of(dataset, shards, batch_rows, pool) == rows_of(dataset, shards, batch_rows, None)
        assert pool.submitted > 0  # the pool did the reading


def test_hf_struct_columns_read_ahead(tmp_path):
    images = pa.array([{"bytes": fake_bytes(r), "path": f"{r}.jpg"} for r in range(20)], HF_TYPE)
    write(tmp_path / "hf.parquet", {"image": images, "id": pa.array(range(100, 120))}, 4)
    ds = open_dataset(tmp_path / "hf.parquet")
    with ThreadPoolExecutor(2) as pool:
        got = rows_of(ds, ds.shards(8), 5, pool)
    assert [i for ids, _ in got for i in ids] == list(range(100, 120))
    assert [x for _, items in got for x in items] == [fake_bytes(r) for r in range(20)]


def test_big_row_groups_stream_instead(tmp_path, monkeypatch):
    binary_file(tmp_path / "a.parquet", range(24), row_group_rows=8)
    ds = open_dataset(tmp_path / "a.parquet")
    monkeypatch.setattr(row_groups, "READ_AHEAD_MAX_GROUP_BYTES", 1)  # every group is "big"
    with CountingPool() as pool:
        got = rows_of(ds, ds.shards(24), 5, pool)
        assert pool.submitted == 0
    assert [i for ids, _ in got for i in ids] == list(range(24))


def test_at_most_ahead_groups_are_in_flight(tmp_path):
    binary_file(tmp_path / "a.parquet", range(40), row_group_rows=4)  # 10 row groups
    with CountingPool() as pool:
        tables = row_groups.read_ahead(str(tmp_path / "a.parquet"), range(10), ["image"], pool, ahead=3)
        first = next(tables)
        assert first.num_rows == 4 and pool.submitted == 3  # not all ten at once
        rest = list(tables)
    assert sum(t.num_rows for t in rest) == 36 and pool.submitted == 10


def test_closing_early_cancels_what_has_not_started(tmp_path, monkeypatch):
    binary_file(tmp_path / "a.parquet", range(40), row_group_rows=4)
    go = {g: threading.Event() for g in range(10)}
    go[0].set()
    started = []
    original = row_groups.read_row_group

    def gated_read(file, group, columns):
        started.append(group)
        go[group].wait(5)
        return original(file, group, columns)

    monkeypatch.setattr(row_groups, "read_row_group", gated_read)
    with ThreadPoolExecutor(1) as pool:  # one thread: group 1 runs (and waits) while group 2 queues
        tables = row_groups.read_ahead(str(tmp_path / "a.parquet"), range(10), ["image"], pool, ahead=3)
        assert next(tables).num_rows == 4
        deadline = time.monotonic() + 5
        while 1 not in started and time.monotonic() < deadline:  # the thread has taken group 1
            time.sleep(0.001)
        tables.close()
        go[1].set()
    assert started == [0, 1]  # group 2 was cancelled before it started; nothing past it was asked for


def test_a_failed_read_names_the_shard(tmp_path, monkeypatch):
    binary_file(tmp_path / "a.parquet", range(24), row_group_rows=4)
    ds = open_dataset(tmp_path / "a.parquet")
    original = row_groups.read_row_group

    def failing(file, group, columns):
        if group == 3:
            raise OSError("disk went away")
        return original(file, group, columns)

    monkeypatch.setattr(row_groups, "read_row_group", failing)
    shard = ds.shards(24)[0]
    with ThreadPoolExecutor(2) as pool:
        batches = read_shard(ds, shard, 5, pool)
        got = [next(batches), next(batches)]  # rows 0-9 come from groups 0-2
        with pytest.raises(DatasetError, match=r"cannot read row groups 0\.\.5 of .*a\.parquet \(shard part-00000\): "
                                               r"disk went away"):
            list(batches)
    assert [i for b in got for i in b.ids.tolist()] == list(range(10))
