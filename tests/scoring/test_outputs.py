"""scoring/outputs.py: top-k, part files (rows in = rows out, atomic) and reading the results back
with pyarrow.dataset and pandas (the manifest's own tests: test_manifest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from scoring import outputs
from scoring.errors import OutputError
from scoring.manifest import Manifest, PartInfo, file_sha256
from scoring.outputs import OutputSpec, PartWriter, read_predictions, top_k

# ---------------------------------------------------------------------------------------------
# top-k
# ---------------------------------------------------------------------------------------------


def reference_top_k(scores, k):
    """Sorted by score descending, ties by the lower index, NaN last: the definition, row by row."""
    out = []
    for row in scores:
        key = [(-(v if not np.isnan(v) else -np.inf), np.isnan(v), i) for i, v in enumerate(row)]
        key.sort(key=lambda t: (t[1], t[0], t[2]))
        out.append([i for _, _, i in key[:k]])
    return np.array(out, np.int32).reshape(len(scores), min(k, scores.shape[1]))


def test_top_k_orders_by_score_then_lower_index():
    scores = np.array([[0.1, 0.5, 0.5, 0.9, 0.5],
                       [1.0, 1.0, 1.0, 1.0, 1.0],
                       [-3.0, -1.0, -2.0, 0.0, -1.0]], np.float32)
    indices, values = top_k(scores, 3)
    assert indices.dtype == np.int32 and values.dtype == np.float32
    assert indices.tolist() == [[3, 1, 2], [0, 1, 2], [3, 1, 4]]
    np.testing.assert_array_equal(values, np.take_along_axis(scores, indices.astype(np.int64), 1))


def test_top_k_matches_the_definition_with_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(300, 20)).astype(np.float32)  # ties everywhere, also at the k-th place
    scores[::7] = rng.standard_normal((len(scores[::7]), 20))  # and rows with none
    for k in (1, 3, 5, 19, 20):
        np.testing.assert_array_equal(top_k(scores, k)[0], reference_top_k(scores, k))


def test_top_k_clamps_k_and_ranks_nan_last():
    scores = np.array([[0.2, np.nan, 0.7], [np.nan, np.nan, 0.0]], np.float32)
    indices, values = top_k(scores, 10)
    assert indices.shape == (2, 3)
    assert indices.tolist() == [[2, 0, 1], [2, 0, 1]]
    assert np.isnan(values[0, 2])


def test_top_k_accepts_float16_and_empty_batches():
    indices, values = top_k(np.array([[1, 3, 2]], np.float16), 2)
    assert indices.tolist() == [[1, 2]] and values.dtype == np.float32
    indices, values = top_k(np.zeros((0, 10), np.float32), 5)
    assert indices.shape == (0, 5)


# ---------------------------------------------------------------------------------------------
# OutputSpec and labels
# ---------------------------------------------------------------------------------------------


def test_output_spec_validates_top_k():
    for bad in (0, -1, 2.5, True, "5"):
        with pytest.raises(OutputError, match="top_k must be a positive integer"):
            OutputSpec(top_k=bad)


def test_labels_file_shorter_than_classes_names_the_file_and_counts(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n\n\n")  # trailing blank lines are not labels
    spec = OutputSpec.from_labels_file(labels, top_k=2)
    assert spec.labels == ["cat", "dog", "bird"]
    with pytest.raises(OutputError, match=r"labels\.txt has 3 labels but the model has 5 classes"):
        OutputSpec.from_labels_file(labels, num_classes=5)
    with pytest.raises(OutputError, match=r"labels\.txt has 3 labels but the model has 4 classes"):
        spec.for_classes(4)
    # Told the class count only by the first batch: the error comes from add(), before anything is written.
    writer = PartWriter(tmp_path / "out", "part-00000", spec)
    with pytest.raises(OutputError, match="3 labels but the model has 4 classes"):
        writer.add(np.arange(2), np.zeros((2, 4), np.float32), [None, None])
    writer.abort()
    assert not (tmp_path / "out" / "parts" / "part-00000.parquet").exists()
    assert OutputSpec.from_labels_file(labels, num_classes=3).labels_file == str(labels)  # more is fine too


def test_labels_file_missing_or_empty(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        OutputSpec.from_labels_file(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(OutputError, match="empty.txt is empty"):
        OutputSpec.from_labels_file(tmp_path / "empty.txt")


# ---------------------------------------------------------------------------------------------
# PartWriter
# ---------------------------------------------------------------------------------------------


def write_part(out_dir, key, ids, scores, errors, spec=None, batch=4):
    writer = PartWriter(out_dir, key, spec or OutputSpec(top_k=3))
    for start in range(0, len(ids), batch):
        stop = start + batch
        writer.add(ids[start:stop], None if scores is None else scores[start:stop], errors[start:stop])
    return writer.close()


def test_part_columns_types_and_error_rows(tmp_path):
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((10, 6)).astype(np.float32)
    errors = [None] * 10
    errors[3] = "cannot identify image file"
    errors[8] = "empty cell"
    spec = OutputSpec(top_k=3, labels=[f"c{i}" for i in range(6)], raw=True)
    info = write_part(tmp_path, "part-00002", np.arange(100, 110), scores, errors, spec)

    assert info == PartInfo(key="part-00002", file="parts/part-00002.parquet", rows=10, errors=2,
                            sha256=file_sha256(tmp_path / "parts/part-00002.parquet"), bytes=info.bytes)
    table = pq.read_table(tmp_path / info.file)
    assert table.column_names == ["id", "top_k_indices", "top_k_scores", "top_k_labels", "raw", "error"]
    types = {f.name: f.type for f in table.schema}
    assert types["id"] == pa.int64()
    assert pa.types.is_list(types["top_k_indices"]) and types["top_k_indices"].value_type == pa.int32()
    assert pa.types.is_list(types["top_k_scores"]) and types["top_k_scores"].value_type == pa.float32()
    assert pa.types.is_list(types["top_k_labels"]) and types["top_k_labels"].value_type == pa.string()
    assert pa.types.is_fixed_size_list(types["raw"]) and types["raw"].list_size == 6
    assert types["raw"].value_type == pa.float32() and types["error"] == pa.string()

    rows = table.to_pylist()
    assert [r["id"] for r in rows] == list(range(100, 110))  # input order kept
    expected, _ = top_k(scores, 3)
    for i, row in enumerate(rows):
        if errors[i] is None:
            assert row["error"] is None
            assert row["top_k_indices"] == expected[i].tolist()
            np.testing.assert_array_equal(row["top_k_scores"], scores[i, expected[i]])
            assert row["top_k_labels"] == [f"c{j}" for j in expected[i]]
            np.testing.assert_array_equal(row["raw"], scores[i])
        else:
            assert row["error"] == errors[i]
            assert row["top_k_indices"] is None and row["top_k_scores"] is None
            assert row["top_k_labels"] is None and np.isnan(row["raw"]).all() and len(row["raw"]) == scores.shape[1]


@pytest.mark.parametrize("raw", [True, False])
def test_float16_scores_write_what_their_float32_copy_writes(tmp_path, raw):
    """An FP16 plan's scores reach the part file as float16 (ranked as they are, scoring.top_k):
    the file is byte for byte the one their float32 copy gives, raw column and error rows included."""
    rng = np.random.default_rng(3)
    scores = rng.integers(-3, 4, size=(12, 6)).astype(np.float16)  # ties
    scores[5, 2], scores[7] = np.nan, -0.0
    errors = [None] * 12
    errors[4] = "cannot identify image file"
    spec = OutputSpec(top_k=3, labels=[f"c{i}" for i in range(6)], raw=raw)
    half = write_part(tmp_path / "half", "part-00000", np.arange(12), scores, errors, spec)
    full = write_part(tmp_path / "full", "part-00000", np.arange(12), scores.astype(np.float32), errors, spec)
    assert half.sha256 == full.sha256 and half.rows == 12 and half.errors == 1
    assert ("raw" in pq.read_schema(tmp_path / "half" / half.file).names) == raw


def test_only_the_class_names_are_dictionary_encoded(tmp_path):
    rng = np.random.default_rng(2)
    spec = OutputSpec(top_k=3, labels=[f"class {i}" for i in range(6)], raw=True)
    ids = np.array([f"img-{i}" for i in range(50)], dtype=object)
    info = write_part(tmp_path, "part-00000", ids, rng.standard_normal((50, 6)).astype(np.float32), [None] * 50, spec)
    group = pq.ParquetFile(tmp_path / info.file).metadata.row_group(0)
    dictionary = {group.column(j).path_in_schema for j in range(group.num_columns)
                  if any("DICTIONARY" in e for e in group.column(j).encodings)}
    assert dictionary == {"top_k_labels.list.element"}  # not the unique ids, not the float scores


def test_string_ids_and_no_optional_columns(tmp_path):
    ids = np.array([f"img-{i}" for i in range(5)], dtype=object)
    info = write_part(tmp_path, "part-00000", ids, np.eye(5, dtype=np.float32), [None] * 5, OutputSpec(top_k=1))
    table = pq.read_table(tmp_path / info.file)
    assert table.column_names == ["id", "top_k_indices", "top_k_scores", "error"]
    assert table.schema.field("id").type == pa.string()
    assert table.column("id").to_pylist() == list(ids)
    assert table.column("top_k_indices").to_pylist() == [[i] for i in range(5)]


def test_k_larger_than_classes_is_clamped(tmp_path):
    info = write_part(tmp_path, "part-00000", np.arange(3), np.array([[1, 2, 3]] * 3, np.float32), [None] * 3,
                      OutputSpec(top_k=10))
    assert pq.read_table(tmp_path / info.file).column("top_k_indices").to_pylist() == [[2, 1, 0]] * 3


@pytest.mark.parametrize("ids, scores, errors, message", [
    (np.arange(4), np.zeros((4, 3), np.float32), [None] * 3, "4 ids but 3 errors"),
    (np.arange(4), np.zeros((3, 3), np.float32), [None] * 4, r"4 ids but scores of shape \(3, 3\)"),
    (np.arange(4), np.zeros(4, np.float32), [None] * 4, "expected"),
    (np.arange(2), None, ["bad", None], "scores is None but 1 rows have no error"),
    (np.zeros((2, 2), np.int64), np.zeros((2, 3), np.float32), [None] * 2, "one-dimensional"),
    (np.array([1.5, 2.5]), np.zeros((2, 3), np.float32), [None] * 2, "integers or strings"),
    (np.array([1, "a"], dtype=object), np.zeros((2, 3), np.float32), [None] * 2, "all integers or all strings"),
])
def test_rows_in_must_equal_rows_out(tmp_path, ids, scores, errors, message):
    writer = PartWriter(tmp_path, "part-00000", OutputSpec())
    with pytest.raises(ValueError, match=message):
        writer.add(ids, scores, errors)


def test_batches_must_agree_on_classes_and_id_type(tmp_path):
    writer = PartWriter(tmp_path, "part-00000", OutputSpec())
    writer.add(np.arange(2), np.zeros((2, 3), np.float32), [None, None])
    with pytest.raises(ValueError, match="3 classes and now have 4"):
        writer.add(np.arange(2), np.zeros((2, 4), np.float32), [None, None])
    with pytest.raises(ValueError, match="ids were int64 and are now string"):
        writer.add(np.array(["a"], object), np.zeros((1, 3), np.float32), [None])


def test_error_only_batches_before_and_without_scores(tmp_path):
    spec = OutputSpec(top_k=2, raw=True)
    # The first batch fails entirely; the raw column's width comes from the second batch.
    writer = PartWriter(tmp_path, "part-00000", spec)
    writer.add(np.arange(3), None, ["a", "b", "c"])
    writer.add(np.arange(3, 5), np.array([[1, 0, 2], [0, 5, 1]], np.float32), [None, None])
    table = pq.read_table(tmp_path / writer.close().file)
    assert table.schema.field("raw").type.list_size == 3
    assert all(np.isnan(r).all() and len(r) == 3 for r in table.column("raw").to_pylist()[:3])
    assert table.column("top_k_indices").to_pylist() == [None, None, None, [2, 0], [1, 2]]
    # A shard where every row failed: fine when the class count is known ...
    info = write_part(tmp_path, "part-00001", np.arange(2), None, ["x", "y"], spec.for_classes(3))
    assert pq.read_table(tmp_path / info.file).schema.equals(table.schema)
    # ... and a clear refusal when it is not (the worker always knows it from the plan).
    writer = PartWriter(tmp_path, "part-00002", spec)
    writer.add(np.arange(2), None, ["x", "y"])
    with pytest.raises(ValueError, match="give OutputSpec.num_classes"):
        writer.close()
    assert not (tmp_path / "parts" / "part-00002.parquet").exists()


def test_empty_shard_writes_an_empty_part(tmp_path):
    info = PartWriter(tmp_path, "part-00000", OutputSpec()).close()
    assert info.rows == 0 and pq.read_table(tmp_path / info.file).num_rows == 0


def test_large_parts_stream_in_row_groups(tmp_path):
    writer = PartWriter(tmp_path, "part-00000", OutputSpec(top_k=2), row_group_rows=10)
    for start in range(0, 35, 5):
        writer.add(np.arange(start, start + 5), np.ones((5, 4), np.float32), [None] * 5)
    info = writer.close()
    meta = pq.read_metadata(tmp_path / info.file)
    assert meta.num_rows == 35 and meta.num_row_groups == 4
    assert pq.read_table(tmp_path / info.file).column("id").to_pylist() == list(range(35))


def test_a_failure_after_the_temp_file_is_written_leaves_no_part(tmp_path, monkeypatch):
    parts = tmp_path / "parts"
    seen = []

    def failing_replace(src, dst):
        seen.append(Path(src))
        assert Path(src).is_file() and Path(src).stat().st_size > 0  # the temp file was fully written
        assert Path(src).parent == parts and Path(src).name.startswith(".")  # same dir, hidden name
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.os, "replace", failing_replace)
    writer = PartWriter(tmp_path, "part-00007", OutputSpec())
    writer.add(np.arange(4), np.ones((4, 3), np.float32), [None] * 4)
    with pytest.raises(OSError, match="No space left"):
        writer.close()
    assert seen
    assert not (parts / "part-00007.parquet").exists()
    assert list(parts.iterdir()) == []  # the temp file is cleaned up too
    monkeypatch.undo()
    # An exception inside a `with` block aborts the part the same way.
    with pytest.raises(RuntimeError, match="decoder died"):
        with PartWriter(tmp_path, "part-00008", OutputSpec()) as writer:
            writer.add(np.arange(4), np.ones((4, 3), np.float32), [None] * 4)
            raise RuntimeError("decoder died")
    assert list(parts.iterdir()) == []


def test_rewriting_a_part_replaces_it_whole(tmp_path):
    first = write_part(tmp_path, "part-00000", np.arange(4), np.ones((4, 3), np.float32), [None] * 4)
    second = write_part(tmp_path, "part-00000", np.arange(4), np.zeros((4, 3), np.float32), ["e"] * 4)
    assert first.sha256 != second.sha256
    assert file_sha256(tmp_path / second.file) == second.sha256


# ---------------------------------------------------------------------------------------------
# Reading the results back
# ---------------------------------------------------------------------------------------------


def score_job(out_dir: Path, total: int, shard_rows: int, spec: OutputSpec, crash_on: str | None = None):
    """A toy worker loop over shards with resume: the shape of scoring/worker.py."""
    manifest = Manifest(out_dir)
    done = manifest.done()
    rng = np.random.default_rng(7)
    scored = []
    for first in range(0, total, shard_rows):
        key = f"part-{first // shard_rows:05d}"
        if key in done:
            continue
        ids = np.arange(first, min(first + shard_rows, total))
        with PartWriter(out_dir, key, spec) as writer:
            for start in range(0, len(ids), 16):
                batch = ids[start:start + 16]
                errors = ["undecodable" if i % 13 == 0 else None for i in batch]
                writer.add(batch, rng.standard_normal((len(batch), 10)).astype(np.float32), errors)
                if key == crash_on and start >= 16:
                    raise KeyboardInterrupt  # the job is killed halfway through this shard
        manifest.record(writer.close())
        scored.append(key)
    return scored


def test_every_row_exactly_once_through_a_crash_and_resume(tmp_path):
    import pandas as pd

    spec = OutputSpec(top_k=3, labels=[f"class {i}" for i in range(10)])
    with pytest.raises(KeyboardInterrupt):
        score_job(tmp_path, total=500, shard_rows=64, spec=spec, crash_on="part-00004")
    assert Manifest(tmp_path).done() == {f"part-{i:05d}" for i in range(4)}
    (tmp_path / "parts" / ".part-00004.parquet.leftover.tmp").write_bytes(b"PAR1 half a file")  # a kill -9
    resumed = score_job(tmp_path, total=500, shard_rows=64, spec=spec)
    assert resumed == [f"part-{i:05d}" for i in range(4, 8)]  # finished shards were skipped
    assert score_job(tmp_path, total=500, shard_rows=64, spec=spec) == []
    assert Manifest(tmp_path).verify().ok

    table = ds.dataset(tmp_path / "parts", format="parquet").to_table()
    assert sorted(table.column("id").to_pylist()) == list(range(500))
    frame = pd.read_parquet(tmp_path / "parts")
    assert len(frame) == 500 and frame["id"].is_unique and set(frame["id"]) == set(range(500))
    errors = frame[frame["error"].notna()]
    assert set(errors["id"]) == {i for i in range(500) if i % 13 == 0}
    assert errors["top_k_indices"].isna().all() and errors["top_k_labels"].isna().all()
    ok = frame[frame["error"].isna()]
    assert ok["top_k_indices"].map(len).eq(3).all()
    assert all(labels[0] == f"class {idx[0]}" for idx, labels in zip(ok["top_k_indices"], ok["top_k_labels"]))

    table = read_predictions(tmp_path, columns=["id", "error"])
    assert table.column("id").to_pylist() == list(range(500))  # shard-key order is row order here


def test_read_predictions_without_a_manifest(tmp_path):
    with pytest.raises(OutputError, match="no finished parts"):
        read_predictions(tmp_path)


def test_close_twice_returns_the_same_part_and_abort_writes_nothing(tmp_path):
    with PartWriter(tmp_path, "part-00000", OutputSpec()) as writer:
        writer.add(np.arange(2), np.ones((2, 3), np.float32), [None, None])
    assert writer.close() == writer.info and writer.info.rows == 2
    writer.abort()  # after close: the part stays
    assert (tmp_path / writer.info.file).is_file()
    aborted = PartWriter(tmp_path, "part-00001", OutputSpec())
    aborted.add(np.arange(2), np.ones((2, 3), np.float32), [None, None])
    aborted.abort()
    with pytest.raises(RuntimeError, match="was aborted"):
        aborted.close()
    with pytest.raises(RuntimeError, match="closed or aborted"):
        aborted.add(np.arange(1), np.ones((1, 3), np.float32), [None])
    assert not (tmp_path / "parts" / "part-00001.parquet").exists()
    with pytest.raises(ValueError, match="cannot name a part file"):
        PartWriter(tmp_path, "../escape", OutputSpec())
