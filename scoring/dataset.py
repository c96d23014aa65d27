"""Parquet image datasets: find the files, detect the image and id columns, cut the rows into shards
(row-group ranges of one file) and read a shard back as batches of ids and images.

    ds = open_dataset("data/")                  # a file, a directory (all *.parquet under it) or a glob
    for shard in ds.shards(2048):               # the unit of work a launcher hands to a worker
        for batch in read_shard(ds, shard, 64):
            batch.ids, batch.items              # int64 or str ids; bytes / HWC uint8 arrays / None

An image column is one of three kinds:
  "hf_struct"  Hugging Face's image feature, struct<bytes: binary, path: string>
  "binary"     encoded images (JPEG, PNG, WebP...) in a binary or large_binary column
  "tensor"     decoded pixels, a list<uint8> (fixed-size or not) with the HWC shape in the field's
               metadata under b"shape", e.g. b"224,224,3"
Ids come from the named column, else from a column called "id", else they are the rows' global
indices (int64) across the files in order.

A shard never splits a row group, so a worker reads whole row groups and two workers never read the
same bytes. An ImageDataset holds only names and row counts (no open files): it pickles cheaply to
MPI ranks and Ray actors, which reopen the file of each shard they read.
"""

from __future__ import annotations

import glob
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scoring import row_group_reads
from scoring.encoded_items import EncodedItems
from scoring.errors import DatasetError
from scoring.row_group_reads import READ_THREADS, ReadCpu

log = logging.getLogger(__name__)

KINDS = ("hf_struct", "binary", "tensor")
DEFAULT_ID_COLUMN = "id"
# When several columns could hold images and none is named, one of these names decides.
PREFERRED_IMAGE_COLUMNS = ("image", "img")
SHAPE_KEY = b"shape"

_WHAT_AN_IMAGE_COLUMN_IS = (
    "An image column is a Hugging Face image struct<bytes: binary, path: string>, a binary or "
    "large_binary column of encoded images (JPEG, PNG, WebP...), or a list<uint8> tensor column with "
    "its HWC shape in the field metadata key b'shape' (e.g. b'224,224,3')."
)


@dataclass(frozen=True)
class Shard:
    """Row groups [row_groups[0], row_groups[1]) of one file; first_row is the global index of its
    first row, so a shard's rows are first_row .. first_row + num_rows - 1 of the dataset."""

    index: int
    file: str
    row_groups: tuple[int, int]
    first_row: int
    num_rows: int

    @property
    def key(self) -> str:
        """A stable name for this shard's outputs ("part-00003"), the same on every rerun of the
        same dataset with the same shard size."""
        return f"part-{self.index:05d}"


@dataclass
class RowBatch:
    """Up to batch_rows consecutive rows of one shard. items[i] is the encoded image (bytes), the
    decoded pixels (HWC uint8 array, tensor kind) or None for a null cell. Encoded rows come as
    EncodedItems (a sequence over Arrow's buffer; `list(items)` gives the bytes), tensor rows as a list."""

    ids: np.ndarray
    items: Sequence

    def __len__(self) -> int:
        return len(self.items)

    def joined(self, other: "RowBatch") -> "RowBatch":
        """This batch's rows, then `other`'s (the end of one shard and the start of the next)."""
        if isinstance(self.items, EncodedItems) and isinstance(other.items, EncodedItems):
            items = self.items.joined(other.items)
        else:
            items = list(self.items) + list(other.items)
        return RowBatch(ids=np.concatenate([self.ids, other.ids]), items=items)


