"""The Ray launcher on a local Ray cluster with two CPU slots (one cluster for the module).

Two CPU actors give the same rows and scores as one local worker, with big shards and with shards
of 8 rows in batches of 4 (each actor then holds two shards, its worker reading the second while
computing the first); an actor SIGKILLed mid-job, or while it holds two shards, is replaced and
its shards retried, so the output is still complete with every row exactly once; an actor answers
each `score` call with its own shard and an error ends every waiting call (checked in-process, no
Ray); the driver's bookkeeping puts every shard of a dead actor back at the front of the queue;
`batchscore run --launcher ray` joins the running cluster; EngineMapper adds the same scores in
a Ray Data pipeline. Skipped when Ray is not installed (`pip install 'batchscore[ray]'`).
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'batchscore[ray]')")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

import launchers.ray as ray_launcher  # noqa: E402
from launchers import cli  # noqa: E402
from launchers.local import run_local  # noqa: E402
from launchers.ray import EngineMapper, ShardScorer, _Assignments, run_ray  # noqa: E402
from scoring.dataset import Shard, open_dataset, read_shard  # noqa: E402
from scoring.decode import CpuDecoder  # noqa: E402
from scoring.job import load_job  # noqa: E402
from scoring.make_data import make_dataset  # noqa: E402
from scoring.manifest import Manifest  # noqa: E402
from scoring.outputs import read_predictions  # noqa: E402
from tests.scoring.test_run_local import CROP, same_predictions, source_ids, tiny_plan, write_job  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray")
    tiny_plan(root / "tiny.plan")
    make_dataset(root / "hf", 96, row_groups=8, image_size=(40, 56), corrupt=3, seed=1, workers=1)
    make_dataset(root / "big", 240, row_groups=24, image_size=(200, 260), seed=4, workers=1)
    # Row groups of 4 rows, so shards of 8 rows: many small shards per actor.
    make_dataset(root / "small", 96, row_groups=24, image_size=(40, 56), corrupt=3, seed=5, workers=1)
    make_dataset(root / "bigsmall", 120, row_groups=30, image_size=(200, 260), seed=6, workers=1)
    return root


def test_two_actors_score_like_one_local_worker(cluster, work, capsys):
    local = load_job(write_job(work, "local1", "hf", workers=1))
    run_local(local, quiet=True)
    job_file = write_job(work, "ray2", "hf", workers=2)
    assert cli.main(["run", str(job_file), "--launcher", "ray"]) == 0  # joins the running cluster
    assert "with 2 Ray CPU actors" in capsys.readouterr().out
    out = load_job(job_file).output.dir
    assert Manifest(out).verify().ok
    same_predictions(local.output.dir, out)
    report = (out / "report.json").read_text()
    assert '"launcher": "ray"' in report and '"workers": 2' in report
    assert run_ray(load_job(job_file), quiet=True) is None  # a rerun has nothing to do


def test_small_shards_two_actors_each_row_once(cluster, work):
    one = load_job(write_job(work, "small1", "small", shard_rows=8, batch=4))
    two = load_job(write_job(work, "raysmall2", "small", shard_rows=8, batch=4, workers=2))
    run_local(one, quiet=True)
    report = run_ray(two, quiet=True)
    assert report.data["summary"]["images"] == 96 and report.data["summary"]["errors"] == 3
    assert len(Manifest(two.output.dir).done()) == 12 and Manifest(two.output.dir).verify().ok
    ids = pq.read_table(two.output.dir / "parts").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 96
    same_predictions(one.output.dir, two.output.dir)


def _actor_pids() -> list[int]:
    """ShardScorer actors of this process's own Ray cluster (pytest-xdist may run another one)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::ShardScorer") and _descends_from(int(entry), os.getpid()):
            pids.append(int(entry))
    return pids


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
        if pid == ancestor:
            return True
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the actor")
def test_killed_actor_is_replaced_and_output_is_exactly_once(cluster, work):
    job = load_job(write_job(work, "raykill", "big", shard_rows=10, workers=2))
    out = job.output.dir
    killed = []

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if Manifest(out).done():
                pids = _actor_pids()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    return
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    report = run_ray(job, quiet=True)
    thread.join()
    assert killed, "the job finished before an actor could be killed"
    ids = pq.read_table(out / "parts").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 240
    assert sorted(ids) == sorted(source_ids(work / "big"))
    assert Manifest(out).verify().ok
    assert report.data["summary"]["images"] <= 240
    # The kill usually lands while the actor holds a shard, which is then retried; under load it can
    # land between shards, so the retry count (report.data["job"]["shards_retried"]) is not required.
    assert "shards_retried" in report.data["job"]
    assert len(Manifest(out).done()) == 24


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the actor")
def test_actor_killed_while_holding_two_shards(cluster, work, monkeypatch, capsys):
    # One actor, shards of 8 rows: the actor is killed just as the driver has handed it its second
    # shard (two in flight, neither answered), after at least one shard is finished.
    job = load_job(write_job(work, "raykill2", "bigsmall", shard_rows=8, batch=4, workers=1))
    out = job.output.dir
    books: list[_Assignments] = []

    class Book(_Assignments):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            books.append(self)

    stale = set(_actor_pids())  # actors of the tests before, perhaps still exiting
    real_wait = ray.wait
    killed = []

    def wait(refs, *args, **kwargs):
        if (not killed and books and len(books[0].held.get(0, {})) == 2 and len(refs) == 2
                and not real_wait(list(refs), num_returns=1, timeout=0)[0]
                and Manifest(out).done()):
            pids = [p for p in _actor_pids() if p not in stale]
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(sorted(books[0].held[0]))
        return real_wait(refs, *args, **kwargs)

    monkeypatch.setattr(ray_launcher, "_Assignments", Book)
    monkeypatch.setattr(ray, "wait", wait)
    report = run_ray(job, quiet=False)
    err = capsys.readouterr().err
    assert killed, "the job finished before the actor could be killed"
    assert "worker 0 died while scoring shard" in err and "to a new worker 1" in err
    assert report.data["job"]["shards_retried"] >= 1  # both, unless one finished as the kill landed
    ids = pq.read_table(out / "parts").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 120
    assert sorted(ids) == sorted(source_ids(work / "bigsmall"))
    assert len(Manifest(out).done()) == 15 and Manifest(out).verify().ok


