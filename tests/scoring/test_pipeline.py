"""The read/decode thread runs ahead across shards; the worker writes each shard whole and once.

A real Parquet dataset, the CPU decoder and the tiny conv net of test_run_local; no mocks."""

from __future__ import annotations

import threading
import time

import pytest

import engine
from scoring.dataset import Shard, open_dataset
from scoring.decode import CpuDecoder, Preprocess
from scoring.job import parse_job
from scoring.make_data import make_dataset
from scoring.manifest import Manifest
from scoring.outputs import read_predictions
from scoring.pipeline import Prefetcher
from scoring.runner import CpuRunner, PipelineError
from scoring.worker import score_shards
from tests.scoring.test_run_local import CROP, tiny_network

PREPROCESS = Preprocess(resize_shorter=36, crop=CROP)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    make_dataset(root / "images", 50, row_groups=10, image_size=(40, 48), corrupt=2, seed=5, workers=1)
    plan = engine.build(tiny_network().graph(), engine.BuildConfig(max_batch=16)).save(root / "tiny.plan")
    return root, open_dataset(root / "images"), plan


def _segments(slot):
    return [(g.shard.key, g.start, g.rows, g.first, g.last) for g in slot.segments]


def test_prefetcher_fills_batches_across_shards_and_marks_where_each_begins_and_ends(data):
    _, dataset, plan = data
    shards = dataset.shards(10)  # 5 shards of 10 rows in batches of 4: 12 full batches, then 2 rows
    runner = CpuRunner(engine.load(plan), 4, PREPROCESS)
    seen = []
    with CpuDecoder(PREPROCESS) as decoder, \
            Prefetcher(dataset, iter(shards), decoder, runner.make_ring(2), batch_rows=4) as batches:
        for slot in batches:
            seen.append((slot.rows, _segments(slot), list(slot.ids)))
    assert [rows for rows, _, _ in seen] == [4] * 12 + [2]
    assert [segments for _, segments, _ in seen[:3]] == [
        [("part-00000", 0, 4, True, False)], [("part-00000", 0, 4, False, False)],
        [("part-00000", 0, 2, False, True), ("part-00001", 2, 2, True, False)]]
    by_shard = {}
    for _, segments, _ in seen:
        for key, _, rows, first, last in segments:
            by_shard.setdefault(key, []).append((rows, first, last))
    for key, parts in by_shard.items():  # each shard's rows once, first at its start, last at its end
        assert sum(rows for rows, _, _ in parts) == 10, key
        assert [first for _, first, _ in parts] == [True] + [False] * (len(parts) - 1)
        assert [last for _, _, last in parts] == [False] * (len(parts) - 1) + [True]
    ids = [i for _, _, slot_ids in seen for i in slot_ids]
    assert ids == [f"img-{i:06d}" for i in range(50)]  # every row once, in order


def test_an_empty_shard_rides_with_the_batch_it_falls_in_or_comes_alone(data):
    _, dataset, plan = data
    shards = dataset.shards(10)
    empty = [Shard(90 + k, shards[0].file, (0, 0), 0, 0) for k in range(2)]
    runner = CpuRunner(engine.load(plan), 4, PREPROCESS)
    with CpuDecoder(PREPROCESS) as decoder, \
            Prefetcher(dataset, iter([empty[0], shards[0], empty[1], shards[1]]), decoder, runner.make_ring(2),
                       batch_rows=4) as batches:
        seen = [(slot.rows, slot.index, _segments(slot)) for slot in batches]
    assert seen[0] == (0, -1, [("part-00090", 0, 0, True, True)])  # nothing to ride with: a slot of its own
    assert seen[3][2] == [("part-00000", 0, 2, False, True), ("part-00091", 2, 0, True, True),
                          ("part-00001", 2, 2, True, False)]
    assert sum(rows for rows, _, _ in seen) == 20


