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
    assert all(start <= end for start, end in each)
    assert probe.SECONDS["double"] == pytest.approx(sum(probe._seconds(each)))


def test_decode_call_spread(monkeypatch):
    monkeypatch.setattr(probe, "WAITS", [])
    durations = [0.010] * 98 + [0.050, 0.100]
    monkeypatch.setitem(probe.INTERVALS, "call", [(float(i), i + seconds) for i, seconds in enumerate(durations)])
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


def test_collections_are_counted_and_matched_to_the_gaps_they_fell_before(monkeypatch):
    """A gap of over 1 ms counts as "with collection" when a collection overlapped the calling
    thread's way from the previous submit's return to this one's entry."""
    import gc

    monkeypatch.setattr(probe, "COLLECTIONS", [])
    monkeypatch.setattr(probe, "GAPS", [0.2, 5.0, 3.0])
    # (entered, returned, seq): batch 2 was late with a collection on its way, batch 3 without one
    monkeypatch.setattr(probe, "SUBMITS", [(0.0, 0.010, 0), (0.011, 0.020, 1), (0.030, 0.040, 2), (0.060, 0.070, 3)])
    callbacks = list(gc.callbacks)
    try:
        probe._watch_collections()
        gc.collect()
    finally:
        gc.callbacks[:] = callbacks
    assert len(probe.COLLECTIONS) == 1 and probe.COLLECTIONS[0][2] == 2  # gc.collect() is a full one
    probe.COLLECTIONS[:] = [(0.025, 4.0, 2)]  # 25-29 ms: on the way from batch 1's return to batch 2's entry
    summary = probe._collection_summary()
    assert summary["gen2"] == {"count": 1, "total_ms": 4.0, "max_ms": 4.0}
    assert summary["gen0"]["count"] == 0
    assert summary["gaps_over_1ms_with_collection"] == {"gaps": 1, "gap_ms": 5.0, "collection_ms": 4.0}
    assert summary["gaps_over_1ms_without"] == {"gaps": 1, "gap_ms": 3.0}


def test_idle_gaps_are_split_between_the_decoders_and_the_calling_thread():
    """Gap 1: no batch was ready when the GPU went idle; the next came 2 ms later and the calling
    thread took 1 ms more. Gap 2: a batch had been ready for 5 ms; the calling thread entered
    submit 1 ms into the gap and its first event landed 2 ms after that. Gap 3 is under 1 ms."""
    from idle_causes import idle_causes

    ms = 1e-3
    batches = [(0, 10 * ms), (10 * ms, 20 * ms),  # warm-up batches: not counted
               (20 * ms, 30 * ms), (33 * ms, 43 * ms), (46 * ms, 56 * ms), (56.5 * ms, 66 * ms)]
    handed = [0, 0, 0, 32 * ms, 38 * ms, 50 * ms]
    entered = [0, 9 * ms, 19 * ms, 32.5 * ms, 44 * ms, 55 * ms]
    intervals = {"call": [(25 * ms, 32 * ms), (28 * ms, 40 * ms)], "read_wait": [(29 * ms, 31 * ms)],
                 "free_wait": []}
    causes = idle_causes(batches, handed, entered, intervals, steady_after=1)
    assert causes["gaps"] == 2 and causes["gaps_ms"] == 6.0
    assert causes["no_batch_ready_gaps"] == 1 and causes["batch_ready_gaps"] == 1
    assert causes["decoders_behind_ms"] == 2.0
    assert causes["calling_thread_ms"] == 4.0  # 1 after gap 1's hand-over, all 3 of gap 2
    assert causes["calling_thread_before_submit_ms"] == 1.0 and causes["calling_thread_in_submit_ms"] == 2.0
    assert causes["decoder_threads_when_no_batch_was_ready"] == {"call 2, read_wait 1, free_wait 0": 1}


