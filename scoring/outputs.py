"""Predictions -> Parquet part files, one per shard, and reading them back.

A worker scores a shard batch by batch and hands each batch to a `PartWriter`; `close()` writes
`out_dir/parts/<shard_key>.parquet` under a temporary name in the same directory and renames it into
place, so a part file under its final name is always complete. The worker then records the part in
the manifest (scoring/manifest.py: a line in its own journal under `out_dir/manifest.journal/`,
folded into `out_dir/manifest.json` by the launcher once the workers have ended), and a rerun skips
every shard the manifest lists.

One row per input row, in input order, with these columns:

    id              int64 or string      the dataset's row id
    top_k_indices   list<int32>          class indices, best first (ties: the lower index first)
    top_k_scores    list<float32>        their scores
    top_k_labels    list<string>         their labels (only when labels are given)
    raw             fixed_size_list<float32>[classes]  the whole score vector (only when asked; NaN on error rows)
    error           string               why the row has no prediction; null when it has one

A row with an error (an undecodable image, a null cell) has null predictions.

Read the results back with `pyarrow.dataset.dataset(out_dir / "parts")` or `read_predictions(out_dir)`;
temporary files start with "." so dataset discovery never sees a half-written part.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scoring.errors import OutputError
from scoring.manifest import MANIFEST_NAME, PARTS_DIR, Manifest, PartInfo, file_sha256
from scoring.top_k import top_k

ROW_GROUP_ROWS = 65536  # rows buffered before they go to the temporary file as one row group
# Parquet dictionary encoding only where values repeat: the class names. pyarrow tries it on every
# column by default, and on unique ids and float scores it is work thrown away (it falls back to
# plain once the dictionary is full): with 1,000 raw scores a row, the part writer went from
# 31,600-39,700 to 44,800-49,200 rows/s on the 2-core dev box (two runs each, alternating; the
# files 4% smaller; top-k only: 10% smaller, speed within the box's noise), `python
# benchmarks/outputs_io.py OUT`, benchmarks/results/outputs_io_cpu_2026-11-22_s5_dictionary_*.json.
DICTIONARY_COLUMNS = ["top_k_labels.list.element"]


# ---------------------------------------------------------------------------------------------
# What to write
# ---------------------------------------------------------------------------------------------


def read_labels(path: str | os.PathLike) -> list[str]:
    """One label per line; trailing whitespace and trailing blank lines are dropped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OutputError(f"labels file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OutputError(f"labels file {path} cannot be read as UTF-8 text ({exc})") from None
    labels = [line.rstrip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise OutputError(f"labels file {path} is empty; it needs one label per line")
    return labels


@dataclass
class OutputSpec:
    """What each prediction row holds.

    top_k: how many best classes to keep per row (clamped to the number of classes).
    labels: class names, index i -> labels[i]; adds the top_k_labels column.
    raw: also keep the whole score vector.
    num_classes: the model's class count when known (the worker knows it from the plan); labels are
        checked against it here, and parts of error-only shards still get a raw column of that width.
    labels_file: where the labels came from, for error messages.
    """

    top_k: int = 5
    labels: list[str] | None = None
    raw: bool = False
    num_classes: int | None = None
    labels_file: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, np.integer)) or self.top_k < 1:
            raise OutputError(f"top_k must be a positive integer, got {self.top_k!r}")
        self.top_k = int(self.top_k)
        if self.num_classes is not None:
            if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, (int, np.integer)) \
                    or self.num_classes < 1:
                raise OutputError(f"num_classes must be a positive integer, got {self.num_classes!r}")
            self.num_classes = int(self.num_classes)
        if self.labels is not None:
            self.labels = [str(label) for label in self.labels]
            self.check_classes(self.num_classes)

    @classmethod
    def from_labels_file(cls, path: str | os.PathLike, *, top_k: int = 5, raw: bool = False,
                         num_classes: int | None = None) -> OutputSpec:
        return cls(top_k=top_k, labels=read_labels(path), raw=raw, num_classes=num_classes,
                   labels_file=str(path))

    def for_classes(self, num_classes: int) -> OutputSpec:
        """This spec, told the model's class count (checks the labels cover every class)."""
        return replace(self, num_classes=num_classes)

    def k(self, num_classes: int) -> int:
        return min(self.top_k, num_classes)

    def check_classes(self, num_classes: int | None) -> None:
        if self.num_classes is not None and num_classes is not None and num_classes != self.num_classes:
            raise OutputError(f"the model gives {num_classes} scores per row, but the output spec was "
                              f"made for {self.num_classes} classes")
        if self.labels is not None and num_classes is not None and len(self.labels) < num_classes:
            source = f"labels file {self.labels_file}" if self.labels_file else "the labels list"
            raise OutputError(f"{source} has {len(self.labels)} labels but the model has {num_classes} "
                              f"classes; give one label per line for every class")