def test_two_decoders_in_read_order_hand_over_batches_in_read_order(data):
    _, dataset, plan = data
    runner = CpuRunner(engine.load(plan), 4, PREPROCESS)
    with CpuDecoder(PREPROCESS) as one, _SlowFirstCall(PREPROCESS) as two, \
            Prefetcher(dataset, iter(dataset.shards(10)), [one, two], runner.make_ring(3), batch_rows=4,
                       order="read") as batches:
        slots = [(slot.seq, list(slot.ids)) for slot in batches]
    assert [seq for seq, _ in slots] == list(range(13))
    assert [i for _, ids in slots for i in ids] == [f"img-{i:06d}" for i in range(50)]
    with pytest.raises(ValueError, match="2 decoders need a ring of at least 3 slots"):
        Prefetcher(dataset, iter(dataset.shards(10)), [one, two], runner.make_ring(2), batch_rows=4)
    with pytest.raises(ValueError, match="in order \"decoded\" or \"read\", not 'sorted'"):
        Prefetcher(dataset, iter(dataset.shards(10)), [one, two], runner.make_ring(3), batch_rows=4, order="sorted")
    with pytest.raises(ValueError, match="max_ahead must be at least 1, got 0"):
        Prefetcher(dataset, iter(dataset.shards(10)), [one, two], runner.make_ring(3), batch_rows=4, max_ahead=0)


class _SlowFirstCall(CpuDecoder):
    """A CpuDecoder whose first batch takes `delay` seconds more: a decode call far slower than the
    rest, as GPU decode calls sometimes are."""

    def __init__(self, preprocess, delay: float = 0.4):
        super().__init__(preprocess)
        self.delay, self.calls = delay, 0

    def decode_into(self, items, out, route=None):
        self.calls += 1
        if self.calls == 1:
            time.sleep(self.delay)
        return super().decode_into(items, out)


def _oldest_not_handed_over(handed: set[int]) -> int:
    return next(seq for seq in range(len(handed) + 1) if seq not in handed)


@pytest.mark.parametrize("max_ahead", [2, 32])
def test_batches_decoded_behind_a_slow_one_are_handed_over_first_within_max_ahead(data, max_ahead):
    _, dataset, plan = data
    runner = CpuRunner(engine.load(plan), 4, PREPROCESS)
    handed, ahead = set(), []
    with _SlowFirstCall(PREPROCESS) as slow, CpuDecoder(PREPROCESS) as fast, \
            Prefetcher(dataset, iter(dataset.shards(10)), [slow, fast], runner.make_ring(3), batch_rows=4,
                       max_ahead=max_ahead) as batches:
        slots = []
        for slot in batches:
            ahead.append(slot.seq - _oldest_not_handed_over(handed))
            handed.add(slot.seq)
            slots.append((slot.seq, _segments(slot), list(slot.ids)))
    seqs = [seq for seq, *_ in slots]
    assert sorted(seqs) == list(range(13)) and seqs != sorted(seqs)  # all of them, some overtaken
    assert 0 < max(ahead) <= max_ahead
    # each slot still says where it belongs: put back in read order, the rows are the dataset's
    in_order = sorted(slots)
    assert [i for *_, ids in in_order for i in ids] == [f"img-{i:06d}" for i in range(50)]
    assert [segments for _, segments, _ in in_order[:3]] == [
        [("part-00000", 0, 4, True, False)], [("part-00000", 0, 4, False, False)],
        [("part-00000", 0, 2, False, True), ("part-00001", 2, 2, True, False)]]


def test_a_failure_of_the_shard_source_comes_after_every_batch_read_before_it(data):
    _, dataset, plan = data

    def shards():
        yield from dataset.shards(10)[:2]
        raise ConnectionError("the driver went away")

    runner = CpuRunner(engine.load(plan), 4, PREPROCESS)
    with _SlowFirstCall(PREPROCESS) as slow, CpuDecoder(PREPROCESS) as fast, \
            Prefetcher(dataset, shards(), [slow, fast], runner.make_ring(3), batch_rows=4) as batches:
        seqs, ids = [], []
        with pytest.raises(ConnectionError, match="driver went away"):
            for slot in batches:
                seqs.append(slot.seq)
                ids += list(slot.ids)
    assert sorted(seqs) == list(range(5))  # both shards whole, the slow batch included
    assert sorted(ids) == [f"img-{i:06d}" for i in range(20)]