@dataclass(frozen=True)
class ImageDataset:
    """A set of Parquet files read as one table of images. row_groups[f] lists the rows of each
    row group of files[f]."""

    source: str
    files: tuple[str, ...]
    kind: str
    image_column: str
    id_column: str | None
    row_groups: tuple[tuple[int, ...], ...]
    tensor_shape: tuple[int, int, int] | None = None

    @property
    def num_rows(self) -> int:
        return sum(sum(groups) for groups in self.row_groups)

    @property
    def num_row_groups(self) -> int:
        return sum(len(groups) for groups in self.row_groups)

    def describe(self) -> str:
        ids = f"ids from column '{self.id_column}'" if self.id_column else "ids = row numbers"
        kind = self.kind if self.tensor_shape is None else f"tensor {'x'.join(map(str, self.tensor_shape))}"
        return (f"{self.num_rows} rows in {len(self.files)} file{'s' * (len(self.files) != 1)}, "
                f"{self.num_row_groups} row groups; image column '{self.image_column}' ({kind}), {ids}")

    def shards(self, target_rows: int) -> list[Shard]:
        """Cut every file into runs of whole row groups of about target_rows rows each: a row group
        joins the current shard when that brings the shard's size closer to target_rows. Shards never
        cross files; files without rows give none; every row is in exactly one shard."""
        if isinstance(target_rows, bool) or not isinstance(target_rows, int) or target_rows < 1:
            raise ValueError(f"target_rows must be a positive integer, got {target_rows!r}")
        shards: list[Shard] = []
        file_first_row = 0
        for file, groups in zip(self.files, self.row_groups):
            start, rows, row = 0, 0, file_first_row
            for g, n in enumerate(groups):
                # An empty row group always joins the current shard, so every group is in one.
                close = rows > 0 and n > 0 and (rows >= target_rows or rows + n - target_rows >= target_rows - rows)
                if close:
                    shards.append(Shard(len(shards), file, (start, g), row, rows))
                    start, row, rows = g, row + rows, 0
                rows += n
            if rows > 0:
                shards.append(Shard(len(shards), file, (start, len(groups)), row, rows))
            file_first_row += sum(groups)
        return shards


def open_dataset(source: str | os.PathLike | Sequence[str | os.PathLike], image_column: str | None = None,
                 id_column: str | None = None) -> ImageDataset:
    """Find the files of `source`, pick the image and id columns from the first file's schema and check
    every other file has them with the same kind. Reads only the files' footers."""
    if image_column is not None and image_column == id_column:
        raise DatasetError(f"column '{image_column}' cannot be both the image column and the id column")
    # Absolute paths: Ray workers run in a directory of their own, MPI ranks may start elsewhere.
    files = list(dict.fromkeys(os.path.abspath(f) for f in _resolve_files(source)))
    first = _read_footer(files[0])
    image_field = _pick_image_field(first.schema_arrow, files[0], image_column, id_column)
    kind = _image_kind(image_field.type)
    tensor_shape = _tensor_shape(image_field, files[0]) if kind == "tensor" else None
    id_field = _pick_id_field(first.schema_arrow, files[0], id_column, image_field.name)

    row_groups = [_row_group_rows(first)]
    first.close()
    for file in files[1:]:
        pf = _read_footer(file)
        try:
            _check_same_columns(pf.schema_arrow, file, files[0], image_field, kind, tensor_shape, id_field)
            row_groups.append(_row_group_rows(pf))
        finally:
            pf.close()
    text = os.fspath(source) if isinstance(source, (str, os.PathLike)) else ", ".join(map(os.fspath, source))
    return ImageDataset(source=text, files=tuple(files), kind=kind, image_column=image_field.name,
                        id_column=id_field.name if id_field is not None else None,
                        row_groups=tuple(row_groups), tensor_shape=tensor_shape)


def read_threads(environ=os.environ) -> int:
    """Threads that read a shard's row groups at once: $BATCHSCORE_READ_THREADS where set, else
    READ_THREADS (scoring.row_group_reads)."""
    value = environ.get("BATCHSCORE_READ_THREADS", "").strip()
    if not value:
        return READ_THREADS
    if not value.isdigit() or int(value) < 1:
        raise DatasetError(f"BATCHSCORE_READ_THREADS must be a positive integer, got {value!r}")
    return int(value)


