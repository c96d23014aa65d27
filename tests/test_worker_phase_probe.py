"""benchmarks/device/worker_phase_probe.py: its wait notes and its options (the GPU
part runs on the device). A real Parquet dataset, two CPU decoders and the tiny net of
test_run_local."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import engine
from scoring import pipeline
from scoring.dataset import open_dataset
from scoring.decode import CpuDecoder
from scoring.make_data import make_dataset
from scoring.runner import CpuRunner
from tests.scoring.test_pipeline import PREPROCESS
from tests.scoring.test_run_local import tiny_network

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "device"))

import worker_phase_probe as probe  # noqa: E402


@pytest.mark.parametrize("order", ["read", "decoded"])
def test_the_noted_waits_leave_the_hand_over_as_it_was(tmp_path, monkeypatch, order):
    make_dataset(tmp_path / "images", 50, row_groups=10, image_size=(40, 48), seed=5, workers=1)
    plan = engine.build(tiny_network().graph(), engine.BuildConfig(max_batch=16)).save(tmp_path / "tiny.plan")
    dataset = open_dataset(tmp_path / "images")
    monkeypatch.setattr(pipeline.Prefetcher, "_wait_for_next", probe._noting_waits(pipeline.Prefetcher._wait_for_next))
    monkeypatch.setattr(probe, "WAITS", [])
    runner = CpuRunner(engine.load(plan), 4, PREPROCESS)
    with CpuDecoder(PREPROCESS) as one, CpuDecoder(PREPROCESS) as two, \
            pipeline.Prefetcher(dataset, iter(dataset.shards(10)), [one, two], runner.make_ring(3),
                                batch_rows=4, order=order) as batches:
        slots = [(slot.seq, list(slot.ids)) for slot in batches]
    if order == "read":
        assert [seq for seq, _ in slots] == list(range(13))
    assert [i for _, ids in sorted(slots) for i in ids] == [f"img-{i:06d}" for i in range(50)]
    assert probe.WAITS, "the first batch at least is waited for"
    assert all(seconds >= 0 and 0 <= at_start <= 3 and 0 <= at_end <= 3 for seconds, at_start, at_end in probe.WAITS)
    summary = probe._wait_summary()
    assert summary["caller_waits"] == len(probe.WAITS)
    assert summary["steady_wait_s"] <= summary["caller_wait_s"]
    assert summary["overtaken_wait_s"] <= summary["steady_wait_s"] + 1e-9


def test_timed_adds_up_a_phase_and_can_keep_each_call(monkeypatch):
    monkeypatch.setattr(probe, "SECONDS", __import__("collections").defaultdict(float))
    monkeypatch.setattr(probe, "CALLS", __import__("collections").defaultdict(int))
    each: list = []
    double = probe.timed("double", lambda x: 2 * x, each)
    assert [double(1), double(2)] == [2, 4]
    assert probe.CALLS["double"] == 2 and len(each) == 2
    assert probe.SECONDS["double"] == pytest.approx(sum(each))


def test_decode_call_spread(monkeypatch):
    monkeypatch.setattr(probe, "WAITS", [])
    monkeypatch.setattr(probe, "DECODE_CALLS", [0.010] * 98 + [0.050, 0.100])
    spread = probe._wait_summary()["decode_call_ms"]
    assert spread["p50"] == pytest.approx(10.0) and spread["max"] == pytest.approx(100.0)
    assert spread["p10"] <= spread["p50"] <= spread["p90"] <= spread["p99"] <= spread["max"]


def test_an_unknown_part_to_skip_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["worker_phase_probe.py", "plan", str(tmp_path), str(tmp_path / "out"),
                                      "--skip", "resize,decoder"])
    with pytest.raises(SystemExit) as exc:
        probe.main()
    assert exc.value.code == 2
    assert "--skip: unknown ['decoder']; use resize, hardware" in capsys.readouterr().err


def test_the_gap_summary_says_how_the_idle_time_is_spread(monkeypatch):
    gaps = [9.0, 9.0, 9.0] + [0.01] * 100 + [5.0, 2.0]  # the first three are the start-up's
    monkeypatch.setattr(probe, "GAPS", gaps)
    summary = probe._gap_summary()
    assert summary["batches"] == 102 and summary["total_ms"] == pytest.approx(8.0)
    assert summary["largest_ms"][:2] == [5.0, 2.0]
    assert summary["over_1ms"] == 2 and summary["over_1ms_total_ms"] == pytest.approx(7.0)
    assert summary["share_of_largest_25"] == pytest.approx((7.0 + 0.23) / 8.0, abs=1e-3)
    assert probe._spread_ms([]) == {}
    spread = probe._spread_ms([0.001, 0.002, 0.010])
    assert spread["calls"] == 3 and spread["max"] == pytest.approx(10.0) and spread["total"] == pytest.approx(13.0)


def test_the_tick_summary_reads_the_steady_window_batch_by_batch(monkeypatch):
    from scoring.report import Metrics

    monkeypatch.setattr(probe, "TICKS", [])
    metrics = Metrics(worker=0)
    clock = [0.0]
    metrics.now = lambda: clock[0]
    tick = probe._noting_ticks(Metrics.tick)
    for k in range(20):  # 20 batches 0.1 s apart, then the end 2.1 s after the last
        clock[0] = 1.0 + 0.1 * k
        tick(metrics, 10 * (k + 1))
    clock[0] = 5.0
    metrics.finish()
    summary = probe._tick_summary(metrics)
    assert summary["first_to_last_batch_per_s"] == 100 and summary["from_batch_10_per_s"] == 100
    assert summary["last_batch_to_end_s"] == pytest.approx(5.0 - 2.9)
    assert summary["first_batches_ms"][:3] == [0.0, 100.0, 200.0]
    assert metrics.images == 200


def test_late_launches_are_split_by_whether_the_batch_was_there(monkeypatch):
    # submits: (entered, returned = the GPU began it, seq); a 10 ms graph. The first four are the
    # start-up's. Batch 5 is entered 12 ms after batch 4 began, just as it was handed over: the
    # decoders were behind; batch 6 13 ms after batch 5 began, there for 18 ms: the calling thread
    # was late.
    submits = [(0.000, 0.001, 0), (0.001, 0.011, 1), (0.011, 0.021, 2), (0.021, 0.031, 3),
               (0.031, 0.040, 4), (0.052, 0.053, 5), (0.066, 0.067, 6), (0.070, 0.076, 7)]
    monkeypatch.setattr(probe, "SUBMITS", submits)
    monkeypatch.setattr(probe, "HANDED", {5: 0.0515, 6: 0.048, 7: 0.060})
    late = probe._launch_summary(10.0)
    assert late["decoders_behind"]["launches"] == 1
    assert late["decoders_behind"]["ms_beyond_graph"] == pytest.approx(2.0)
    assert late["calling_thread"]["launches"] == 1
    assert late["calling_thread"]["ms_beyond_graph"] == pytest.approx(3.0)