@pytest.mark.parametrize("fails", ["opening", "after its first batch"])
def test_a_shard_that_cannot_be_read_comes_after_every_row_before_it_once(data, monkeypatch, fails):
    """The rows carried from the shard before (2 of them, waiting to fill a batch) go once: alone
    when the next shard cannot be opened, inside its first batch when it fails after that."""
    from scoring import pipeline
    from scoring.errors import DatasetError

    _, dataset, plan = data
    good, next_shard = dataset.shards(10)[:2]
    if fails == "opening":
        next_shard = Shard(next_shard.index, next_shard.file + ".gone", next_shard.row_groups,
                           next_shard.first_row, next_shard.num_rows)
    else:
        real = pipeline.read_shard

        def failing_after_one(dataset, shard, batch_rows, first_rows=None, **kwargs):
            batches = real(dataset, shard, batch_rows, first_rows, **kwargs)
            yield next(batches)
            if shard.index == next_shard.index:
                raise DatasetError(f"cannot read row groups of {shard.file}: the disk went away")
            yield from batches

        monkeypatch.setattr(pipeline, "read_shard", failing_after_one)
    runner = CpuRunner(engine.load(plan), 4, PREPROCESS)
    ids = []
    with CpuDecoder(PREPROCESS) as decoder, \
            Prefetcher(dataset, iter([good, next_shard]), decoder, runner.make_ring(2), batch_rows=4) as batches:
        with pytest.raises(DatasetError):
            for slot in batches:
                ids += list(slot.ids)
    expected = 10 if fails == "opening" else 12  # the first shard; then its carry filled with 2 rows
    assert ids == [f"img-{i:06d}" for i in range(expected)]  # each once, in order


def test_the_cpu_runner_takes_rows_in_the_jobs_layout_only(data):
    _, _, plan = data
    runner = CpuRunner(engine.load(plan), 4, PREPROCESS)
    assert runner.ring_preprocess is PREPROCESS
    assert runner.make_ring(2, layout="NCHW").buffers[0].shape == (4,) + PREPROCESS.output_shape
    with pytest.raises(PipelineError, match="takes NCHW rows, not NHWC"):
        runner.make_ring(2, layout="NHWC")


class _RoutingDecoder(CpuDecoder):
    """CpuDecoder with GpuDecoder's route() protocol: records where routes are made and which
    route each batch is decoded with (a failing route for one batch included)."""

    def __init__(self, preprocess):
        super().__init__(preprocess)
        self.routed_on, self.used = set(), []

    def route(self, items):
        self.routed_on.add(threading.current_thread().name)
        if len(items) == 2:
            raise RuntimeError("this batch cannot be routed ahead")
        return ("route", len(items))

    def decode_into(self, items, out, route=None):
        self.used.append((len(items), route))
        return super().decode_into(items, out)


def test_decoders_with_a_route_get_it_made_on_the_reader_thread(data):
    _, dataset, plan = data
    runner = CpuRunner(engine.load(plan), 4, PREPROCESS)
    decoder = _RoutingDecoder(PREPROCESS)
    with decoder, Prefetcher(dataset, iter(dataset.shards(10)), decoder, runner.make_ring(2), batch_rows=4) as batches:
        ids = [i for slot in batches for i in slot.ids]
    assert ids == [f"img-{i:06d}" for i in range(50)]
    assert threading.current_thread().name not in decoder.routed_on and len(decoder.routed_on) == 1
    assert sorted(set(decoder.used)) == [(2, None), (4, ("route", 4))]  # a failed route: the decoder routes


def test_closing_early_stops_every_thread(data):
    _, dataset, plan = data
    runner = CpuRunner(engine.load(plan), 4, PREPROCESS)
    with CpuDecoder(PREPROCESS) as one, CpuDecoder(PREPROCESS) as two:
        batches = Prefetcher(dataset, iter(dataset.shards(10)), [one, two], runner.make_ring(3), batch_rows=4)
        first = next(iter(batches))
        assert first.rows == 4
        batches.close()
        assert not any(t.is_alive() for t in batches._threads)


def test_prefetcher_hands_over_a_failure_of_the_shard_source(data):
    _, dataset, plan = data

    def shards():
        yield dataset.shards(10)[0]
        raise ConnectionError("the driver went away")

    runner = CpuRunner(engine.load(plan), 4, PREPROCESS)
    with CpuDecoder(PREPROCESS) as decoder, \
            Prefetcher(dataset, shards(), decoder, runner.make_ring(2), batch_rows=4) as batches:
        got = []
        with pytest.raises(ConnectionError, match="driver went away"):
            for slot in batches:
                got.append(slot.rows)
    assert got == [4, 4, 2]  # the first shard came through whole before the error