# ---------------------------------------------------------------------------------------------
# One part file per shard
# ---------------------------------------------------------------------------------------------


def _failed_rows(errors: list) -> np.ndarray:
    """True for the rows with an error. Most batches have none, and list.count (a C loop; a str
    never equals None) finds that without a Python step per row."""
    if errors.count(None) == len(errors):
        return np.zeros(len(errors), bool)
    return np.array([e is not None for e in errors], bool)


def _error_array(errors: list, failed: np.ndarray) -> pa.Array:
    """The error column: the message of each failed row (as str), null elsewhere."""
    if not failed.any():
        return pa.nulls(len(errors), pa.string())
    texts = [None] * len(errors)  # only the failed rows take a Python step
    for row in np.flatnonzero(failed).tolist():
        texts[row] = str(errors[row])
    return pa.array(texts, pa.string())


@dataclass(frozen=True)
class _ListLayout:
    """Where each row's values sit in the flat values of a list column with k values per scored row
    and none (a null) per failed row; shared by the batch's list columns."""

    failed: np.ndarray
    offsets: pa.Array
    mask: pa.Array | None  # None when every row scored: no mask to build or check

    @classmethod
    def of(cls, failed: np.ndarray, k: int) -> _ListLayout:
        if not failed.any():
            return cls(failed, pa.array(np.arange(len(failed) + 1, dtype=np.int32) * k), None)
        offsets = np.zeros(len(failed) + 1, np.int32)
        np.cumsum(np.where(failed, 0, k), out=offsets[1:])
        return cls(failed, pa.array(offsets), pa.array(failed))

    def flat(self, values: np.ndarray) -> np.ndarray:
        """The scored rows' values, row after row."""
        return (values if self.mask is None else values[~self.failed]).reshape(-1)

    def list_array(self, flat_values: pa.Array) -> pa.Array:
        return pa.ListArray.from_arrays(self.offsets, flat_values, mask=self.mask)


def _list_array(values: np.ndarray, layout: _ListLayout, value_type: pa.DataType) -> pa.Array:
    """(rows, k) values -> list<value_type>, null on failed rows. values must be the writer's own
    array (top_k's output): Arrow may wrap it without a copy."""
    return layout.list_array(pa.array(layout.flat(values), type=value_type))


def _label_array(indices: np.ndarray, layout: _ListLayout, labels: pa.Array) -> pa.Array:
    return layout.list_array(labels.take(pa.array(layout.flat(indices))))


def _raw_rows(raw: np.ndarray, ok: np.ndarray) -> pa.Array:
    """(rows, classes) -> fixed_size_list<float32>, all NaN where not ok. Not null: pyarrow 25
    cannot read a fixed-size list column with null entries back from Parquet. Always a copy: the
    batch waits in the writer while the caller may reuse its array."""
    values = np.array(raw, dtype=np.float32)
    values[~ok] = np.nan
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), raw.shape[1])


