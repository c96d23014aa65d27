"""The fast paths of the scoring hot loop give exactly what the plain definitions give.

top_k: k rounds of argmax for small k, argpartition for larger k, a full stable sort for the rows
neither settles (ties at the k-th place, NaN, -inf). PartWriter.add: list columns built from flat
values and offsets, no per-row Python when every row scored. read_shard: ids and items converted
column-wise, for every kind of image column.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring.dataset import open_dataset, read_shard
from scoring.outputs import OutputSpec, PartWriter, top_k
from tests.scoring.test_outputs import reference_top_k

# ---------------------------------------------------------------------------------------------
# top_k
# ---------------------------------------------------------------------------------------------

SMALL_K, LARGE_K = 16, 17  # the largest k of the argmax path, the smallest of the partition path


def test_rows_running_into_minus_infinity_never_repeat_a_class():
    scores = np.array([[-1.5, -np.inf, 0.25],
                       [-np.inf, -np.inf, 1.0],
                       [-np.inf, -np.inf, -np.inf]], np.float32)
    indices, values = top_k(scores, 3)
    assert indices.tolist() == [[2, 0, 1], [2, 0, 1], [0, 1, 2]]
    assert values[0].tolist() == [0.25, -1.5, -np.inf]
    assert top_k(np.array([[-1.5, -np.inf]], np.float32), 2)[0].tolist() == [[0, 1]]


def test_nan_and_infinities_rank_as_defined_on_both_paths():
    row = np.full(40, -1.0, np.float32)
    row[[3, 30]] = np.nan
    row[[5, 25]] = np.inf
    row[[7, 8]] = -np.inf
    row[[10, 20, 35]] = 2.0
    # inf, inf, 2, 2, 2, then the -1s by index (NaN below -inf, -inf below every -1)
    best = [5, 25, 10, 20, 35, 0, 1, 2, 4, 6, 9, 11, 12, 13, 14, 15, 16]
    for k in (SMALL_K, LARGE_K):
        indices, values = top_k(row[None, :], k)
        assert indices[0].tolist() == best[:k]
        assert values[0, :3].tolist() == [np.inf, np.inf, 2.0]
    indices, _ = top_k(row[None, :], 40)
    assert indices[0, -4:].tolist() == [7, 8, 3, 30]  # -inf before NaN, each pair by index


@pytest.mark.parametrize("k", [1, 2, 5, SMALL_K, LARGE_K, 30, 64])
def test_ties_at_the_kth_place_go_to_the_lower_index(k):
    classes = 64
    scores = np.zeros((3, classes), np.float32)
    scores[0, ::2] = 1.0  # 32 equal bests: the k lowest even indices win
    scores[1, 40:] = 0.5  # 24 equal bests at the end, zeros before them
    scores[2] = np.arange(classes) % 4  # groups of equal scores, no unique k-th value
    indices, values = top_k(scores, k)
    assert indices[0].tolist() == (list(range(0, classes, 2)) + list(range(1, classes, 2)))[:k]
    assert indices[1].tolist() == (list(range(40, 64)) + list(range(40)))[:k]
    expected_row_2 = [i for v in (3, 2, 1, 0) for i in range(classes) if i % 4 == v][:k]
    assert indices[2].tolist() == expected_row_2
    np.testing.assert_array_equal(values, np.take_along_axis(scores, indices.astype(np.int64), axis=1))


def test_signed_zeros_are_equal_scores():
    scores = np.array([[-0.0, 0.0, -0.0, -1.0]], np.float32)
    assert top_k(scores, 3)[0].tolist() == [[0, 1, 2]]
    assert top_k(np.tile(scores, (1, 6)), 20)[0][0, :3].tolist() == [0, 1, 2]


@pytest.mark.parametrize("k", [1, 3, SMALL_K, LARGE_K, 50, 200])
def test_both_paths_match_the_definition_on_mixed_rows(k):
    rng = np.random.default_rng(11)
    scores = rng.standard_normal((120, 200)).astype(np.float32)
    scores[::4] = rng.integers(0, 5, size=scores[::4].shape)  # ties everywhere
    scores[1::9, ::7] = np.nan
    scores[2::9, ::3] = -np.inf
    scores[3::9, 1::5] = np.inf
    indices, values = top_k(scores, k)
    np.testing.assert_array_equal(indices, reference_top_k(scores, k))
    np.testing.assert_array_equal(values, np.take_along_axis(scores, indices.astype(np.int64), axis=1))


def test_top_k_leaves_the_callers_scores_alone():
    scores = np.array([[3.0, 1.0, 2.0, np.nan], [0.0, 5.0, 5.0, 1.0]], np.float32)
    before = scores.copy()
    for k in (2, LARGE_K):
        top_k(scores, k)
    np.testing.assert_array_equal(scores, before)


# ---------------------------------------------------------------------------------------------
# PartWriter.add
# ---------------------------------------------------------------------------------------------


def read_part(tmp_path, info):
    return pq.read_table(tmp_path / info.file).to_pylist()


def test_error_rows_mixed_with_scored_rows_in_every_column(tmp_path):
    spec = OutputSpec(top_k=2, labels=["cat", "dog", "owl"], raw=True)
    writer = PartWriter(tmp_path, "part-00000", spec)
    writer.add(np.array([10, 11, 12]), np.array([[0.1, 0.7, 0.2], [0.0, 0.0, 0.0], [0.5, 0.1, 0.9]], np.float32),
               [None, "cannot identify image file", None])
    writer.add(np.array([13, 14]), np.array([[9.0, 9.0, 1.0], [1.0, 2.0, 3.0]], np.float32),
               [ValueError("bad header"), ""])  # not a str: written as str(); "" is an error too
    writer.add(np.array([15]), np.array([[0.3, 0.2, 0.1]], np.float32), [None])
    info = writer.close()
    assert (info.rows, info.errors) == (6, 3)
    rows = read_part(tmp_path, info)
    assert [r["id"] for r in rows] == [10, 11, 12, 13, 14, 15]
    assert [r["error"] for r in rows] == [None, "cannot identify image file", None, "bad header", "", None]
    assert [r["top_k_indices"] for r in rows] == [[1, 2], None, [2, 0], None, None, [0, 1]]
    assert [r["top_k_labels"] for r in rows] == [["dog", "owl"], None, ["owl", "cat"], None, None, ["cat", "dog"]]
    assert rows[0]["top_k_scores"] == pytest.approx([0.7, 0.2])
    assert rows[2]["top_k_scores"] == pytest.approx([0.9, 0.5])
    assert rows[1]["top_k_scores"] is None
    assert rows[0]["raw"] == pytest.approx([0.1, 0.7, 0.2])
    assert all(len(rows[i]["raw"]) == 3 and np.isnan(rows[i]["raw"]).all() for i in (1, 3, 4))


def test_batches_where_every_row_scored_have_no_nulls_but_the_error_column(tmp_path):
    writer = PartWriter(tmp_path, "part-00000", OutputSpec(top_k=3))
    for start in (0, 4):
        scores = np.arange(start, start + 4 * 5, dtype=np.float32)[:20].reshape(4, 5) % 7
        writer.add(np.arange(start, start + 4), scores, [None] * 4)
    table = pq.read_table(tmp_path / writer.close().file)
    assert table.column("error").null_count == 8
    assert table.column("top_k_indices").null_count == 0
    assert table.column("top_k_indices").to_pylist()[:2] == [[4, 3, 2], [1, 0, 4]]
    assert table.column("top_k_scores").to_pylist()[0] == [4.0, 3.0, 2.0]


def test_a_batch_where_every_row_failed_despite_scores(tmp_path):
    writer = PartWriter(tmp_path, "part-00000", OutputSpec(top_k=2, labels=["a", "b", "c"]))
    writer.add(np.array(["x", "y"], object), np.ones((2, 3), np.float32), ["bad", "worse"])
    writer.add(np.array(["z"], object), np.array([[1.0, 3.0, 2.0]], np.float32), [None])
    rows = read_part(tmp_path, writer.close())
    assert [(r["id"], r["error"], r["top_k_indices"], r["top_k_labels"]) for r in rows] == [
        ("x", "bad", None, None), ("y", "worse", None, None), ("z", None, [1, 2], ["b", "c"])]


def test_an_empty_batch_first_then_rows(tmp_path):
    writer = PartWriter(tmp_path, "part-00000", OutputSpec(top_k=1, raw=True))
    writer.add(np.array([], np.int64), np.zeros((0, 2), np.float32), [])
    writer.add(np.array([7]), np.array([[0.0, 1.0]], np.float32), [None])
    rows = read_part(tmp_path, writer.close())
    assert rows == [{"id": 7, "top_k_indices": [1], "top_k_scores": [1.0], "raw": [0.0, 1.0], "error": None}]


def test_buffered_rows_keep_their_values_when_the_caller_reuses_its_arrays(tmp_path):
    writer = PartWriter(tmp_path, "part-00000", OutputSpec(top_k=2, raw=True))
    scores = np.array([[0.1, 0.9, 0.5], [0.8, 0.2, 0.3]], np.float32)
    writer.add(np.array([0, 1]), scores, [None, None])
    scores[:] = -5.0  # the caller's buffer is refilled before the part is written
    rows = read_part(tmp_path, writer.close())
    assert [r["top_k_indices"] for r in rows] == [[1, 2], [0, 2]]
    assert rows[0]["top_k_scores"] == pytest.approx([0.9, 0.5])
    assert rows[1]["raw"] == pytest.approx([0.8, 0.2, 0.3])


def test_rows_stay_in_order_across_row_groups_with_errors(tmp_path):
    writer = PartWriter(tmp_path, "part-00000", OutputSpec(top_k=1), row_group_rows=7)
    for start in range(0, 30, 3):
        ids = np.arange(start, start + 3)
        scores = np.eye(3, dtype=np.float32)[(ids % 3)]
        writer.add(ids, scores, [f"e{i}" if i % 4 == 0 else None for i in ids])
    info = writer.close()
    assert (info.rows, info.errors) == (30, 8)
    rows = read_part(tmp_path, info)
    assert [r["id"] for r in rows] == list(range(30))
    assert [r["error"] for r in rows] == [f"e{i}" if i % 4 == 0 else None for i in range(30)]
    assert [r["top_k_indices"] for r in rows] == [None if i % 4 == 0 else [i % 3] for i in range(30)]


# ---------------------------------------------------------------------------------------------
# read_shard: every kind of image column
# ---------------------------------------------------------------------------------------------


def write_groups(path, table: pa.Table, sizes: list[int]):
    with pq.ParquetWriter(path, table.schema) as writer:
        start = 0
        for n in sizes:
            writer.write_table(table.slice(start, n), row_group_size=n)
            start += n
    return path


def read_rows(path, batch_rows):
    ds = open_dataset(path)
    ids, items = [], []
    for shard in ds.shards(10**6):
        for batch in read_shard(ds, shard, batch_rows):
            ids.append(batch.ids)
            items.extend(batch.items)
    return ids, items


@pytest.mark.parametrize("value_type", [pa.binary(), pa.large_binary(), pa.binary(3)])
def test_binary_columns_give_bytes_and_none(tmp_path, value_type):
    values = [b"a%02d" % r if r % 4 != 1 else None for r in range(11)]
    table = pa.table({"image": pa.array(values, value_type)})
    ids, items = read_rows(write_groups(tmp_path / "d.parquet", table, [4, 3, 4]), batch_rows=3)
    assert items == values
    assert all(type(item) is bytes for item in items if item is not None)
    assert np.concatenate(ids).tolist() == list(range(11))


def test_hf_struct_nulls_of_the_struct_and_of_its_bytes(tmp_path):
    hf = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    cells = [{"bytes": b"\xff\xd8one", "path": "1.jpg"}, None, {"bytes": None, "path": "3.jpg"},
             {"bytes": b"", "path": "4.jpg"}, {"bytes": b"\xff\xd8five", "path": None}]
    table = pa.table({"id": pa.array([f"k{r}" for r in range(5)], pa.large_string()), "image": pa.array(cells, hf)})
    ids, items = read_rows(write_groups(tmp_path / "d.parquet", table, [2, 3]), batch_rows=4)
    assert items == [b"\xff\xd8one", None, None, b"", b"\xff\xd8five"]
    assert type(items[3]) is bytes and type(items[4]) is bytes
    assert [batch.dtype for batch in ids] == [np.dtype(object)] * 2
    assert np.concatenate(ids).tolist() == ["k0", "k1", "k2", "k3", "k4"]
    assert all(type(i) is str for i in np.concatenate(ids))


def test_integer_ids_of_any_width_are_int64(tmp_path):
    table = pa.table({"id": pa.array([5, -2, 9], pa.int16()), "image": pa.array([b"x", None, b"z"])})
    ids, items = read_rows(write_groups(tmp_path / "d.parquet", table, [2, 1]), batch_rows=3)
    assert ids[0].dtype == np.int64 and ids[0].tolist() == [5, -2, 9]
    assert items == [b"x", None, b"z"]


@pytest.mark.parametrize("list_type", [pa.list_(pa.uint8()), pa.large_list(pa.uint8())])
def test_variable_tensor_rows_null_or_of_the_wrong_length(tmp_path, caplog, list_type):
    good = [np.full(12, r, np.uint8) for r in range(8)]
    rows = [good[0], None, good[2], np.zeros(5, np.uint8), good[4], None, np.zeros(13, np.uint8), good[7]]
    field = pa.field("pixels", list_type, metadata={b"shape": b"2,2,3"})
    table = pa.table({"id": [f"r{r}" for r in range(8)], "pixels": pa.array(rows, list_type)},
                     schema=pa.schema([("id", pa.string()), field]))
    with caplog.at_level(logging.WARNING, logger="scoring.dataset"):
        # batches of 3 over row groups of 4: a batch spans two chunks, one starts mid-chunk
        _, items = read_rows(write_groups(tmp_path / "t.parquet", table, [4, 4]), batch_rows=3)
    assert [i for i, item in enumerate(items) if item is None] == [1, 3, 5, 6]
    for r in (0, 2, 4, 7):
        assert items[r].shape == (2, 2, 3) and items[r].dtype == np.uint8
        np.testing.assert_array_equal(items[r], good[r].reshape(2, 2, 3))
    warned = [record.getMessage() for record in caplog.records if "wrong number of bytes" in record.getMessage()]
    assert len(warned) == 2 and warned[0].startswith("row r3 ") and warned[1].startswith("row r6 ")


def test_fixed_tensor_rows_with_nulls_across_chunks(tmp_path):
    size = 2 * 3 * 1
    field = pa.field("pixels", pa.list_(pa.uint8(), size), metadata={b"shape": b"2,3,1"})
    rows = [None if r in (0, 5) else np.arange(size, dtype=np.uint8) + r for r in range(7)]
    table = pa.table({"pixels": pa.array(rows, field.type)}, schema=pa.schema([field]))
    ids, items = read_rows(write_groups(tmp_path / "t.parquet", table, [3, 4]), batch_rows=5)
    assert np.concatenate(ids).tolist() == list(range(7))
    assert [item is None for item in items] == [True, False, False, False, False, True, False]
    for r in (1, 2, 3, 4, 6):
        assert items[r].shape == (2, 3, 1) and items[r].dtype == np.uint8
        assert items[r].reshape(-1).tolist() == list(range(r, r + size))