def test_worker_asks_for_the_next_shard_before_the_current_one_is_done(data, tmp_path):
    root, dataset, plan = data
    job = parse_job({"model": {"plan": str(plan)}, "data": {"source": str(root / "images"), "shard_rows": 10},
                     "preprocess": {"resize_shorter": 36, "crop": CROP},
                     "output": {"dir": str(tmp_path / "out"), "top_k": 3},
                     "run": {"batch": 4, "device": "cpu", "decode_threads": 1}}, base_dir=tmp_path)
    events, threads = [], set()

    def feed():
        for shard in dataset.shards(10):
            threads.add(threading.current_thread().name)
            events.append(("asked", shard.key))
            yield shard

    def on_shard(event, shard, info):
        assert threading.current_thread() is threading.main_thread()
        events.append((event, shard.key))

    metrics = score_shards(job, plan, feed(), 0, dataset=dataset, on_shard=on_shard)
    assert threads and threading.main_thread().name not in threads
    # read-ahead: shard 1 is asked for before shard 0 is recorded
    assert events.index(("asked", "part-00001")) < events.index(("done", "part-00000"))
    done = [key for event, key in events if event == "done"]
    assert done == [f"part-{i:05d}" for i in range(5)]
    assert metrics.images == 50 and metrics.errors == 2
    table = read_predictions(tmp_path / "out")
    assert sorted(table.column("id").to_pylist()) == [f"img-{i:06d}" for i in range(50)]
    assert Manifest(tmp_path / "out").verify().ok
    # each of the loop's threads noted its CPU time: the main loop, the reader, the one decoder, the
    # part files' thread, and the CPU runner's engine thread, which ran the model
    assert set(metrics.thread_cpu_s) == {"main", "read", "decode-0", "parts", "engine"}
    assert metrics.thread_cpu_s["parts"] > 0
    assert all(0 <= s <= metrics.cpu_s for s in metrics.thread_cpu_s.values())
    assert metrics.thread_cpu_s["engine"] > 0


def test_the_worker_writes_rows_in_read_order_when_batches_arrive_out_of_it(data, tmp_path, monkeypatch):
    """Two decoders, one slow on its first batch: the engine gets later batches first, and every
    part file still holds its shard's rows in the dataset's order, each shard recorded in turn."""
    import pyarrow.parquet as pq

    from scoring import worker

    root, dataset, plan = data
    job = parse_job({"model": {"plan": str(plan)}, "data": {"source": str(root / "images"), "shard_rows": 10},
                     "preprocess": {"resize_shorter": 36, "crop": CROP}, "output": {"dir": str(tmp_path / "out")},
                     "run": {"batch": 4, "device": "cpu", "decode_threads": 1}}, base_dir=tmp_path)
    submitted = []

    def two_decoders(job, decode, threads, runner):
        submit = runner.submit
        runner.submit = lambda slot: submitted.append(slot.seq) or submit(slot)
        return [_SlowFirstCall(runner.ring_preprocess), CpuDecoder(runner.ring_preprocess)], runner.make_ring(3)

    monkeypatch.setattr(worker, "_thread_decoders", two_decoders)
    done = []
    metrics = score_shards(job, plan, iter(dataset.shards(10)), 0, dataset=dataset,
                           on_shard=lambda event, shard, info: done.append((event, shard.key, info.get("rows"))))
    assert sorted(submitted) == list(range(13)) and submitted != sorted(submitted)
    assert metrics.images == 50 and metrics.errors == 2
    keys = [f"part-{i:05d}" for i in range(5)]
    assert [d for d in done if d[0] == "done"] == [("done", key, 10) for key in keys]
    for k, key in enumerate(keys):
        ids = pq.read_table(tmp_path / "out" / "parts" / f"{key}.parquet").column("id").to_pylist()
        assert ids == [f"img-{i:06d}" for i in range(10 * k, 10 * k + 10)]
    assert Manifest(tmp_path / "out").verify().ok


