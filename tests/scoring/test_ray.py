"""The Ray launcher on a local Ray cluster with two CPU slots (one cluster for the module).

Two CPU actors give the same rows and scores as one local worker; an actor SIGKILLed mid-job is
replaced and its shard retried, so the output is still complete with every row exactly once;
`batchscore run --launcher ray` joins the running cluster; EngineMapper adds the same scores in
a Ray Data pipeline. Skipped when Ray is not installed (`pip install 'batchscore[ray]'`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'batchscore[ray]')")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

from launchers import cli  # noqa: E402
from launchers.local import run_local  # noqa: E402
from launchers.ray import EngineMapper, run_ray  # noqa: E402
from scoring.job import load_job  # noqa: E402
from scoring.make_data import make_dataset  # noqa: E402
from scoring.outputs import Manifest, read_predictions  # noqa: E402
from tests.scoring.test_mpi import same_predictions  # noqa: E402
from tests.scoring.test_run_local import CROP, source_ids, tiny_plan, write_job  # noqa: E402


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


def _actor_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::ShardScorer"):
            pids.append(int(entry))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the actor")
def test_killed_actor_is_replaced_and_output_is_exactly_once(cluster, work):
    job = load_job(write_job(work, "raykill", "big", shard_rows=10, workers=2))
    out = job.output.dir
    killed = []

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (out / "manifest.json").is_file() and Manifest(out).done():
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