def _shards(n: int) -> list[Shard]:
    return [Shard(k, "f.parquet", (k, k + 1), 8 * k, 8) for k in range(n)]


def test_assignments_two_per_actor_and_a_dead_actors_shards_go_back_first():
    s = _shards(7)
    book = _Assignments(s, per_actor=2, max_retries=1)
    book.add_actor(0)
    book.add_actor(1)
    given = [book.hand_out() for _ in range(4)]
    assert [(i, x.key) for i, x in given] == [(0, s[0].key), (1, s[1].key), (0, s[2].key), (1, s[3].key)]
    assert book.hand_out() is None  # both actors full
    book.done(0, s[0].key)
    assert book.hand_out() == (0, s[4])
    back, given_up = book.actor_died(0)  # held s2 and s4
    assert back == [s[2], s[4]] and given_up == []
    assert book.pending == [s[2], s[4], s[5], s[6]]  # at the front, in hand-out order
    book.add_actor(2)
    assert book.hand_out() == (2, s[2]) and book.hand_out() == (2, s[4])
    back, given_up = book.actor_died(2)  # their second death: more than max_retries
    assert back == [] and given_up == [(s[2], 2), (s[4], 2)]
    assert book.pending == [s[5], s[6]]


def _shard_with_bad_row_last(work: Path, job) -> tuple[Shard, Shard]:
    """A shard whose last batch holds an undecodable row, and a clean shard."""
    ds = open_dataset(work / "hf")
    decoder = CpuDecoder(job.preprocess, 1)
    bad = clean = None
    for shard in ds.shards(job.data.shard_rows):
        errors = [decoder.decode(b.items)[1] for b in read_shard(ds, shard, job.run.batch)]
        if bad is None and any(e is not None for e in errors[-1]):
            bad = shard
        elif clean is None and not any(e is not None for errs in errors for e in errs):
            clean = shard
    assert bad is not None and clean is not None, "the hf data set has no such shards"
    return bad, clean


def _scorer(work: Path, job) -> ShardScorer:
    plan = (work / "tiny.plan").read_bytes()
    return ShardScorer(job, plan, hashlib.sha256(plan).hexdigest(), 0, "cpu", open_dataset(work / "hf"), 1)


