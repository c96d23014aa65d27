"""scoring/manifest.py: records, resume and verification, journals folded by compact(), damaged
files, and readers and writers in several threads and processes."""

from __future__ import annotations

import json
import logging
import multiprocessing
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from scoring.errors import OutputError
from scoring.manifest import JOURNAL_DIR, Manifest, PartInfo
from tests.scoring.test_outputs import write_part

def test_manifest_records_resumes_and_verifies(tmp_path):
    manifest = Manifest(tmp_path)
    assert manifest.done() == set() and manifest.verify().ok
    infos = [write_part(tmp_path, f"part-{i:05d}", np.arange(i * 4, i * 4 + 4), np.ones((4, 3), np.float32),
                        [None, "bad", None, None]) for i in range(3)]
    for info in infos:
        manifest.record(info)
    # A fresh Manifest (a rerun) sees the same thing, from the journal before it is folded...
    again = Manifest(tmp_path)
    assert again.done() == {"part-00000", "part-00001", "part-00002"}
    assert again.parts()["part-00001"] == infos[1]
    assert again.rows == 12
    assert not (tmp_path / "manifest.json").exists()  # record() appends; it rewrites nothing
    # ... and from manifest.json after: a launcher's compact() folds the journal in and removes it.
    manifest.close()
    assert (tmp_path / JOURNAL_DIR).is_dir() and not (tmp_path / "manifest.json").exists()  # close() folds nothing
    Manifest(tmp_path).compact()
    assert not (tmp_path / JOURNAL_DIR).exists()
    assert Manifest(tmp_path).parts() == again.parts()
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["rows"] == 12 and data["errors"] == 3
    assert [p["sha256"] for p in data["parts"]] == [i.sha256 for i in infos]
    result = again.verify()
    assert result.ok and result.checked == 3 and "all 3 parts" in str(result)

    (tmp_path / infos[0].file).unlink()
    with open(tmp_path / infos[2].file, "r+b") as f:  # flip one byte
        f.seek(20)
        byte = f.read(1)
        f.seek(20)
        f.write(bytes([byte[0] ^ 0xFF]))
    stray = write_part(tmp_path, "part-00009", np.arange(2), np.ones((2, 3), np.float32), [None] * 2)
    result = again.verify()
    assert not result.ok
    assert result.missing == ["part-00000"] and result.modified == ["part-00002"]
    assert result.unrecorded == [Path(stray.file).name]
    assert "1 missing (part-00000)" in str(result) and "1 modified" in str(result)


def test_a_damaged_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(OutputError, match="is not a batchscore manifest"):
        Manifest(tmp_path).done()
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 99, "parts": []}))
    with pytest.raises(OutputError, match="format 99"):
        Manifest(tmp_path).done()


def test_a_reader_never_misses_a_record_while_journals_are_folded(tmp_path):
    # Every few records the writer pauses and the journals are folded, as a launcher does between
    # runs; a reader that looked at manifest.json before the journals could miss the records being
    # moved from one to the other.
    info = write_part(tmp_path, "part-00000", np.arange(4), np.ones((4, 3), np.float32), [None] * 4)
    manifest = Manifest(tmp_path)
    manifest.record(info)
    stop = threading.Event()
    reads, failures = [0], []

    def reader():
        seen = 0
        while not stop.is_set():
            try:
                count = len(Manifest(tmp_path).done())
                if count < seen:
                    failures.append(f"{count} records after {seen}")
                seen = count
                reads[0] += 1
            except Exception as exc:  # a half-written manifest.json would land here
                failures.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(1, 120):
            manifest.record(PartInfo(key=f"part-{i:05d}", file=info.file, rows=4, errors=0, sha256=info.sha256))
            if i % 7 == 0:
                manifest.close()
                manifest.compact()
    finally:
        stop.set()
        thread.join()
    assert not failures and reads[0] > 0
    assert len(manifest.done()) == 120
    manifest.close()
    manifest.compact()
    assert len(json.loads((tmp_path / "manifest.json").read_text())["parts"]) == 120
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_torn_journal_line_is_skipped_and_compact_folds_every_journal(tmp_path, caplog):
    # A worker killed mid-record leaves half a line (no newline): not a record, and no warning
    # either, since a reader sees the same while a live writer appends. A whole line that does not
    # parse is skipped with a warning. Either way that shard is scored again; the others stand.
    info = write_part(tmp_path, "part-00000", np.arange(4), np.ones((4, 3), np.float32), [None] * 4)
    Manifest(tmp_path).record(info)  # never closed: a killed worker's journal
    journals = list((tmp_path / JOURNAL_DIR).iterdir())
    assert len(journals) == 1
    with open(journals[0], "a") as f:
        f.write('{"key":"part-00001","file":"parts/part-000')
    with caplog.at_level(logging.WARNING):
        assert Manifest(tmp_path).done() == {"part-00000"}
    assert not caplog.text
    with open(journals[0], "a") as f:
        f.write('\n' + json.dumps(replace(info, key="part-00003").to_dict()) + '\n')
    with caplog.at_level(logging.WARNING):
        assert Manifest(tmp_path).done() == {"part-00000", "part-00003"}
    assert "line 2 does not parse" in caplog.text and journals[0].name in caplog.text
    other = Manifest(tmp_path)  # a second writer, also never closed
    other.record(replace(info, key="part-00002"))
    Manifest(tmp_path).compact()  # a launcher, once no worker runs
    assert not (tmp_path / JOURNAL_DIR).exists()
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert [p["key"] for p in data["parts"]] == ["part-00000", "part-00002", "part-00003"]


def test_compact_with_nothing_recorded_writes_no_manifest(tmp_path):
    Manifest(tmp_path).compact()
    Manifest(tmp_path).close()
    assert list(tmp_path.iterdir()) == []


def _record_many(out_dir: str, worker: int, count: int, close: bool) -> None:
    manifest = Manifest(out_dir)
    for i in range(count):
        manifest.record(PartInfo(key=f"w{worker}-{i:03d}", file="parts/x.parquet", rows=1, errors=0, sha256="0"))
    if close:
        manifest.close()


def test_workers_in_separate_processes_lose_no_record(tmp_path):
    # Three workers close their journals as they end; the fourth (killed, say) leaves its own open.
    context = multiprocessing.get_context("spawn")  # fork after pyarrow started its threads can hang
    procs = [context.Process(target=_record_many, args=(str(tmp_path), w, 30, w < 3)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(Manifest(tmp_path).done()) == 120
    assert len(list((tmp_path / JOURNAL_DIR).iterdir())) == 4  # one each
    Manifest(tmp_path).compact()
    assert len(json.loads((tmp_path / "manifest.json").read_text())["parts"]) == 120
    assert not (tmp_path / JOURNAL_DIR).exists()
