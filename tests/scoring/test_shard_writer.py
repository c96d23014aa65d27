"""scoring/shard_writer.py: rows back in read order, part files written on a thread of their own,
shards recorded on the calling thread. Real part files and a real manifest; a batch's scores come
in a finished concurrent Future, as a runner's Pending gives them."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np
import pyarrow.parquet as pq
import pytest

from scoring import outputs
from scoring.dataset import Shard
from scoring.job import parse_job
from scoring.manifest import Manifest
from scoring.outputs import OutputSpec
from scoring.pipeline import Segment, Slot
from scoring.report import Metrics
from scoring.shard_writer import BadRowError, ShardWriter

CLASSES = 6


def _job(tmp_path, **run):
    return parse_job({"model": {"plan": "m.plan"}, "data": {"source": "images/"},
                      "output": {"dir": str(tmp_path / "out"), "top_k": 2}, "run": run},
                     base_dir=tmp_path, check_files=False)


def _writer(tmp_path, events, **run):
    job = _job(tmp_path, **run)
    return ShardWriter(job, OutputSpec(top_k=2, num_classes=CLASSES), Manifest(job.output.dir), Metrics(worker=0),
                       on_batch=None, on_shard=lambda event, shard, info: events.append((event, shard.key)))


def _scores(rows: int, seed: int) -> Future:
    done = Future()
    done.set_result(np.random.default_rng(seed).random((rows, CLASSES), dtype=np.float32))
    return done


SHARDS = [Shard(0, "a.parquet", (0, 1), 0, 6), Shard(1, "a.parquet", (1, 2), 6, 4)]


def _slots(errors=None) -> list[Slot]:
    """Three batches of 4 over shards of 6 and 4 rows: the second holds both shards' rows."""
    errors = errors or {}
    segments = [[Segment(SHARDS[0], 0, 4, True, False)],
                [Segment(SHARDS[0], 0, 2, False, True), Segment(SHARDS[1], 2, 2, True, False)],
                [Segment(SHARDS[1], 0, 2, False, True)]]
    slots, row = [], 0
    for seq, segs in enumerate(segments):
        rows = sum(s.rows for s in segs)
        ids = np.arange(row, row + rows)
        slots.append(Slot(seq, None, ids, [errors.get(int(i)) for i in ids], rows, segs, seq))
        row += rows
    return slots


def test_batches_finished_out_of_order_are_written_in_read_order(tmp_path):
    events = []
    writer = _writer(tmp_path, events)
    slots = _slots()
    metas = {slot.seq: writer.begin(slot) for slot in slots}
    for seq in (2, 0, 1):  # the last batch first, as decoders may hand them over
        writer.finish(metas[seq], _scores(slots[seq].rows, seq))
    writer.close()
    assert not writer.held and writer.images == 10
    assert [e for e in events if e[0] == "done"] == [("done", "part-00000"), ("done", "part-00001")]
    parts = tmp_path / "out" / "parts"
    assert pq.read_table(parts / "part-00000.parquet").column("id").to_pylist() == list(range(6))
    assert pq.read_table(parts / "part-00001.parquet").column("id").to_pylist() == list(range(6, 10))
    assert Manifest(tmp_path / "out").verify().ok


def test_part_files_are_written_off_the_calling_thread(tmp_path, monkeypatch):
    threads = set()
    for name in ("add", "close"):
        real = getattr(outputs.PartWriter, name)

        def noting(self, *args, _real=real, **kwargs):
            threads.add(threading.current_thread().name)
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(outputs.PartWriter, name, noting)
    writer = _writer(tmp_path, [])
    for slot in _slots():
        writer.finish(writer.begin(slot), _scores(slot.rows, slot.seq))
    writer.close()
    assert threads and threading.current_thread().name not in threads
    assert all(name.startswith("bs-parts") for name in threads)


def test_a_failed_add_is_raised_on_the_calling_thread_and_its_shard_never_recorded(tmp_path):
    events = []
    writer = _writer(tmp_path, events)
    first, second, _ = _slots()
    writer.finish(writer.begin(first), _scores(4, 0))
    bad = writer.begin(second)
    bad = bad[:2] + (np.array(["x", "y", "z", "w"], object),) + bad[3:]  # ids turn from int to str mid-shard
    with pytest.raises(ValueError, match="ids were int64 and are now string"):
        writer.finish(bad, _scores(4, 1))
        writer.reap(wait=True)
    writer.abort()
    assert not [e for e in events if e[0] == "done"]
    assert Manifest(tmp_path / "out").done() == set()
    assert not list((tmp_path / "out" / "parts").glob("*.parquet"))  # nothing short of rows in place


def test_abort_drops_open_shards_and_records_the_closed_ones(tmp_path):
    events = []
    writer = _writer(tmp_path, events)
    first, second, _ = _slots()
    for slot in (first, second):  # shard 0 is complete, shard 1 half written
        writer.finish(writer.begin(slot), _scores(slot.rows, slot.seq))
    writer.abort()
    assert Manifest(tmp_path / "out").done() == {"part-00000"}
    assert ("done", "part-00000") in events and ("done", "part-00001") not in events
    assert sorted(p.name for p in (tmp_path / "out" / "parts").iterdir()) == ["part-00000.parquet"]


def test_fail_fast_names_the_first_bad_row_in_read_order(tmp_path):
    writer = _writer(tmp_path, [], fail_fast=True)
    slots = _slots(errors={7: "truncated JPEG", 2: "not an image"})
    metas = [writer.begin(slot) for slot in slots]
    writer.finish(metas[1], _scores(4, 1))  # holds row 7; held until batch 0 is written
    with pytest.raises(BadRowError, match=r"row with id 2 \(shard part-00000, a.parquet\) cannot be scored: "
                                          r"not an image"):
        writer.finish(metas[0], _scores(4, 0))
    writer.abort()


def test_a_part_thread_that_falls_behind_holds_up_the_calling_thread_not_memory(tmp_path, monkeypatch):
    from scoring import shard_writer

    monkeypatch.setattr(shard_writer, "MAX_PART_TASKS", 2)
    release, most = threading.Event(), 0
    real = outputs.PartWriter.add

    def slow_add(self, *args, **kwargs):
        release.wait(10)  # a disk far slower than the engine
        return real(self, *args, **kwargs)

    monkeypatch.setattr(outputs.PartWriter, "add", slow_add)
    writer = _writer(tmp_path, [])
    threading.Timer(0.2, release.set).start()
    for slot in _slots():
        writer.finish(writer.begin(slot), _scores(slot.rows, slot.seq))
        most = max(most, len(writer.tasks))
    writer.close()
    assert most <= 2 and release.is_set()
    assert Manifest(tmp_path / "out").done() == {"part-00000", "part-00001"}