class PartWriter:
    """Collects one shard's predictions and writes them as one Parquet file, atomically.

        writer = PartWriter(out_dir, shard.key, spec)
        for batch in ...:
            writer.add(ids, scores, errors)
        info = writer.close()          # parts/<key>.parquet now exists, complete
        manifest.record(info)

    Rows in = rows out: every add() must give as many ids as score rows and errors. If close() is
    never reached (a crash, an exception), no file appears under the final name.
    """

    def __init__(self, out_dir: str | os.PathLike, shard_key: str, spec: OutputSpec | None = None,
                 row_group_rows: int = ROW_GROUP_ROWS) -> None:
        if not shard_key or "/" in shard_key or "\\" in shard_key or shard_key.startswith("."):
            raise ValueError(f"shard key {shard_key!r} cannot name a part file")
        self.out_dir = Path(out_dir)
        self.key = shard_key
        self.spec = spec or OutputSpec()
        self.relative_path = f"{PARTS_DIR}/{shard_key}.parquet"
        self.path = self.out_dir / self.relative_path
        self.row_group_rows = row_group_rows
        self.rows = 0
        self.errors = 0
        self._num_classes = self.spec.num_classes
        self._id_type: pa.DataType | None = None
        self._labels = pa.array(self.spec.labels, pa.string()) if self.spec.labels is not None else None
        self._schema_cache: tuple[tuple, pa.Schema] | None = None  # (id type, class count), schema
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._temp: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        self._closed = False
        self.info: PartInfo | None = None  # set by close()

    # -- adding rows ---------------------------------------------------------------------------

    def add(self, ids, scores: np.ndarray | None, errors: list[str | None], raw: np.ndarray | None = None) -> None:
        """One batch: ids (n,), scores (n, classes) or None when every row failed, errors (n,) with
        None for rows that scored, raw (n, classes) for the raw column (defaults to scores)."""
        if self._closed:
            raise RuntimeError(f"part {self.key} is already closed or aborted")
        ids = self._ids_array(ids)
        n = len(ids)
        errors = list(errors)
        if len(errors) != n:
            raise ValueError(f"part {self.key}: {n} ids but {len(errors)} errors; every row needs one entry")
        failed = _failed_rows(errors)
        if scores is None:
            if not failed.all():
                raise ValueError(f"part {self.key}: scores is None but {int((~failed).sum())} rows have no error")
        else:
            scores = np.asarray(scores)
            if scores.ndim != 2 or scores.shape[0] != n:
                raise ValueError(f"part {self.key}: {n} ids but scores of shape {scores.shape}; "
                                 f"expected ({n}, classes)")
            if scores.dtype != np.float16:  # an FP16 plan's scores are ranked as they are (scoring.top_k)
                scores = scores.astype(np.float32, copy=False)
            self._set_classes(scores.shape[1])
        if raw is not None:
            raw = np.asarray(raw)
            if raw.ndim != 2 or raw.shape[0] != n:
                raise ValueError(f"part {self.key}: {n} ids but raw of shape {raw.shape}")
            raw = raw.astype(np.float32, copy=False)
        elif scores is not None and self.spec.raw:
            raw = scores.astype(np.float32, copy=False)

        ok = ~failed
        if scores is not None:
            indices, values = top_k(scores, self.spec.k(scores.shape[1]))
        else:
            indices, values = np.zeros((n, 0), np.int32), np.zeros((n, 0), np.float32)
        layout = _ListLayout.of(failed, indices.shape[1])
        columns = [ids, _list_array(indices, layout, pa.int32()), _list_array(values, layout, pa.float32())]
        if self._labels is not None:
            columns.append(_label_array(indices, layout, self._labels))
        if self.spec.raw:
            columns.append(self._raw_array(raw, ok, n))
        columns.append(_error_array(errors, failed))
        batch = pa.RecordBatch.from_arrays(columns, schema=self._schema())
        self._pending.append(batch)
        self._pending_rows += n
        self.rows += n
        self.errors += int(failed.sum())
        if self._pending_rows >= self.row_group_rows:
            self._flush()

    def _ids_array(self, ids) -> pa.Array:
        array = np.asarray(ids)
        if array.ndim != 1:
            raise ValueError(f"part {self.key}: ids must be one-dimensional, got shape {array.shape}")
        if len(array) == 0:
            return pa.array([], self._id_type or pa.int64())
        if array.dtype.kind in "iu":
            out = pa.array(array.astype(np.int64, copy=False), pa.int64())
        elif array.dtype.kind in "OUS":
            try:
                out = pa.array(array.tolist())
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise ValueError(f"part {self.key}: ids must be all integers or all strings ({exc})") from None
            if pa.types.is_large_string(out.type):
                out = out.cast(pa.string())
            if out.type not in (pa.int64(), pa.string()):
                raise ValueError(f"part {self.key}: ids must be integers or strings, got {out.type}")
        else:
            raise ValueError(f"part {self.key}: ids must be integers or strings, got dtype {array.dtype}")
        if out.null_count:
            raise ValueError(f"part {self.key}: {out.null_count} ids are null")
        if self._id_type is None:
            self._id_type = out.type
        elif out.type != self._id_type:
            raise ValueError(f"part {self.key}: ids were {self._id_type} and are now {out.type}")
        return out

    def _set_classes(self, classes: int) -> None:
        if self._num_classes is None:
            self.spec.check_classes(classes)
            self._num_classes = classes
        elif classes != self._num_classes:
            raise ValueError(f"part {self.key}: scores had {self._num_classes} classes and now have {classes}")

    def _raw_array(self, raw: np.ndarray | None, ok: np.ndarray, n: int) -> pa.Array:
        width = self._num_classes
        if raw is None:
            if width is None:
                # No scores yet and no class count: the width is settled by the first scored batch.
                return pa.nulls(n, pa.list_(pa.float32()))
            raw = np.zeros((n, width), np.float32)
        elif width is not None and raw.shape[1] != width:
            raise ValueError(f"part {self.key}: raw has {raw.shape[1]} columns, scores {width}")
        return _raw_rows(raw, ok)

    def _schema(self) -> pa.Schema:
        """The schema as far as it is known: the id type and the raw width settle with the first
        batches. Built again only when one of them changes, not for every batch."""
        state = (self._id_type, self._num_classes)
        if self._schema_cache is None or self._schema_cache[0] != state:
            self._schema_cache = (state, self._build_schema())
        return self._schema_cache[1]

    def _build_schema(self) -> pa.Schema:
        fields = [pa.field("id", self._id_type or pa.int64()),
                  pa.field("top_k_indices", pa.list_(pa.int32())),
                  pa.field("top_k_scores", pa.list_(pa.float32()))]
        if self._labels is not None:
            fields.append(pa.field("top_k_labels", pa.list_(pa.string())))
        if self.spec.raw:
            raw_type = pa.list_(pa.float32(), self._num_classes) if self._num_classes else pa.list_(pa.float32())
            fields.append(pa.field("raw", raw_type))
        fields.append(pa.field("error", pa.string()))
        return pa.schema(fields)

    # -- writing -------------------------------------------------------------------------------

    def _final_table(self, batches: list[pa.RecordBatch]) -> pa.Table:
        """Batches made before the id type or class count was known are cast to the final schema."""
        schema = self._schema()
        fixed = []
        for batch in batches:
            if batch.schema.equals(schema):
                fixed.append(batch)
                continue
            columns = []
            for name in schema.names:
                column = batch.column(name)
                target = schema.field(name).type
                if column.type != target and name == "raw":  # error rows written before the width was known
                    column = _raw_rows(np.zeros((len(column), target.list_size), np.float32),
                                       np.zeros(len(column), bool))
                elif column.type != target:
                    column = (pa.nulls(len(column), target) if column.null_count == len(column)
                              else column.cast(target))
                columns.append(column)
            fixed.append(pa.RecordBatch.from_arrays(columns, schema=schema))
        return pa.Table.from_batches(fixed, schema=schema)

    def _flush(self) -> None:
        if not self._pending and self._writer is not None:
            return
        if self.spec.raw and self._num_classes is None and self._writer is None:
            return  # keep buffering until the raw column's width is known (or close() settles it)
        table = self._final_table(self._pending)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{self.key}.parquet.", suffix=".tmp", dir=self.path.parent)
            os.close(fd)
            self._temp = Path(temp)
            self._writer = pq.ParquetWriter(self._temp, table.schema, use_dictionary=DICTIONARY_COLUMNS)
        if table.num_rows:
            self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._pending, self._pending_rows = [], 0

    def close(self) -> PartInfo:
        """Write what is left, move the file into place and describe it. Closing again returns the
        same PartInfo (so `with PartWriter(...) as w: ...` then `w.close()` is fine)."""
        if self.info is not None:
            return self.info
        if self._closed:
            raise RuntimeError(f"part {self.key} was aborted; nothing was written")
        try:
            if self.spec.raw and self._num_classes is None:  # only error rows (scores set the width)
                if self.rows:
                    raise ValueError(f"part {self.key}: every row failed and the class count is unknown, "
                                     f"so the raw column has no width; give OutputSpec.num_classes")
                self._num_classes = 0
            self._flush()
            self._writer.close()
            self._writer = None
            written = pq.read_metadata(self._temp).num_rows
            if written != self.rows:  # pragma: no cover - a bug here, never the user's input
                raise RuntimeError(f"part {self.key}: {self.rows} rows added but {written} written")
            digest = file_sha256(self._temp)
            size = self._temp.stat().st_size
            _fsync(self._temp)
            os.replace(self._temp, self.path)
            _fsync_dir(self.path.parent)
        except BaseException:
            self.abort()
            raise
        self._temp = None
        self._closed = True
        self.info = PartInfo(key=self.key, file=self.relative_path, rows=self.rows, errors=self.errors,
                             sha256=digest, bytes=size)
        return self.info

    def abort(self) -> None:
        """Drop everything written so far; the final name is never touched."""
        if self.info is not None:
            return  # already in place: an abort after close() changes nothing
        self._closed = True
        self._pending = []
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:
                pass
            self._writer = None
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # pragma: no cover
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def read_predictions(out_dir: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """Every recorded part of an output directory as one table, parts in shard-key order."""
    out_dir = Path(out_dir)
    parts = Manifest(out_dir).parts()
    if not parts:
        raise OutputError(f"{out_dir} has no finished parts (no {MANIFEST_NAME} or an empty one)")
    import pyarrow.dataset as ds

    files = [str(out_dir / parts[key].file) for key in sorted(parts)]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise OutputError(f"{out_dir}: the manifest lists parts that are gone: {', '.join(missing)}")
    return ds.dataset(files, format="parquet").to_table(columns=columns)