def test_a_shard_source_that_waits_for_each_shard_to_be_recorded_is_fed(data, tmp_path, monkeypatch):
    """Ray's actor hands out the next shard only once the last one is recorded: the worker must
    record a shard whose part file is closed (on the closing thread) while it has nothing else
    to do. Part files are closed off the calling thread and recorded on it, in order."""
    from scoring import outputs

    root, dataset, plan = data
    job = parse_job({"model": {"plan": str(plan)}, "data": {"source": str(root / "images"), "shard_rows": 10},
                     "preprocess": {"resize_shorter": 36, "crop": CROP}, "output": {"dir": str(tmp_path / "out")},
                     "run": {"batch": 4, "device": "cpu", "decode_threads": 1}}, base_dir=tmp_path)
    recorded, closed_on = threading.Event(), set()
    close = outputs.PartWriter.close

    def slow_close(self):  # a slow disk: the calling thread would wait here
        closed_on.add(threading.current_thread().name)
        time.sleep(0.05)
        return close(self)

    monkeypatch.setattr(outputs.PartWriter, "close", slow_close)

    def one_shard_at_a_time():
        for shard in dataset.shards(10):
            yield shard
            assert recorded.wait(timeout=30), f"{shard.key} was never recorded"
            recorded.clear()

    done = []

    def on_shard(event, shard, info):
        assert threading.current_thread() is threading.main_thread()
        if event == "done":
            done.append(shard.key)
            recorded.set()

    metrics = score_shards(job, plan, one_shard_at_a_time(), 0, dataset=dataset, on_shard=on_shard)
    assert done == [f"part-{i:05d}" for i in range(5)] and metrics.images == 50
    assert closed_on and threading.main_thread().name not in closed_on
    assert metrics.stages["write"] >= 5 * 0.05  # the closes' seconds count as writing
    assert Manifest(tmp_path / "out").verify().ok


def test_the_worker_watches_its_loops_cpus_and_reports_those_it_left(data, tmp_path, monkeypatch):
    """Wiring of scoring.slow_cpus into a worker: its reader, decoder and main loop note every row,
    and the CPUs left are in its Metrics. The operating system's side (which CPUs, affinity, the
    clocks) is a stand-in: this machine may have too few CPUs to watch."""
    from scoring import worker
    from scoring.slow_cpus import SlowCpu, SlowCpus

    root, dataset, plan = data
    job = parse_job({"model": {"plan": str(plan)}, "data": {"source": str(root / "images"), "shard_rows": 10},
                     "preprocess": {"resize_shorter": 36, "crop": CROP}, "output": {"dir": str(tmp_path / "out")},
                     "run": {"batch": 4, "device": "cpu", "decode_threads": 1, "avoid_slow_cpus": "on"}},
                    base_dir=tmp_path)
    cpus = SlowCpus(set(range(8)), pin_thread=lambda c: None, pin_process=lambda c: None, where=lambda: 3)
    cpus.mark(SlowCpu(6, "read", 40.0, 3, 20.0))
    monkeypatch.setattr(worker.SlowCpus, "for_this_process", classmethod(lambda cls: cpus))
    monkeypatch.delenv("BATCHSCORE_AVOID_SLOW_CPUS", raising=False)
    metrics = score_shards(job, plan, iter(dataset.shards(10)), 0, dataset=dataset)
    assert {w.name: w.rows for w in cpus.watches} == {"read": 50, "decode-0": 50, "main": 50}
    assert metrics.slow_cpus == [SlowCpu(6, "read", 40.0, 3, 20.0).as_dict()]
    cpus.watches.clear()
    job.run.avoid_slow_cpus = "auto"  # a CPU worker: not watched unless asked
    assert score_shards(job, plan, iter([]), 0, dataset=dataset).slow_cpus == [] and not cpus.watches