def read_shard(dataset: ImageDataset, shard: Shard, batch_rows: int, first_rows: int | None = None,
               threads: int | None = None, cpu: ReadCpu | None = None) -> Iterator[RowBatch]:
    """Yield the shard's rows in order, batch_rows at a time (the last batch may be shorter), the
    first batch `first_rows` rows where given (to fill a batch begun with another shard's rows).
    With `threads` > 1 (None: read_threads()) its row groups are read on that many threads at once
    (scoring.row_group_reads), whose CPU time `cpu` adds up."""
    for name, value in (("batch_rows", batch_rows), ("first_rows", batch_rows if first_rows is None else first_rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    want = batch_rows if first_rows is None else first_rows
    start, stop = shard.row_groups
    pf = _read_footer(shard.file)
    batches = None
    try:
        meta = pf.metadata
        have = sum(meta.row_group(g).num_rows for g in range(start, min(stop, meta.num_row_groups)))
        if stop > meta.num_row_groups or have != shard.num_rows:
            raise DatasetError(
                f"{shard.file} changed since the dataset was opened: shard {shard.key} expects "
                f"{shard.num_rows} rows in row groups {start}..{stop - 1}, the file now has "
                f"{meta.num_row_groups} row groups and {have} rows there. Open the dataset again.")
        columns = [dataset.image_column] + ([dataset.id_column] if dataset.id_column else [])
        # On the calling thread, not Arrow's CPU pool: that pool is as large as the host (128
        # threads in each of 8 mpi ranks on 8 x H200) unless OMP_NUM_THREADS caps it, which Ray
        # sets to 1 in its actors and mpirun does not, so the launchers read differently. Two
        # columns gain nothing from it: on the 2-core dev box `python benchmarks/outputs_io.py OUT
        # --rows 20000` read 92,800 rows/s without against 73,400 with (the code of 2dc5f59, run
        # alternately; a first pair gave 96,100 and 72,200): benchmarks/results/outputs_io_cpu_
        # 2026-11-22_s9_{reads_without_arrow_pool,before_2dc5f59}.json.
        threads = read_threads() if threads is None else threads
        if threads > 1 and stop - start > 1:
            groups = [(g, meta.row_group(g).num_rows) for g in range(start, stop)]
            batches = row_group_reads.row_group_batches(lambda: _read_footer(shard.file), groups, columns, want,
                                                        batch_rows, threads, cpu)
        else:
            batches = row_group_reads.cut_batches(pf, range(start, stop), columns, want, batch_rows)
        next_row = shard.first_row
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        while True:
            try:
                batch = next(batches, None)
            except (OSError, pa.ArrowException) as exc:
                raise DatasetError(f"cannot read row groups {start}..{stop - 1} of {shard.file} "
                                   f"(shard {shard.key}): {exc}") from None
            if batch is not None:
                pending.append(batch)
                pending_rows += batch.num_rows
            # Hand out full batches whatever sizes the reader produced; the remainder at the end.
            while pending_rows >= want or (batch is None and pending_rows > 0):
                table = pa.Table.from_batches(pending)
                take = min(want, pending_rows)
                yield _row_batch(dataset, shard, table.slice(0, take), next_row)
                next_row, want = next_row + take, batch_rows
                rest = table.slice(take)
                pending, pending_rows = rest.to_batches(), rest.num_rows
            if batch is None:
                return
    finally:
        if batches is not None:
            batches.close()  # a parallel read waits for its reads in flight
        pf.close()


# -- finding the files -------------------------------------------------------------------------------

def _resolve_files(source) -> list[str]:
    if isinstance(source, (list, tuple)):
        if not source:
            raise DatasetError("no dataset given: the list of sources is empty")
        files: list[str] = []
        for item in source:
            files.extend(f for f in _resolve_files(item) if f not in files)
        return files
    text = os.path.expanduser(os.fspath(source))
    path = Path(text)
    if path.is_file():
        return [text]
    if path.is_dir():
        found = sorted((p for p in path.rglob("*.parquet") if p.is_file() and not _hidden(p.relative_to(path))),
                       key=lambda p: p.relative_to(path).as_posix())
        if not found:
            raise DatasetError(f"no Parquet files under {text}: expected files named *.parquet in it or in its "
                               "subdirectories (names starting with '.' or '_' are skipped)")
        return [str(p) for p in found]
    if glob.has_magic(text):
        matches = sorted(m for m in glob.glob(text, recursive=True) if os.path.isfile(m))
        if not matches:
            raise DatasetError(f"no files match {text}")
        return matches
    raise DatasetError(f"no such file or directory: {text}")


def _hidden(relative: Path) -> bool:
    """Spark and Hadoop leave _SUCCESS, _temporary/ and .crc files beside the data: skip them."""
    return any(part.startswith((".", "_")) for part in relative.parts)


def _read_footer(file: str) -> pq.ParquetFile:
    # Memory-mapped, Arrow decodes pages straight from the page cache instead of read()-ing them
    # into a buffer first: read_shard took 8.2 us per ~30 kB JPEG row where a plain read alone took
    # 12.6 (2-core dev box, 8,192 rows: benchmarks/host_decode_prep.py,
    # benchmarks/results/host_decode_prep_cpu_2026-11-22.json), less CPU and memory traffic for the
    # reader thread beside the decoders.
    try:
        return pq.ParquetFile(file, memory_map=True)
    except FileNotFoundError:
        raise DatasetError(f"no such file: {file} (was it removed after the dataset was opened?)") from None
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{file} is not a readable Parquet file: {exc}") from None


def _row_group_rows(pf: pq.ParquetFile) -> tuple[int, ...]:
    meta = pf.metadata
    return tuple(meta.row_group(g).num_rows for g in range(meta.num_row_groups))


# -- columns ------------------------------------------------------------------------------------------

def _is_binary(t: pa.DataType) -> bool:
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
            or pa.types.is_binary_view(t))


def _is_uint8_list(t: pa.DataType) -> bool:
    return ((pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))
            and t.value_type == pa.uint8())


