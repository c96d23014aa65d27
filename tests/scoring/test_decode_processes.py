"""Decoders in child processes: real children, real shared buffers, compared with decoding in-process."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from scoring.dataset import open_dataset, read_shard
from scoring.decode import CpuDecoder
from scoring.decode_processes import DecodeProcessError, DecoderRecipe, ProcessDecoder, SharedBuffers
from scoring.job import JobError, parse_job
from scoring.outputs import read_predictions
from scoring.pipeline import HostRing
from scoring.worker import score_shards
from tests.scoring.test_pipeline import PREPROCESS, data  # noqa: F401  (a module-scoped fixture)
from tests.scoring.test_run_local import CROP


def _items(dataset, rows=12):
    shard = dataset.shards(50)[0]
    batch = next(read_shard(dataset, shard, rows))
    return list(batch.items)


@pytest.fixture
def shared_ring():
    """A 2-slot ring of 14 rows in memory the children can map; its files are removed afterwards."""
    shared = SharedBuffers.on_host()
    ring = HostRing(2, 14, PREPROCESS.output_shape, PREPROCESS.np_dtype, allocate=shared.allocate)
    yield shared, ring
    shared.close()


def test_two_children_split_a_batch_and_match_the_in_process_decoder(data, shared_ring):  # noqa: F811
    _, dataset, _ = data
    shared, ring = shared_ring
    items = _items(dataset) + [b"not an image", None]
    with ProcessDecoder(DecoderRecipe("cpu", PREPROCESS), processes=2) as decoder:
        decoder.attach(shared)
        assert len(set(decoder.pids)) == 2 and os.getpid() not in decoder.pids
        ring.buffers[1][...] = 7  # stale data, as a reused slot holds
        errors = decoder.decode_into(items, ring.buffers[1])
        got = np.array(ring.buffers[1])
    with CpuDecoder(PREPROCESS) as local:
        want, want_errors = local.decode(items)
    assert errors == want_errors and errors[-2] is not None and errors[-1] is not None
    np.testing.assert_array_equal(got, want)
    shared.close()
    assert all(not os.path.exists(d[1]) for d in shared.descriptors)  # the files are gone


def test_a_buffer_the_children_do_not_share_is_refused(data, shared_ring):  # noqa: F811
    _, dataset, _ = data
    shared, ring = shared_ring
    with ProcessDecoder(DecoderRecipe("cpu", PREPROCESS)) as decoder:
        with pytest.raises(RuntimeError, match="before attach"):
            decoder.decode_into(_items(dataset), ring.buffers[0])
        decoder.attach(shared)
        private = np.empty_like(ring.buffers[0])
        with pytest.raises(ValueError, match="not allocated by the SharedBuffers"):
            decoder.decode_into(_items(dataset), private)


def test_a_child_that_dies_is_named_with_its_exit_code(data, shared_ring):  # noqa: F811
    _, dataset, _ = data
    shared, ring = shared_ring
    with ProcessDecoder(DecoderRecipe("cpu", PREPROCESS), name="CPU decode process") as decoder:
        decoder.attach(shared)
        decoder.decode_into(_items(dataset), ring.buffers[0])  # it works, then it is killed
        os.kill(decoder.pids[0], signal.SIGKILL)
        with pytest.raises(DecodeProcessError, match=r"CPU decode process \(pid \d+\) died with exit code -9"):
            decoder.decode_into(_items(dataset), ring.buffers[0])


def test_a_child_that_hangs_is_killed_and_named(data, shared_ring, monkeypatch):  # noqa: F811
    import scoring.decode_processes as decode_processes

    _, dataset, _ = data
    shared, ring = shared_ring
    with ProcessDecoder(DecoderRecipe("cpu", PREPROCESS), name="CPU decode process") as decoder:
        decoder.attach(shared)
        decoder.decode_into(_items(dataset), ring.buffers[0])  # it works, then it stops answering
        child = decoder._children[0].process
        os.kill(child.pid, signal.SIGSTOP)
        monkeypatch.setattr(decode_processes, "REPLY_TIMEOUT", 1.0)
        started = time.monotonic()
        with pytest.raises(DecodeProcessError, match=r"CPU decode process \(pid \d+\) gave no reply in 1 s, so it was killed"):
            decoder.decode_into(_items(dataset), ring.buffers[0])
        assert time.monotonic() - started < 10 and child.poll() is not None
    # leaving the with block closed the decoder at once: the killed child is not waited for again


def test_a_child_that_cannot_start_its_decoder_says_why(data, shared_ring):  # noqa: F811
    _, dataset, _ = data
    shared, ring = shared_ring
    with ProcessDecoder(DecoderRecipe("cpu", PREPROCESS, threads=-1)) as decoder:
        with pytest.raises(DecodeProcessError, match="could not start its decoder: .*decode threads must be"):
            decoder.attach(shared)
            decoder.decode_into(_items(dataset), ring.buffers[0])


def test_close_ends_the_children():
    decoder = ProcessDecoder(DecoderRecipe("cpu", PREPROCESS), processes=2)
    children = [child.process for child in decoder._children]
    decoder.close()
    assert all(p.poll() is not None for p in children)
    with pytest.raises(RuntimeError, match="after close"):
        decoder.decode_into([], None)


def _job(root, plan, out, processes):
    return parse_job({"model": {"plan": str(plan)}, "data": {"source": str(root / "images"), "shard_rows": 10},
                      "preprocess": {"resize_shorter": 36, "crop": CROP},
                      "output": {"dir": str(out), "top_k": 3, "raw": True},
                      "run": {"batch": 4, "device": "cpu", "decode_threads": 2, "decode_processes": processes}},
                      base_dir=out.parent)


def test_the_worker_scores_the_same_with_decode_processes(data, tmp_path):  # noqa: F811
    root, dataset, plan = data
    results = {}
    for processes in (0, 2):
        out = tmp_path / f"out-{processes}"
        metrics = score_shards(_job(root, plan, out, processes), plan, iter(dataset.shards(10)), 0, dataset=dataset)
        assert metrics.images == 50 and metrics.errors == 2
        results[processes] = read_predictions(out).sort_by("id")
    assert results[2].column("id").to_pylist() == [f"img-{i:06d}" for i in range(50)]
    assert results[2].column("error").to_pylist() == results[0].column("error").to_pylist()
    np.testing.assert_array_equal(np.array(results[2].column("raw").to_pylist(), np.float32),
                                  np.array(results[0].column("raw").to_pylist(), np.float32))


def test_auto_puts_pillow_in_processes_only_beside_a_gpu(data, tmp_path):  # noqa: F811
    from scoring.worker import resolve_decode_processes

    root, _, plan = data
    auto = _job(root, plan, tmp_path / "out", "auto")
    assert resolve_decode_processes(auto, "cpu", on_gpu=True, threads=16) == 16
    assert resolve_decode_processes(auto, "cpu", on_gpu=False, threads=16) == 0  # the model needs the cores
    assert resolve_decode_processes(auto, "cpu", on_gpu=True, threads=1) == 0
    assert resolve_decode_processes(auto, "gpu", on_gpu=True, threads=16) == 0
    assert resolve_decode_processes(_job(root, plan, tmp_path / "out", 3), "gpu", on_gpu=True, threads=16) == 3


def test_decode_processes_is_checked(tmp_path):
    with pytest.raises(JobError, match="decode_processes must be \"auto\" or a whole number"):
        parse_job({"model": {"plan": "x.plan"}, "data": {"source": "x.parquet"},
                   "run": {"decode_processes": -1}}, base_dir=tmp_path, check_files=False)