def test_scorer_answers_each_score_call_with_its_own_shard(work):
    job = load_job(write_job(work, "scorer", "hf", shard_rows=12, batch=4))
    shards = open_dataset(work / "hf").shards(12)[:4]
    scorer = _scorer(work, job)  # the actor's class, in this process: no Ray
    with ThreadPoolExecutor(4) as pool:  # four calls waiting at once, each for its own shard
        answers = list(pool.map(scorer.score, shards, timeout=60))
    assert [a[:2] for a in answers] == [("done", s.key) for s in shards]
    assert sum(a[2] for a in answers) == 48
    # A retried shard (its actor died) that is recorded is answered from the manifest, not scored again.
    assert scorer.score(shards[0], True)[:2] == ("done", shards[0].key)
    kind, metrics = scorer.finish()
    assert kind == "metrics" and metrics["images"] == 48


def _call(fn, *args) -> dict:
    """fn(*args) on a daemon thread (a hang fails the test instead of blocking the run)."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("value", fn(*args)), daemon=True)
    thread.start()
    box["thread"] = thread
    return box


def _answer(box: dict, what: str, timeout: float = 30):
    box["thread"].join(timeout)
    assert "value" in box, f"{what} got no answer in {timeout:.0f} s"
    return box["value"]


def test_scorer_error_ends_every_waiting_score_call(work):
    # The bad row is in the last batch of the second shard given: by then the worker's prefetch
    # thread has read both shards and waits in the actor's inbox for a third, which the driver
    # sends only when one of the two is answered.
    job = load_job(write_job(work, "scorerfail", "hf", shard_rows=12, batch=4, fail_fast=True))
    bad, clean = _shard_with_bad_row_last(work, job)
    scorer = _scorer(work, job)
    first = _call(scorer.score, clean)
    deadline = time.monotonic() + 30
    while clean.key not in scorer.waiting and "value" not in first and time.monotonic() < deadline:
        time.sleep(0.001)
    second = _call(scorer.score, bad)
    assert _answer(first, "score(clean shard)")[:2] == ("done", clean.key)
    kind, message = _answer(second, "score(shard with a bad row)")
    assert kind == "error" and "fail_fast" in message and "worker 0" in message
    other = next(s for s in open_dataset(work / "hf").shards(12) if s.key not in (bad.key, clean.key))
    assert scorer.score(other) == (kind, message)  # after the error, at once
    assert scorer.finish() == (kind, message)


def test_scaling_option_runs_each_worker_count(cluster, work):
    import json

    job_file = write_job(work, "rayscale", "hf", shard_rows=12)
    assert cli.main(["run", str(job_file), "--launcher", "ray", "--scaling", "1,2", "--quiet"]) == 0
    base = load_job(job_file).output.dir / "scaling"
    result = json.loads((base / "scaling.json").read_text())
    assert [r["workers"] for r in result["runs"]] == [1, 2]
    for n in (1, 2):
        assert read_predictions(base / f"workers-{n}").num_rows == 96


def test_engine_mapper_in_ray_data(cluster, work):
    import ray.data

    local = load_job(write_job(work, "local1", "hf", workers=1))  # written by the first test, or now
    if not Manifest(local.output.dir).done():
        run_local(local, quiet=True)
    want = read_predictions(local.output.dir).to_pandas().set_index("id")
    pre = {"resize_shorter": 36, "crop": CROP}
    mapper = EngineMapper(plan_path=str(work / "tiny.plan"), preprocess=pre, top_k=3, batch=8, keep_image=False)
    table = pq.read_table(work / "hf")
    direct = mapper({"id": np.array(table.column("id").to_pylist(), object),
                     "image": np.array(table.column("image").to_pylist(), object)})
    assert "image" not in direct and direct["top_k_indices"].shape == (96, 3)

    ds = ray.data.read_parquet(str(work / "hf")).map_batches(
        EngineMapper, fn_constructor_kwargs={"plan": (work / "tiny.plan").read_bytes(), "preprocess": pre,
                                             "top_k": 3, "batch": 8},
        batch_format="numpy", batch_size=32, concurrency=1)
    rows = {r["id"]: r for r in ds.take_all()}
    assert sorted(rows) == sorted(want.index)
    for i, row_id in enumerate(direct["id"]):
        row, ref = rows[row_id], want.loc[row_id]
        assert (row["error"] is None) == (ref["error"] is None or ref["error"] != ref["error"])
        assert (direct["error"][i] is None) == (row["error"] is None)
        if row["error"] is None:
            assert list(row["top_k_indices"]) == list(ref["top_k_indices"]) == list(direct["top_k_indices"][i])
            np.testing.assert_allclose(row["top_k_scores"], ref["top_k_scores"], rtol=1e-5, atol=1e-6)
        else:
            assert list(row["top_k_indices"]) == [-1, -1, -1]