def _image_kind(t: pa.DataType) -> str | None:
    if pa.types.is_struct(t):
        index = t.get_field_index("bytes")
        return "hf_struct" if index >= 0 and _is_binary(t.field(index).type) else None
    if _is_binary(t):
        return "binary"
    if _is_uint8_list(t):
        return "tensor"
    return None


def _list_columns(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name} ({f.type})" for f in schema) or "none"


def _pick_image_field(schema: pa.Schema, file: str, name: str | None, id_column: str | None) -> pa.Field:
    if name is not None:
        if name not in schema.names:
            raise DatasetError(f"no image column '{name}' in {file}; its columns: {_list_columns(schema)}")
        field = schema.field(name)
        if _image_kind(field.type) is None:
            raise DatasetError(f"column '{name}' of {file} has type {field.type}, which cannot hold images. "
                               f"{_WHAT_AN_IMAGE_COLUMN_IS}")
        return field
    candidates = [f for f in schema if _image_kind(f.type) is not None and f.name != id_column]
    if not candidates:
        id_note = f" ('{id_column}' is the id column)" if id_column in schema.names else ""
        raise DatasetError(f"no image column found in {file}; its columns: {_list_columns(schema)}{id_note}. "
                           f"{_WHAT_AN_IMAGE_COLUMN_IS} Name the column with image_column if it is one of these.")
    if len(candidates) == 1:
        return candidates[0]
    for preferred in PREFERRED_IMAGE_COLUMNS:
        for field in candidates:
            if field.name.lower() == preferred:
                return field
    raise DatasetError(f"several columns of {file} could hold images: "
                       f"{', '.join(f'{f.name} ({f.type})' for f in candidates)}; name one with image_column")


