"""scoring/dataset.py: column detection, ids, sources, shards and reading, and every error."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring.dataset import ImageDataset, RowBatch, Shard, open_dataset, read_shard
from scoring.errors import DatasetError
from engine.errors import BatchscoreError

HF_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def fake_bytes(row: int) -> bytes:
    """Stand-in for an encoded image: the dataset layer never decodes."""
    return b"\xff\xd8img-%d" % row


def write(path, columns: dict, row_group_rows: int | list[int], schema: pa.Schema | None = None):
    """Write a table with row groups of the given sizes (an int: all the same)."""
    table = pa.table(columns, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes = ([row_group_rows] * -(-table.num_rows // row_group_rows) if isinstance(row_group_rows, int)
             else row_group_rows)
    with pq.ParquetWriter(path, table.schema) as writer:
        start = 0
        for n in sizes:
            n = min(n, table.num_rows - start)
            writer.write_table(table.slice(start, n), row_group_size=max(n, 1))
            start += n
    return path


def binary_file(path, rows: range, row_group_rows=4, with_id=False, nulls=()):
    data = [None if r in nulls else fake_bytes(r) for r in rows]
    columns = {"image": pa.array(data, pa.binary())}
    if with_id:
        columns = {"id": pa.array([f"img-{r:06d}" for r in rows]), **columns}
    return write(path, columns, row_group_rows)


def tensor_field(h, w, c=3, fixed=True, shape: bytes | None = None):
    value = pa.list_(pa.uint8(), h * w * c) if fixed else pa.list_(pa.uint8())
    metadata = {b"shape": shape if shape is not None else f"{h},{w},{c}".encode()}
    return pa.field("pixels", value, metadata=metadata)


def pixels(row: int, h: int, w: int, c: int = 3) -> np.ndarray:
    return ((np.arange(h * w * c) + row * 7) % 251).astype(np.uint8).reshape(h, w, c)


def read_all(ds: ImageDataset, target_rows=1000, batch_rows=5) -> tuple[list, list]:
    ids, items = [], []
    for shard in ds.shards(target_rows):
        for batch in read_shard(ds, shard, batch_rows):
            ids.extend(batch.ids.tolist())
            items.extend(batch.items)
    return ids, items


# -- the three kinds ----------------------------------------------------------------------------------

def test_hf_struct_with_id_column_and_null_cells(tmp_path):
    structs = [{"bytes": fake_bytes(r), "path": f"{r}.jpg"} for r in range(10)]
    structs[3] = None                          # a null struct
    structs[6] = {"bytes": None, "path": "6.jpg"}   # a struct whose bytes are null
    write(tmp_path / "d.parquet", {"id": [f"img-{r:06d}" for r in range(10)],
                                   "image": pa.array(structs, HF_TYPE), "label": list(range(10))}, 4)
    ds = open_dataset(tmp_path / "d.parquet")
    assert (ds.kind, ds.image_column, ds.id_column, ds.num_rows) == ("hf_struct", "image", "id", 10)
    assert ds.row_groups == ((4, 4, 2),)
    ids, items = read_all(ds)
    assert ids == [f"img-{r:06d}" for r in range(10)]
    assert items[3] is None and items[6] is None
    assert [i for i, item in enumerate(items) if item is not None] == [0, 1, 2, 4, 5, 7, 8, 9]
    assert items[0] == fake_bytes(0) and isinstance(items[0], bytes)


def test_binary_without_id_numbers_rows_across_files(tmp_path):
    binary_file(tmp_path / "a.parquet", range(0, 7), row_group_rows=3, nulls={5})
    binary_file(tmp_path / "b.parquet", range(7, 12), row_group_rows=2)
    ds = open_dataset(tmp_path)
    assert (ds.kind, ds.id_column, ds.num_rows, len(ds.files)) == ("binary", None, 12, 2)
    ids, items = read_all(ds, target_rows=4, batch_rows=3)
    assert ids == list(range(12))
    assert items == [None if r == 5 else fake_bytes(r) for r in range(12)]
    batch = next(read_shard(ds, ds.shards(4)[-1], 10))
    assert batch.ids.dtype == np.int64


@pytest.mark.parametrize("value_type", ["fixed", "list", "large_list"])
def test_tensor_column_gives_hwc_arrays_and_nulls(tmp_path, value_type):
    h, w = 4, 5
    rows = [None if r == 2 else pixels(r, h, w).reshape(-1) for r in range(9)]
    if value_type == "fixed":
        field = tensor_field(h, w)
    else:
        lst = pa.list_(pa.uint8()) if value_type == "list" else pa.large_list(pa.uint8())
        field = pa.field("pixels", lst, metadata={b"shape": b"4,5,3"})
    schema = pa.schema([field])
    write(tmp_path / "t.parquet", {"pixels": pa.array(rows, field.type)}, 4, schema=schema)
    ds = open_dataset(tmp_path / "t.parquet")
    assert (ds.kind, ds.tensor_shape, ds.image_column) == ("tensor", (4, 5, 3), "pixels")
    ids, items = read_all(ds, batch_rows=3)  # 3 does not divide the row groups: sliced chunks
    assert ids == list(range(9))
    assert items[2] is None
    for r, item in enumerate(items):
        if r != 2:
            assert item.shape == (h, w, 3) and item.dtype == np.uint8
            np.testing.assert_array_equal(item, pixels(r, h, w))


def test_tensor_row_of_wrong_length_is_a_null_with_a_warning(tmp_path, caplog):
    field = pa.field("pixels", pa.list_(pa.uint8()), metadata={b"shape": b"2,2,3"})
    rows = [pixels(0, 2, 2).reshape(-1), np.zeros(5, np.uint8), pixels(2, 2, 2).reshape(-1)]
    write(tmp_path / "t.parquet", {"pixels": pa.array(rows, field.type)}, 3, schema=pa.schema([field]))
    ds = open_dataset(tmp_path / "t.parquet")
    with caplog.at_level(logging.WARNING):
        _, items = read_all(ds)
    assert items[1] is None and items[0] is not None and items[2] is not None
    assert "wrong number of bytes" in caplog.text


def test_two_number_shape_means_one_channel(tmp_path):
    field = tensor_field(3, 2, 1, shape=b"3x2")
    write(tmp_path / "t.parquet", {"pixels": pa.array([pixels(0, 3, 2, 1).reshape(-1)], field.type)}, 1,
          schema=pa.schema([field]))
    ds = open_dataset(tmp_path / "t.parquet")
    assert ds.tensor_shape == (3, 2, 1)
    assert read_all(ds)[1][0].shape == (3, 2, 1)


# -- ids ------------------------------------------------------------------------------------------------

def test_named_integer_id_column(tmp_path):
    write(tmp_path / "d.parquet", {"key": pa.array([10, 20, 30], pa.int32()), "image": [b"a", b"b", b"c"]}, 2)
    ds = open_dataset(tmp_path / "d.parquet", id_column="key")
    ids, _ = read_all(ds)
    assert ids == [10, 20, 30]
    assert next(read_shard(ds, ds.shards(10)[0], 10)).ids.dtype == np.int64


def test_string_ids_are_an_object_array(tmp_path):
    binary_file(tmp_path / "d.parquet", range(3), with_id=True)
    ds = open_dataset(tmp_path / "d.parquet")
    batch = next(read_shard(ds, ds.shards(10)[0], 10))
    assert isinstance(batch, RowBatch) and len(batch) == 3
    assert batch.ids.dtype == object and batch.ids.tolist() == ["img-000000", "img-000001", "img-000002"]


def test_named_image_column_is_used_even_with_a_preferred_one(tmp_path):
    write(tmp_path / "d.parquet", {"image": [b"x"], "thumb": [b"t"]}, 1)
    ds = open_dataset(tmp_path / "d.parquet", image_column="thumb")
    assert read_all(ds)[1] == [b"t"]
    assert open_dataset(tmp_path / "d.parquet").image_column == "image"  # the preferred name decides


# -- sources --------------------------------------------------------------------------------------------

def test_directory_is_searched_recursively_sorted_skipping_hidden(tmp_path):
    binary_file(tmp_path / "b" / "part-1.parquet", range(2))
    binary_file(tmp_path / "a" / "part-0.parquet", range(3))
    binary_file(tmp_path / "_temporary" / "x.parquet", range(5))
    binary_file(tmp_path / ".cache.parquet", range(5))
    (tmp_path / "_SUCCESS").write_bytes(b"")
    ds = open_dataset(tmp_path)
    assert [f.split(str(tmp_path))[1] for f in ds.files] == ["/a/part-0.parquet", "/b/part-1.parquet"]
    assert ds.num_rows == 5


def test_glob_and_list_sources(tmp_path):
    for k in range(3):
        binary_file(tmp_path / f"part-{k}.parquet", range(k + 1))
    (tmp_path / "notes.txt").write_text("not data")
    ds = open_dataset(str(tmp_path / "part-*.parquet"))
    assert [f.rsplit("/", 1)[1] for f in ds.files] == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert ds.num_rows == 6
    ds = open_dataset([tmp_path / "part-2.parquet", tmp_path / "part-0.parquet"])
    assert [f.rsplit("/", 1)[1] for f in ds.files] == ["part-2.parquet", "part-0.parquet"]


def test_dataset_pickles_and_describes_itself(tmp_path):
    binary_file(tmp_path / "d.parquet", range(6), with_id=True)
    ds = open_dataset(tmp_path / "d.parquet")
    assert pickle.loads(pickle.dumps(ds)) == ds
    assert ds.describe() == "6 rows in 1 file, 2 row groups; image column 'image' (binary), ids from column 'id'"


# -- shards ---------------------------------------------------------------------------------------------

def make_dataset_object(groups: list[list[int]]) -> ImageDataset:
    return ImageDataset(source="x", files=tuple(f"f{k}" for k in range(len(groups))), kind="binary",
                        image_column="image", id_column=None, row_groups=tuple(map(tuple, groups)))


LAYOUTS = [
    [[100] * 10],
    [[1000, 10, 10, 3000, 5, 5, 5], [7], [], [0, 0]],
    [[0, 50, 0, 50, 0], [2048, 2048], [4096], [1, 2047, 1]],
    [[300, 1700, 900, 900, 10, 2000]],
]


@pytest.mark.parametrize("groups", LAYOUTS)
@pytest.mark.parametrize("target", [1, 100, 250, 2048, 10**6])
def test_shards_cover_every_row_once_never_splitting_a_row_group(groups, target):
    ds = make_dataset_object(groups)
    shards = ds.shards(target)
    assert [s.index for s in shards] == list(range(len(shards)))
    assert len({s.key for s in shards}) == len(shards)
    seen = {}  # file -> next row group expected
    next_row = 0
    for shard in shards:
        k = ds.files.index(shard.file)
        start, stop = shard.row_groups
        assert start == seen.get(k, 0) and stop > start  # contiguous whole row groups
        seen[k] = stop
        assert shard.num_rows == sum(groups[k][start:stop]) > 0
        assert shard.first_row == next_row
        next_row += shard.num_rows
        sizes = [n for n in groups[k][start:stop] if n]
        if len(sizes) > 1:  # groups merge only when that moves the size toward the target
            assert sum(sizes[:-1]) < target
    assert next_row == ds.num_rows
    for k, g in enumerate(groups):  # every non-empty file fully covered
        if sum(g):
            assert seen[k] == len(g)


def test_shard_sizes_stay_near_the_target():
    shards = make_dataset_object([[100] * 10]).shards(250)
    assert [s.num_rows for s in shards] == [200, 200, 200, 200, 200]
    assert [s.key for s in shards][:2] == ["part-00000", "part-00001"]
    assert [s.num_rows for s in make_dataset_object([[100] * 10]).shards(260)] == [300, 300, 300, 100]
    assert [s.num_rows for s in make_dataset_object([[1, 3000]]).shards(2048)] == [3001]
    assert make_dataset_object([[5, 5], [5]]).shards(100)[1].first_row == 10  # never across files


def test_shards_reject_a_bad_target():
    with pytest.raises(ValueError, match="positive integer"):
        make_dataset_object([[1]]).shards(0)


def test_read_shard_yields_its_rows_in_full_batches(tmp_path):
    binary_file(tmp_path / "a.parquet", range(0, 10), row_group_rows=[3, 4, 3])
    binary_file(tmp_path / "b.parquet", range(10, 25), row_group_rows=[5, 5, 5])
    ds = open_dataset(tmp_path)
    shards = ds.shards(10)
    assert [(s.file[-9:], s.row_groups, s.first_row, s.num_rows) for s in shards] == [
        ("a.parquet", (0, 3), 0, 10), ("b.parquet", (0, 2), 10, 10), ("b.parquet", (2, 3), 20, 5)]
    batches = list(read_shard(ds, shards[1], 4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert np.concatenate([b.ids for b in batches]).tolist() == list(range(10, 20))
    assert [item for b in batches for item in b.items] == [fake_bytes(r) for r in range(10, 20)]


def test_read_shard_reads_on_its_own_thread_whatever_the_launcher(tmp_path, monkeypatch):
    # Arrow's CPU pool is sized by OMP_NUM_THREADS, which Ray caps in its actors and mpirun does
    # not: read_shard keeps out of it, so every launcher reads the same way. What it asks Arrow
    # for is the only place that shows, hence the look at the call.
    binary_file(tmp_path / "a.parquet", range(0, 10), row_group_rows=[5, 5])
    asked = []
    real = pq.ParquetFile.iter_batches

    def iter_batches(self, *args, **kwargs):
        asked.append(kwargs.get("use_threads", True))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", iter_batches)
    ds = open_dataset(tmp_path)
    rows = [i for shard in ds.shards(5) for b in read_shard(ds, shard, 4) for i in b.ids.tolist()]
    assert rows == list(range(10)) and asked == [False, False]


def test_read_shard_rejects_a_bad_batch_size(tmp_path):
    ds = open_dataset(binary_file(tmp_path / "a.parquet", range(3)))
    with pytest.raises(ValueError, match="batch_rows"):
        next(read_shard(ds, ds.shards(10)[0], 0))
    with pytest.raises(ValueError, match="first_rows must be a positive integer, got 0"):
        next(read_shard(ds, ds.shards(10)[0], 2, first_rows=0))


def test_a_first_batch_of_its_own_size_then_full_ones_joined_to_another_shards(tmp_path):
    binary_file(tmp_path / "a.parquet", range(10), row_group_rows=3)
    binary_file(tmp_path / "b.parquet", range(10, 17), row_group_rows=3)
    ds = open_dataset(tmp_path)
    first, second = [s for s in ds.shards(10) if s.num_rows]
    batches = list(read_shard(ds, first, 4, first_rows=3))
    assert [b.ids.tolist() for b in batches] == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    head = next(read_shard(ds, second, 4, first_rows=1))
    joined = batches[-1].joined(head)  # two files' rows: their buffers are Arrow's of each
    assert joined.ids.tolist() == [7, 8, 9, 10] and len(joined) == 4
    assert list(joined.items) == list(batches[-1].items) + list(head.items)
    tensors = RowBatch(ids=np.arange(2), items=[np.zeros((2, 2, 3), np.uint8), None])
    assert [type(i) for i in tensors.joined(tensors).items] == [np.ndarray, type(None)] * 2


def _arrow_chunks_per_batch(monkeypatch) -> list[int]:
    """How many Arrow chunks each batch's image column came in (EncodedItems copies those of more
    than one into a buffer of their own)."""
    from scoring import encoded_items

    chunks = []
    real = encoded_items.EncodedItems.from_arrow.__func__

    def from_arrow(cls, array):
        chunks.append(array.num_chunks if isinstance(array, pa.ChunkedArray) else 1)
        return real(cls, array)

    monkeypatch.setattr(encoded_items.EncodedItems, "from_arrow", classmethod(from_arrow))
    return chunks


@pytest.mark.parametrize("kind", ["binary", "hf_struct"])
def test_batches_after_a_first_batch_of_its_own_size_are_each_one_arrow_chunk(tmp_path, monkeypatch, kind):
    # 3 rows, then 4 at a time: were Arrow to go on reading 3 at a time, every later batch would
    # straddle two of its batches and have its bytes copied.
    rows = range(23)
    images = [fake_bytes(r) for r in rows]
    column = (pa.array(images, pa.binary()) if kind == "binary"
              else pa.array([{"bytes": b, "path": f"{r}.jpg"} for r, b in zip(rows, images)], HF_TYPE))
    ds = open_dataset(write(tmp_path / "a.parquet", {"image": column}, row_group_rows=[7, 9, 7]))
    chunks = _arrow_chunks_per_batch(monkeypatch)
    batches = list(read_shard(ds, ds.shards(100)[0], 4, first_rows=3, threads=1))
    assert [len(b) for b in batches] == [3, 4, 4, 4, 4, 4]
    assert [item for b in batches for item in b.items] == images
    assert chunks == [1] * 6


@pytest.mark.parametrize("threads", [2, 3])
def test_row_groups_read_on_threads_give_the_same_batches_copying_only_across_row_groups(tmp_path, monkeypatch,
                                                                                          threads):
    from scoring.row_group_reads import ReadCpu

    ds = open_dataset(binary_file(tmp_path / "a.parquet", range(23), row_group_rows=[7, 9, 7], with_id=True))
    shard = ds.shards(100)[0]
    alone = [(b.ids.tolist(), list(b.items)) for b in read_shard(ds, shard, 4, first_rows=3, threads=1)]
    chunks, cpu = _arrow_chunks_per_batch(monkeypatch), ReadCpu()
    together = [(b.ids.tolist(), list(b.items)) for b in read_shard(ds, shard, 4, first_rows=3, threads=threads,
                                                                     cpu=cpu)]
    assert together == alone
    # rows 0-2, 3-6 | 7-10, 11-14, 15-18 | 19-22: row groups end after rows 6 and 15, so only the
    # batch of rows 15-18 spans two row groups (row 7 starts a batch and a row group at once)
    assert chunks == [1, 1, 1, 1, 2, 1] and cpu.seconds > 0


def test_read_threads_come_from_the_environment(monkeypatch):
    from scoring.dataset import read_threads
    from scoring.row_group_reads import READ_THREADS

    assert read_threads({}) == READ_THREADS and read_threads({"BATCHSCORE_READ_THREADS": "3"}) == 3
    for bad in ("0", "two", "-1"):
        with pytest.raises(DatasetError, match="BATCHSCORE_READ_THREADS must be a positive integer"):
            read_threads({"BATCHSCORE_READ_THREADS": bad})


def test_batches_come_right_where_arrow_keeps_its_first_batch_size(tmp_path, monkeypatch):
    # Another pyarrow may not take the new size: the rows are sliced out of Arrow's batches instead.
    from scoring import row_group_reads

    monkeypatch.setattr(row_group_reads, "resize_batches", lambda pf, size: None)
    ds = open_dataset(binary_file(tmp_path / "a.parquet", range(23), row_group_rows=[7, 9, 7]))
    chunks = _arrow_chunks_per_batch(monkeypatch)
    batches = list(read_shard(ds, ds.shards(100)[0], 4, first_rows=3, threads=1))
    assert [b.ids.tolist() for b in batches] == [[0, 1, 2]] + [list(range(r, r + 4)) for r in range(3, 23, 4)]
    assert [item for b in batches for item in b.items] == [fake_bytes(r) for r in range(23)]
    assert max(chunks) == 2  # the slicing path this test is about was taken

# -- errors ---------------------------------------------------------------------------------------------

def test_errors_are_batchscore_errors():
    assert issubclass(DatasetError, BatchscoreError)


def test_no_such_path(tmp_path):
    with pytest.raises(DatasetError, match=r"no such file or directory: .*/missing"):
        open_dataset(tmp_path / "missing")


def test_directory_without_parquet_files(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DatasetError, match=r"no Parquet files under .*expected files named \*\.parquet"):
        open_dataset(tmp_path)


def test_glob_matching_nothing(tmp_path):
    with pytest.raises(DatasetError, match=r"no files match .*\*\.parquet"):
        open_dataset(str(tmp_path / "*.parquet"))


def test_empty_source_list():
    with pytest.raises(DatasetError, match="list of sources is empty"):
        open_dataset([])


def test_file_that_is_not_parquet(tmp_path):
    (tmp_path / "fake.parquet").write_bytes(b"JPEG? no")
    with pytest.raises(DatasetError, match=r"fake\.parquet is not a readable Parquet file"):
        open_dataset(tmp_path / "fake.parquet")


def test_no_image_column_lists_the_columns_and_types(tmp_path):
    write(tmp_path / "d.parquet", {"id": ["a"], "label": pa.array([1], pa.int64()), "caption": ["x"]}, 1)
    with pytest.raises(DatasetError) as err:
        open_dataset(tmp_path / "d.parquet")
    message = str(err.value)
    assert "no image column found" in message
    assert "id (string), label (int64), caption (string)" in message
    assert "struct<bytes: binary, path: string>" in message and "b'shape'" in message


def test_named_image_column_missing(tmp_path):
    binary_file(tmp_path / "d.parquet", range(2))
    with pytest.raises(DatasetError, match=r"no image column 'img' in .*its columns: image \(binary\)"):
        open_dataset(tmp_path / "d.parquet", image_column="img")


def test_named_image_column_of_unsupported_type(tmp_path):
    write(tmp_path / "d.parquet", {"image": [b"x"], "path": ["a.jpg"]}, 1)
    with pytest.raises(DatasetError, match=r"column 'path' of .* has type string, which cannot hold images"):
        open_dataset(tmp_path / "d.parquet", image_column="path")


def test_struct_without_bytes_is_unsupported(tmp_path):
    write(tmp_path / "d.parquet", {"image": pa.array([{"path": "a.jpg"}])}, 1)
    with pytest.raises(DatasetError, match=r"column 'image' .* has type struct<path: string>, which cannot"):
        open_dataset(tmp_path / "d.parquet", image_column="image")


def test_several_candidate_columns_need_a_name(tmp_path):
    write(tmp_path / "d.parquet", {"front": [b"x"], "back": [b"y"]}, 1)
    with pytest.raises(DatasetError, match=r"several columns .* front \(binary\), back \(binary\); name one"):
        open_dataset(tmp_path / "d.parquet")


def test_tensor_without_shape_metadata(tmp_path):
    write(tmp_path / "d.parquet", {"pixels": pa.array([[1, 2, 3]], pa.list_(pa.uint8(), 3))}, 1)
    with pytest.raises(DatasetError, match=r"'pixels' .* no b'shape' key .*e\.g\. b'224,224,3'"):
        open_dataset(tmp_path / "d.parquet")


@pytest.mark.parametrize("shape, message", [
    (b"4,4", r"holds 12 bytes per row, but its shape metadata 4,4 needs 16"),
    (b"2,2,2", r"expected b'H,W,C'"),
    (b"two,2,3", r"expected b'H,W,C'"),
    (b"1,2,3,2", r"expected b'H,W,C'"),
])
def test_tensor_with_bad_shape_metadata(tmp_path, shape, message):
    field = pa.field("pixels", pa.list_(pa.uint8(), 12), metadata={b"shape": shape})
    write(tmp_path / "d.parquet", {"pixels": pa.array([list(range(12))], field.type)}, 1, schema=pa.schema([field]))
    with pytest.raises(DatasetError, match=message):
        open_dataset(tmp_path / "d.parquet")


def test_id_column_missing(tmp_path):
    binary_file(tmp_path / "d.parquet", range(2))
    with pytest.raises(DatasetError, match=r"no id column 'key' in .*its columns: image \(binary\)"):
        open_dataset(tmp_path / "d.parquet", id_column="key")


def test_id_column_of_wrong_type(tmp_path):
    write(tmp_path / "d.parquet", {"id": [1.5], "image": [b"x"]}, 1)
    with pytest.raises(DatasetError, match=r"id column 'id' .* has type double; ids must be integers or strings"):
        open_dataset(tmp_path / "d.parquet")


def test_id_column_cannot_be_the_image_column(tmp_path):
    binary_file(tmp_path / "d.parquet", range(2))
    with pytest.raises(DatasetError, match="'image' cannot be both the image column and the id column"):
        open_dataset(tmp_path / "d.parquet", image_column="image", id_column="image")
    with pytest.raises(DatasetError, match=r"no image column found .*image \(binary\) \('image' is the id column\)"):
        open_dataset(tmp_path / "d.parquet", id_column="image")


def test_null_id_fails_the_read_naming_the_row(tmp_path):
    write(tmp_path / "d.parquet", {"id": ["a", None, "c"], "image": [b"x", b"y", b"z"]}, 3)
    ds = open_dataset(tmp_path / "d.parquet")
    with pytest.raises(DatasetError, match=r"id column 'id' is null at row 1 of shard part-00000"):
        read_all(ds)


def test_files_must_agree_on_the_image_column(tmp_path):
    binary_file(tmp_path / "a.parquet", range(2))
    write(tmp_path / "b.parquet", {"picture": [b"x"]}, 1)
    with pytest.raises(DatasetError, match=r"b\.parquet has no column 'image', which holds the images in .*a\.parquet"):
        open_dataset(tmp_path)


def test_files_must_agree_on_the_kind(tmp_path):
    binary_file(tmp_path / "a.parquet", range(2))
    write(tmp_path / "b.parquet", {"image": pa.array([{"bytes": b"x", "path": "p"}], HF_TYPE)}, 1)
    with pytest.raises(DatasetError, match=r"column 'image' is binary in .*a\.parquet but struct<.*> in .*b\.parquet"):
        open_dataset(tmp_path)


def test_files_must_agree_on_the_tensor_shape(tmp_path):
    for name, (h, w) in {"a": (2, 2), "b": (1, 4)}.items():
        field = tensor_field(h, w)
        write(tmp_path / f"{name}.parquet", {"pixels": pa.array([pixels(0, h, w).reshape(-1)], field.type)}, 1,
              schema=pa.schema([field]))
    with pytest.raises(DatasetError, match=r"holds 2x2x3 tensors in .*a\.parquet but 1x4x3 in .*b\.parquet"):
        open_dataset(tmp_path)


def test_files_must_agree_on_the_id_column(tmp_path):
    binary_file(tmp_path / "a.parquet", range(2), with_id=True)
    binary_file(tmp_path / "b.parquet", range(2))
    with pytest.raises(DatasetError, match=r"b\.parquet has no id column 'id'"):
        open_dataset(tmp_path)
    write(tmp_path / "b.parquet", {"id": [7], "image": [b"x"]}, 1)
    with pytest.raises(DatasetError, match=r"id column 'id' is string in .* but int64 in .*b\.parquet"):
        open_dataset(tmp_path)


def test_file_changed_after_opening(tmp_path):
    path = binary_file(tmp_path / "a.parquet", range(8), row_group_rows=4)
    ds = open_dataset(path)
    shard = ds.shards(4)[1]
    binary_file(path, range(5), row_group_rows=4)
    with pytest.raises(DatasetError, match=r"changed since the dataset was opened: shard part-00001 expects 4 rows"):
        next(read_shard(ds, shard, 4))
    path.unlink()
    with pytest.raises(DatasetError, match=r"no such file: .*a\.parquet \(was it removed"):
        next(read_shard(ds, shard, 4))


def test_shard_is_a_frozen_value():
    shard = Shard(3, "f.parquet", (0, 2), 100, 50)
    assert shard.key == "part-00003"
    with pytest.raises(AttributeError):
        shard.index = 4