def test_a_failure_mid_job_leaves_no_partial_part_behind(data, tmp_path):
    root, dataset, plan = data
    job = parse_job({"model": {"plan": str(plan)}, "data": {"source": str(root / "images"), "shard_rows": 10},
                     "preprocess": {"resize_shorter": 36, "crop": CROP},
                     "output": {"dir": str(tmp_path / "out")},
                     "run": {"batch": 4, "device": "cpu", "decode_threads": 1}}, base_dir=tmp_path)
    shards = dataset.shards(10)

    def feed():
        yield from shards[:2]
        raise RuntimeError("lost the driver")

    with pytest.raises(RuntimeError, match="lost the driver"):
        score_shards(job, plan, feed(), 0, dataset=dataset)
    out = tmp_path / "out"
    recorded = Manifest(out).done()
    assert recorded <= {"part-00000", "part-00001"}
    parts = sorted(p.name for p in (out / "parts").iterdir())
    assert parts == sorted(f"{k}.parquet" for k in recorded)  # nothing half-written, no temp files shown
    rerun = score_shards(job, plan, iter(shards), 0, dataset=dataset)
    assert rerun.images == 50 - 10 * len(recorded)
    assert sorted(read_predictions(out).column("id").to_pylist()) == [f"img-{i:06d}" for i in range(50)]


def _run_settings(**run):
    return parse_job({"model": {"plan": "m.plan"}, "data": {"source": "images/"}, "run": run}, check_files=False)


def test_gpu_decoder_settings_come_from_the_job_then_the_environment(monkeypatch):
    from scoring.errors import ScoringError
    from scoring.worker import gpu_decoders, nvimgcodec_backends

    monkeypatch.delenv("BATCHSCORE_GPU_DECODERS", raising=False)
    monkeypatch.delenv("BATCHSCORE_NVIMGCODEC_BACKENDS", raising=False)
    auto = _run_settings()
    assert gpu_decoders(auto) == 3 and nvimgcodec_backends(auto) == "all"
    monkeypatch.setenv("BATCHSCORE_GPU_DECODERS", "2")
    monkeypatch.setenv("BATCHSCORE_NVIMGCODEC_BACKENDS", "hw")
    assert gpu_decoders(auto) == 2 and nvimgcodec_backends(auto) == "hw"  # "auto" takes the environment's
    given = _run_settings(gpu_decoders=1, gpu_decode_backends="all")
    assert gpu_decoders(given) == 1 and nvimgcodec_backends(given) == "all"  # the job's own win
    from scoring.worker import jpeg_hardware

    assert jpeg_hardware(auto) is None and jpeg_hardware(_run_settings(jpeg_hardware="off")) is False
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("BATCHSCORE_GPU_DECODERS", bad)
        with pytest.raises(ScoringError, match="BATCHSCORE_GPU_DECODERS must be a positive integer"):
            gpu_decoders(auto)


def test_avoid_slow_cpus_comes_from_the_job_then_the_environment(monkeypatch):
    from scoring.errors import ScoringError
    from scoring.worker import avoid_slow_cpus

    monkeypatch.delenv("BATCHSCORE_AVOID_SLOW_CPUS", raising=False)
    auto = _run_settings()
    assert avoid_slow_cpus(auto, on_gpu=True) and not avoid_slow_cpus(auto, on_gpu=False)  # GPU workers only
    monkeypatch.setenv("BATCHSCORE_AVOID_SLOW_CPUS", "0")
    assert not avoid_slow_cpus(auto, on_gpu=True)
    assert avoid_slow_cpus(_run_settings(avoid_slow_cpus="on"), on_gpu=False)  # the job's own wins
    monkeypatch.setenv("BATCHSCORE_AVOID_SLOW_CPUS", "1")
    assert avoid_slow_cpus(auto, on_gpu=False)
    assert not avoid_slow_cpus(_run_settings(avoid_slow_cpus="off"), on_gpu=True)
    monkeypatch.setenv("BATCHSCORE_AVOID_SLOW_CPUS", "yes")
    with pytest.raises(ScoringError, match="BATCHSCORE_AVOID_SLOW_CPUS must be 1 or 0, got 'yes'"):
        avoid_slow_cpus(auto, on_gpu=True)


def test_the_gil_switch_interval_is_set_for_the_block_and_restored():
    import sys

    from scoring.worker import gil_switch_interval

    before = sys.getswitchinterval()
    with gil_switch_interval(0.0005):
        assert sys.getswitchinterval() == 0.0005
    assert sys.getswitchinterval() == before
    with pytest.raises(RuntimeError), gil_switch_interval(0.001):
        raise RuntimeError("the job failed")
    assert sys.getswitchinterval() == before