def _tensor_shape(field: pa.Field, file: str) -> tuple[int, int, int]:
    text = (field.metadata or {}).get(SHAPE_KEY)
    if text is None:
        raise DatasetError(
            f"column '{field.name}' of {file} is a {field.type} tensor column, but its field metadata has no "
            f"b'shape' key giving the height, width and channels of each image (e.g. b'224,224,3'); "
            f"write the column with pa.field('{field.name}', ..., metadata={{b'shape': b'H,W,C'}})")
    try:
        dims = tuple(int(d) for d in text.decode().replace("x", ",").split(","))
    except (ValueError, UnicodeDecodeError):
        dims = ()
    if len(dims) == 2:
        dims = dims + (1,)
    if len(dims) != 3 or min(dims) < 1 or dims[2] not in (1, 3, 4):
        raise DatasetError(f"column '{field.name}' of {file} has shape metadata {text!r}; expected "
                           "b'H,W,C' with positive H and W and C of 1, 3 or 4 (e.g. b'224,224,3')")
    if pa.types.is_fixed_size_list(field.type) and field.type.list_size != math.prod(dims):
        raise DatasetError(f"column '{field.name}' of {file} holds {field.type.list_size} bytes per row, but its "
                           f"shape metadata {text.decode()} needs {math.prod(dims)}")
    return dims


def _is_id_type(t: pa.DataType) -> bool:
    return (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_string_view(t))


def _pick_id_field(schema: pa.Schema, file: str, name: str | None, image_column: str) -> pa.Field | None:
    if name is None:
        if DEFAULT_ID_COLUMN not in schema.names or DEFAULT_ID_COLUMN == image_column:
            return None
        name = DEFAULT_ID_COLUMN
    elif name not in schema.names:
        raise DatasetError(f"no id column '{name}' in {file}; its columns: {_list_columns(schema)}")
    if name == image_column:
        raise DatasetError(f"column '{name}' of {file} cannot be both the image column and the id column")
    field = schema.field(name)
    if not _is_id_type(field.type):
        raise DatasetError(f"id column '{name}' of {file} has type {field.type}; ids must be integers or strings "
                           "(name another column with id_column, or drop it to number the rows)")
    return field


def _check_same_columns(schema: pa.Schema, file: str, first_file: str, image_field: pa.Field, kind: str,
                        tensor_shape, id_field: pa.Field | None) -> None:
    name = image_field.name
    if name not in schema.names:
        raise DatasetError(f"{file} has no column '{name}', which holds the images in {first_file}; "
                           f"its columns: {_list_columns(schema)}")
    field = schema.field(name)
    if _image_kind(field.type) != kind:
        raise DatasetError(f"column '{name}' is {image_field.type} in {first_file} but {field.type} in {file}; "
                           "every file of a dataset must store its images the same way")
    if kind == "tensor" and _tensor_shape(field, file) != tensor_shape:
        raise DatasetError(f"column '{name}' holds {'x'.join(map(str, tensor_shape))} tensors in {first_file} but "
                           f"{'x'.join(map(str, _tensor_shape(field, file)))} in {file}")
    if id_field is not None:
        if id_field.name not in schema.names:
            raise DatasetError(f"{file} has no id column '{id_field.name}', which {first_file} has; "
                               f"its columns: {_list_columns(schema)}")
        other = schema.field(id_field.name).type
        if not _is_id_type(other) or pa.types.is_integer(other) != pa.types.is_integer(id_field.type):
            raise DatasetError(f"id column '{id_field.name}' is {id_field.type} in {first_file} but {other} in {file}")


# -- turning Arrow columns into ids and items ------------------------------------------------------------

