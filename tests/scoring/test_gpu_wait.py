"""scoring.gpu_wait: [run] gpu_wait resolved from the job, then the environment; on a GPU, a
blocked wait leaves the waiting thread's CPU idle and a spinning one does not, and GpuRunner
scores the same either way."""

from __future__ import annotations

import time

import numpy as np
import pytest

from scoring.errors import ScoringError
from scoring.gpu_wait import ENV, spin_wait


def test_waits_block_unless_the_job_or_the_environment_says_spin():
    assert spin_wait("auto", {}) is False
    assert spin_wait("auto", {ENV: "spin"}) is True
    assert spin_wait("auto", {ENV: " block "}) is False
    assert spin_wait("spin", {ENV: "block"}) is True  # the job's own wins
    assert spin_wait("block", {ENV: "spin"}) is False


def test_a_bad_setting_is_named():
    with pytest.raises(ScoringError, match=f"{ENV} must be block or spin, got 'yes'"):
        spin_wait("auto", {ENV: "yes"})
    with pytest.raises(ScoringError, match=r"\[run\] gpu_wait must be one of auto, block, spin, got 'sleep'"):
        spin_wait("sleep", {})


HOLD = r"""
extern "C" __global__ void hold(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) {}
}
"""


def _cpu_share_of_a_wait(spin: bool, seconds: float = 0.3) -> float:
    """The waiting thread's CPU time over the wall time of one wait for a kernel that holds the GPU
    for about `seconds`."""
    import cupy as cp

    from scoring.gpu_wait import wait_for_stream

    hold = cp.RawKernel(HOLD, "hold")
    clock_hz = cp.cuda.runtime.deviceGetAttribute(cp.cuda.runtime.cudaDevAttrClockRate, 0) * 1e3
    stream = cp.cuda.Stream(non_blocking=True)
    hold((1,), (1,), (np.int64(1e6),), stream=stream)  # compiled and loaded before the timed wait
    stream.synchronize()
    hold((1,), (1,), (np.int64(seconds * clock_hz),), stream=stream)
    wall, cpu = time.perf_counter(), time.thread_time()
    wait_for_stream(cp, stream, spin)
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    assert wall > seconds / 3, f"the kernel held the GPU only {wall:.3f} s"
    return cpu / wall


@pytest.mark.gpu
def test_a_blocked_wait_sleeps_and_a_spinning_one_burns_its_core():
    assert _cpu_share_of_a_wait(spin=False) < 0.2
    assert _cpu_share_of_a_wait(spin=True) > 0.5


@pytest.mark.gpu
def test_the_runner_scores_the_same_whether_it_blocks_or_spins(tmp_path):
    import cupy as cp

    import engine
    from scoring.decode import Preprocess
    from scoring.gpu_runner import GpuRunner
    from scoring.pipeline import Slot
    from tests.scoring.test_run_local import CROP, tiny_network

    plan = engine.build(tiny_network().graph(), engine.BuildConfig(max_batch=8, device="cuda", precision="fp16"))
    eng = engine.load(plan.save(tmp_path / "tiny_fp16.plan"))
    rows = np.random.default_rng(5).standard_normal((8, CROP, CROP, 3)).astype(np.float16)
    scores = {}
    for spin in (False, True):
        runner = GpuRunner(eng, 8, Preprocess(resize_shorter=CROP, crop=CROP, dtype="float16"), spin_wait=spin)
        ring = runner.make_ring(2, on_device=True)
        ring.buffers[0][...] = cp.asarray(rows)
        first = runner.submit(Slot(0, ring.buffers[0], np.arange(8), [None] * 8, 8))
        second = runner.submit(Slot(1, ring.buffers[0], np.arange(8), [None] * 8, 8))  # one batch in flight
        scores[spin] = (first.result(), second.result())
        runner.close()
    np.testing.assert_array_equal(scores[False][0], scores[True][0])
    np.testing.assert_array_equal(scores[False][0], scores[False][1])
