"""Scoring on the GPU: GpuRunner with pinned host slots (CPU decode) and with device slots (GPU
decode), across shards, compared with the CPU backend on the same rows."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from scoring.job import parse_job
from scoring.make_data import make_dataset
from scoring.manifest import Manifest
from scoring.outputs import read_predictions
from scoring.worker import score_shards
from tests.scoring.test_run_local import CROP, tiny_network

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_scoring")
    make_dataset(root / "images", 150, row_groups=10, image_size=((40, 90), (40, 90)), corrupt=3, seed=7,
                 workers=1)
    graph = tiny_network().graph()
    cpu = engine.build(graph, engine.BuildConfig(max_batch=16)).save(root / "cpu.plan")
    gpu = engine.build(graph, engine.BuildConfig(max_batch=16, device="cuda")).save(root / "gpu.plan")
    return root, cpu, gpu


def _job(root, plan, out, device, decode):
    return parse_job({"model": {"plan": str(plan)}, "data": {"source": str(root / "images"), "shard_rows": 30},
                      "preprocess": {"resize_shorter": 36, "crop": CROP},
                      "output": {"dir": str(out), "top_k": 3, "raw": True},
                      "run": {"batch": 16, "device": device, "decode": decode, "decode_threads": 2}},
                     base_dir=root)


def _scores(out) -> dict:
    table = read_predictions(out).to_pydict()
    return {i: (np.asarray(r, np.float32) if r is not None else None, e)
            for i, r, e in zip(table["id"], table["raw"], table["error"])}


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_gpu_scoring_matches_the_cpu_backend(work, tmp_path, decode):
    root, cpu_plan, gpu_plan = work
    job = _job(root, cpu_plan, tmp_path / "cpu", "cpu", "cpu")
    shards = score_shards(job, cpu_plan, iter(_dataset_shards(job)), 0).images
    gjob = _job(root, gpu_plan, tmp_path / "gpu", "cuda", decode)
    metrics = score_shards(gjob, gpu_plan, iter(_dataset_shards(gjob)), 0, device="cuda:0")
    assert metrics.images == shards == 150 and metrics.errors == 3
    assert Manifest(tmp_path / "gpu").verify().ok
    ref, got = _scores(tmp_path / "cpu"), _scores(tmp_path / "gpu")
    assert sorted(ref) == sorted(got)
    for key, (r, e) in ref.items():
        g, ge = got[key]
        assert (e is None) == (ge is None), (key, e, ge)
        if e is None:
            # GPU decode (nvJPEG, float resize) differs from Pillow by about a pixel level
            tol = 1e-4 if decode == "cpu" else 5e-2
            assert np.linalg.norm(g - r) <= tol * max(1.0, np.linalg.norm(r)), (key, g, r)
    assert metrics.busy_fraction is not None and 0 < metrics.busy_fraction <= 1
    assert metrics.stages["compute"] > 0
    if decode == "gpu":  # every row counted once, on some path; the corrupt ones on the CPU's
        assert sum(metrics.decoded_by.values()) == 150 and metrics.decoded_by["cpu"] >= 3
        # the engine reads the device slots in place: nothing is copied into its input
        assert metrics.slot_input == "in place" and metrics.stages["input"] == 0
    else:  # host slots, copied to the device and into the input
        assert metrics.decoded_by == {}
        assert metrics.slot_input is None and metrics.stages["input"] > 0


def _dataset_shards(job):
    from scoring.worker import open_job_dataset

    return open_job_dataset(job).shards(job.data.shard_rows)


def test_a_gpu_worker_leaves_the_cpus_that_take_the_gpus_interrupts(work, tmp_path):
    """Where this host delivers the GPU's interrupts to a few of the worker's CPUs (an H100 host:
    CPU 14), the worker names them and its threads run elsewhere; where it does not, it says
    nothing and keeps every CPU."""
    import os

    from scoring.irq_cpus import MIN_LEFT, gpu_interrupt_cpus

    root, _, gpu_plan = work
    before = set(os.sched_getaffinity(0))
    job = _job(root, gpu_plan, tmp_path / "gpu", "cuda", "gpu")
    metrics = score_shards(job, gpu_plan, iter(_dataset_shards(job)), 0, device="cuda:0")
    after = set(os.sched_getaffinity(0))
    busy = gpu_interrupt_cpus(before)
    if busy and len(before - busy) >= MIN_LEFT and len(busy) <= len(before) // 4:
        assert metrics.interrupt_cpus == f"CPU{'s' if len(busy) > 1 else ''} {', '.join(map(str, sorted(busy)))}"
        assert after == before - busy
    else:
        assert metrics.interrupt_cpus is None and after == before
    os.sched_setaffinity(0, before)  # the next tests get every CPU back