def _row_batch(dataset: ImageDataset, shard: Shard, table: pa.Table, first_row: int) -> RowBatch:
    column = table.column(dataset.image_column)
    wrong_length: list[int] = []
    if dataset.kind == "tensor":
        items = _tensor_items(column, dataset.tensor_shape, wrong_length)
    else:
        items = _encoded_items(column, dataset.kind)
    ids = _ids(dataset, shard, table, first_row)
    for i in wrong_length:
        log.warning("row %s of %s: tensor has the wrong number of bytes for shape %s; scored as an error",
                    ids[i], shard.file, "x".join(map(str, dataset.tensor_shape)))
    return RowBatch(ids=ids, items=items)


def _ids(dataset: ImageDataset, shard: Shard, table: pa.Table, first_row: int) -> np.ndarray:
    n = table.num_rows
    if dataset.id_column is None:
        return np.arange(first_row, first_row + n, dtype=np.int64)
    column = table.column(dataset.id_column)
    if column.null_count:
        at = first_row + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DatasetError(f"id column '{dataset.id_column}' is null at row {at - shard.first_row} of shard "
                           f"{shard.key} ({shard.file}); every row needs an id (name another id column, "
                           "or drop the column to number the rows)")
    if pa.types.is_integer(column.type):
        return column.to_numpy().astype(np.int64, copy=False)
    # An object array of str, converted in C++ (to_pylist costs a Python step per row on older pyarrow).
    return column.to_numpy(zero_copy_only=False)


def _encoded_items(column: pa.ChunkedArray, kind: str) -> Sequence:
    """bytes per row, None for a null cell (for "hf_struct" also a struct whose bytes are null).
    binary and large_binary rows stay in Arrow's buffer (EncodedItems: bytes made when asked, and
    none at all for the JPEGs a GPU decoder reads in place); other binary types become a list, with
    the bytes objects built in C++ (to_pylist costs a Python step per row on older pyarrow)."""
    if kind == "hf_struct":
        column = pc.struct_field(column, "bytes")  # null where the struct or its bytes is null
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return EncodedItems.from_arrow(column)
    return column.to_numpy(zero_copy_only=False).tolist()


def _tensor_items(column: pa.ChunkedArray, shape: tuple[int, int, int], wrong_length: list[int]) -> list:
    """HWC uint8 views into the Arrow buffers (no copy; not to be written to); None for nulls and for
    rows whose length does not fit the shape (their positions are appended to wrong_length)."""
    items: list = []
    for chunk in column.chunks:
        first = len(items)
        if pa.types.is_fixed_size_list(chunk.type):
            items.extend(_fixed_tensor_items(chunk, shape))
        else:
            items.extend(_variable_tensor_items(chunk, shape, wrong_length, first))
    return items


def _tensor_values(array: pa.Array) -> np.ndarray:
    values = array.values
    if not len(values):
        return np.empty(0, np.uint8)
    return np.frombuffer(values.buffers()[1], dtype=np.uint8)[values.offset:]


def _null_rows(array: pa.Array) -> list[int]:
    return np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False)).tolist() if array.null_count else []


def _fixed_tensor_items(array: pa.Array, shape: tuple[int, int, int]) -> list:
    n, size = len(array), math.prod(shape)
    data = _tensor_values(array)
    items = list(data[array.offset * size:(array.offset + n) * size].reshape((n,) + shape))
    for i in _null_rows(array):
        items[i] = None
    return items


def _variable_tensor_items(array: pa.Array, shape: tuple[int, int, int], wrong_length: list[int],
                           first: int) -> list:
    size = math.prod(shape)
    data = _tensor_values(array)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64 if pa.types.is_large_list(array.type) else np.int32)
    offsets = offsets[array.offset:array.offset + len(array) + 1].tolist()  # Python ints: cheap to slice with
    nulls = set(_null_rows(array))
    items: list = []
    for i, (lo, hi) in enumerate(zip(offsets, offsets[1:])):
        if i in nulls:
            items.append(None)
        elif hi - lo == size:
            items.append(data[lo:hi].reshape(shape))
        else:
            wrong_length.append(first + i)
            items.append(None)
    return items
