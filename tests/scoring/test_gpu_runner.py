"""GpuRunner's ring layout: the decoders write rows in the plan input's memory layout, so the copy
into the input binding is straight. The choice is a pure function of the binding's strides (checked
here on numpy views, no GPU); the GPU test feeds NHWC rows to an FP16 plan and compares the scores
with the engine's own run on the same rows in NCHW."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.decode import Preprocess
from scoring.gpu_runner import _dense, ring_preprocess

CROP = 8


def _channels_last(n=2, c=3, h=CROP, w=CROP, dtype=np.float16):
    """An NCHW-shaped view of NHWC memory, as an FP16 plan binds its image input."""
    return np.empty((n, h, w, c), dtype).transpose(0, 3, 1, 2)


def test_an_nchw_job_writes_nhwc_rows_for_a_channels_last_input():
    pre = Preprocess(resize_shorter=10, crop=CROP, dtype="float16")
    ring = ring_preprocess(pre, _channels_last())
    assert ring.layout == "NHWC" and ring.output_shape == (CROP, CROP, 3)
    assert (ring.crop, ring.mean, ring.std, ring.dtype) == (pre.crop, pre.mean, pre.std, pre.dtype)


@pytest.mark.parametrize("binding, layout", [
    (np.empty((2, 3, CROP, CROP), np.float32), "NCHW"),      # an NCHW plan (FP32 without TF32)
    (np.empty((2, CROP, CROP, 3), np.float16), "NHWC"),      # the job asks NHWC and the plan takes it
    (_channels_last(c=1), "NCHW"),                           # one channel: both layouts are the same memory
])
def test_the_job_layout_stays_where_the_binding_already_has_it(binding, layout):
    pre = Preprocess(resize_shorter=10, crop=CROP, layout=layout, dtype="float16")
    assert ring_preprocess(pre, binding) is pre


@pytest.mark.parametrize("array, dense", [
    (np.empty((2, 3, 4, 5)), True),
    (_channels_last(), True),
    (np.empty((2, 3, 4, 6))[..., :5], False),   # rows padded
    (np.empty((4, 3, 4, 5))[::2], False),       # every other image
    (np.empty((2, 1, 4, 5))[:, :, ::-1], False),  # negative strides
])
def test_a_straight_copy_needs_memory_without_gaps(array, dense):
    assert _dense(array) is dense


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32"])  # a straight copy; a converting one
def test_nhwc_slots_give_an_fp16_plan_the_scores_of_nchw_rows(tmp_path, dtype):
    import cupy as cp

    import engine
    from scoring.gpu_runner import GpuRunner
    from scoring.pipeline import Slot
    from tests.scoring.test_run_local import CROP as TINY_CROP, tiny_network

    config = engine.BuildConfig(max_batch=16, device="cuda", precision="fp16")
    plan = engine.build(tiny_network().graph(), config).save(tmp_path / "tiny_fp16.plan")
    eng = engine.load(plan)
    runner = GpuRunner(eng, 16, Preprocess(resize_shorter=TINY_CROP, crop=TINY_CROP, dtype=dtype))
    assert runner.ring_preprocess.layout == "NHWC"
    ring = runner.make_ring(2, on_device=True)
    assert ring.buffers[0].shape == (16, TINY_CROP, TINY_CROP, 3)
    rows = np.random.default_rng(3).standard_normal((16, 3, TINY_CROP, TINY_CROP)).astype(np.float16).astype(dtype)
    ring.buffers[0][...] = cp.asarray(np.ascontiguousarray(rows.transpose(0, 2, 3, 1)))
    got = runner.submit(Slot(0, ring.buffers[0], np.arange(16), [None] * 16, 16)).result()
    assert got.dtype == runner.outputs[0].dtype  # as the plan gives them: float16 is ranked as it is
    want = eng.create_context().run({eng.inputs[0].name: rows.astype(np.float32)})[eng.outputs[0].name]
    np.testing.assert_allclose(got, np.asarray(want, np.float32).reshape(16, -1), rtol=1e-3, atol=1e-3)
    runner.close()


@pytest.mark.gpu
def test_the_engine_stream_takes_its_priority_from_stream_priority(tmp_path, monkeypatch):
    import cupy as cp

    import engine
    from scoring.gpu_runner import GpuRunner
    from tests.scoring.test_run_local import CROP as TINY_CROP, tiny_network

    plan = engine.build(tiny_network().graph(), engine.BuildConfig(max_batch=4, device="cuda", precision="fp16"))
    eng = engine.load(plan.save(tmp_path / "tiny_fp16.plan"))
    least = cp.cuda.Stream(non_blocking=True).priority
    priorities = {}
    for setting in ("", "-1000"):  # the default (the least), then the greatest
        monkeypatch.setenv("BATCHSCORE_ENGINE_STREAM_PRIORITY", setting)
        runner = GpuRunner(eng, 4, Preprocess(resize_shorter=TINY_CROP, crop=TINY_CROP))
        priorities[setting] = runner.stream.priority
        runner.close()
    assert priorities[""] == least and priorities["-1000"] < least


@pytest.mark.parametrize("value, wanted", [(None, True), ("1", True), ("0", False), ("off", False), (" no ", False)])
def test_slots_are_read_in_place_unless_the_environment_says_copy(value, wanted):
    from scoring.gpu_runner import slot_input_wanted

    assert slot_input_wanted({} if value is None else {"BATCHSCORE_SLOT_INPUT": value}) is wanted


@pytest.mark.gpu
@pytest.mark.parametrize("setting", ["1", "0"])
def test_batches_back_to_back_score_their_own_rows_read_in_place_or_copied(tmp_path, monkeypatch, setting):
    """Each batch's scores are those of its own rows, through a ring of 2 device slots that the
    decoders would refill as soon as submit returns; read in place (the default) or copied."""
    import cupy as cp

    import engine
    from scoring.gpu_runner import GpuRunner
    from scoring.pipeline import Slot
    from tests.scoring.test_run_local import CROP as TINY_CROP, tiny_network

    monkeypatch.setenv("BATCHSCORE_SLOT_INPUT", setting)
    plan = engine.build(tiny_network().graph(), engine.BuildConfig(max_batch=16, device="cuda", precision="fp16"))
    eng = engine.load(plan.save(tmp_path / "tiny_fp16.plan"))
    runner = GpuRunner(eng, 16, Preprocess(resize_shorter=TINY_CROP, crop=TINY_CROP, dtype="float16"))
    ring = runner.make_ring(2, on_device=True)
    assert runner.slot_input == ("in place" if setting == "1" else "copied: BATCHSCORE_SLOT_INPUT=0")
    rng = np.random.default_rng(7)
    batches = [rng.standard_normal((16, 3, TINY_CROP, TINY_CROP)).astype(np.float16) for _ in range(8)]
    got, pending = [], None
    for i, rows in enumerate(batches):  # as the worker does: submit batch i, then collect batch i-1
        ring.buffers[i % 2][...] = cp.asarray(np.ascontiguousarray(rows.transpose(0, 2, 3, 1)))
        handle = runner.submit(Slot(i % 2, ring.buffers[i % 2], np.arange(16), [None] * 16, 16))
        if pending is not None:
            got.append(pending.result())
        pending = handle
    got.append(pending.result())
    runner.close()
    assert (runner.stages["input"] == 0.0) is (setting == "1")  # no copy into the binding in place
    reference = eng.create_context()
    for rows, scores in zip(batches, got):
        want = reference.run({eng.inputs[0].name: rows.astype(np.float32)})[eng.outputs[0].name]
        np.testing.assert_allclose(scores, np.asarray(want, np.float32).reshape(16, -1), rtol=1e-3, atol=1e-3)


def test_the_runner_keeps_running_totals_and_leaves_the_first_batches_out_of_busy():
    """_account on CUDA event times (a stand-in for cupy's clock: events are ms stamps): rows done,
    busy and idle ms after each batch, the first STEADY_AFTER batches' busy and idle left out."""
    from types import SimpleNamespace

    from scoring.gpu_runner import STEADY_AFTER, GpuRunner

    runner = GpuRunner.__new__(GpuRunner)  # no GPU: only the bookkeeping runs
    runner.cp = SimpleNamespace(cuda=SimpleNamespace(get_elapsed_time=lambda a, b: b - a))
    runner.stages = {"h2d": 0.0, "input": 0.0, "compute": 0.0}
    runner._previous_end, runner._timeline = None, []
    start = 0.0
    for batch in range(STEADY_AFTER + 3):  # 8 ms a batch, 1 ms after the previous one ended
        runner._account({"start": start, "graph": start + 0.5, "end": start + 8.0}, 256)
        start += 9.0
    assert [entry[0] for entry in runner._timeline] == [256 * (i + 1) for i in range(STEADY_AFTER + 3)]
    assert runner._timeline[STEADY_AFTER - 1][1:] == (0.0, 0.0)
    assert runner._timeline[-1][1:] == (3 * 8.0, 3 * 1.0)  # the last three batches counted
    assert runner.busy_fraction == pytest.approx(8.0 / 9.0)  # a short run: measured whole
    assert runner.stages["input"] == pytest.approx((STEADY_AFTER + 3) * 0.5e-3)