def test_the_canary_notes_its_late_wakes_and_the_calling_threads_time_is_summed(monkeypatch):
    import threading
    import time

    monkeypatch.setattr(probe, "CANARY", [])
    monkeypatch.setattr(probe, "HOGS", [])
    monkeypatch.setattr(probe, "BATCH_TIMES", [])
    stop = threading.Event()
    thread = probe._start_canary(stop)
    time.sleep(0.05)
    end = time.perf_counter() + 0.03
    while time.perf_counter() < end:  # a hog: pure Python, holding the GIL in between switches
        sum(range(1000))
    time.sleep(0.02)
    stop.set()
    thread.join()
    summary = probe._canary_summary()
    assert summary["wakes"] >= 5 and summary["p50"] >= 0 and summary["max"] >= summary["p99"]
    assert summary["over_1ms"] <= summary["wakes"]
    # with a 5 ms switch interval (the default) the canary waits for this thread now and then
    assert all(set(h) == {"where", "wakes", "cpu_ms"} for h in summary["holders"])
    monkeypatch.setattr(probe, "GAPS", [0.5, 4.0])
    monkeypatch.setattr(probe, "SUBMITS", [(0.0, 0.010, 0), (0.011, 0.020, 1), (0.032, 0.040, 2)])
    monkeypatch.setattr(probe, "SUBMIT_CPU", [(0.0, 0.001), (0.002, 0.003), (0.005, 0.006)])
    before = probe._ready_gap_cpu()  # only the second gap counts: 12 ms of wall, 2 ms of CPU
    assert before["gaps_over_1ms"] == 1 and before["wall_ms"] == 12.0 and before["cpu_ms"] == 2.0
    assert before["every_launch_mean_wall_ms"] == 6.5 and before["every_launch_mean_cpu_ms"] == 1.5


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (640, 480), (100, 80), (224, 224), (1000, 300), (33, 2000)])
def test_a_crop_window_holds_every_pixel_the_kernels_read(size):
    """Noise outside the window leaves the reference row (the kernels' math) unchanged, and the
    window's edges are on 16-pixel blocks or the image's edges."""
    import numpy as np

    from crop_window import ALIGN, source_windows
    from scoring.decode import Preprocess
    from scoring.resize_kernel import reference_resize_crop

    width, height = size
    p = Preprocess()
    rng = np.random.default_rng(width)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    x0, y0, w, h = (int(v[0]) for v in source_windows([width], [height], p))
    assert 0 <= x0 < x0 + w <= width and 0 <= y0 < y0 + h <= height
    assert x0 % ALIGN == 0 and y0 % ALIGN == 0
    assert (x0 + w) % ALIGN == 0 or x0 + w == width
    noisy = rng.integers(0, 256, image.shape, dtype=np.uint8)
    noisy[y0:y0 + h, x0:x0 + w] = image[y0:y0 + h, x0:x0 + w]
    np.testing.assert_array_equal(reference_resize_crop(noisy, p), reference_resize_crop(image, p))
    # and the window is needed: noise one pixel inside it (past the margin, on the read rows) shows
    if w < width:
        moved = image.copy()
        moved[y0 + h // 2, x0 + w // 2] ^= 0xFF
        assert not np.array_equal(reference_resize_crop(moved, p), reference_resize_crop(image, p))


def test_the_json_alone_reaches_stdout_whatever_else_prints(tmp_path):
    """Python prints and native writes to fd 1 after the switch land on stderr; the JSON on stdout
    parses whole."""
    import json
    import subprocess

    here = Path(__file__).resolve().parents[1] / "benchmarks" / "device"
    script = ("import os, sys, json; sys.path.insert(0, sys.argv[1]); import worker_phase_probe as p\n"
              "out = p._stdout_for_json_alone()\n"
              "print('a trial says hello'); os.write(1, b'native banner\\n')\n"
              "print(json.dumps({'images': 3}), file=out, flush=True)\n")
    done = subprocess.run([sys.executable, "-c", script, str(here)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"images": 3}
    assert "a trial says hello" in done.stderr and "native banner" in done.stderr


def test_each_wrapper_takes_what_the_method_it_wraps_takes():
    # The probe wraps private methods with wrappers of fixed signatures; session 24 gave
    # GpuRunner._account a `rows` and the probe's wrapper failed on the device's first batch.
    # On the CPU, without the GPU run, the signatures are what can be compared.
    import inspect

    from scoring.gpu_runner import GpuRunner
    from scoring.report import Metrics

    wrapped = [(probe._noting_gaps, GpuRunner._account), (probe._noting_warm_up, GpuRunner._warm_up),
               (probe._noting_submits, GpuRunner.submit), (probe._noting_hand_over, pipeline.Prefetcher._hand_over),
               (probe._noting_ticks, Metrics.tick), (probe._noting_waits, pipeline.Prefetcher._wait_for_next)]
    for make_wrapper, method in wrapped:
        names = [p.name for p in inspect.signature(method).parameters.values()]
        assert [p.name for p in inspect.signature(make_wrapper(method)).parameters.values()] == names, method
    poll = [p.name for p in inspect.signature(pipeline.Prefetcher._poll).parameters.values()]
    assert [p.name for p in inspect.signature(probe._timed_poll(pipeline)).parameters.values()] == poll
