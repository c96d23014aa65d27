"""End to end on this machine: `run_local` and `batchscore run` with real worker processes.

Rows in = rows out with matching ids for the three image column kinds; corrupt rows become error
rows; a worker SIGKILLed part-way fails the job with a message naming it (and the shards it
held), and a rerun finishes with every row exactly once; shards of 8 rows in batches of 4, so a
worker holds several shards at once, give the same rows as one worker; the pipe a worker shares
between its prefetch thread and its main thread keeps their messages whole; outputs read back
with pyarrow and pandas; `batchscore report DIR` re-renders. A tiny conv net at 32x32 keeps CPU
inference negligible.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

import engine
from engine.network import Network
from launchers import cli
from launchers.common import WorkerFailed
from launchers.local import _death, _DriverLink, run_local
from scoring.dataset import open_dataset, read_shard
from scoring.decode import CpuDecoder
from scoring.errors import JobError
from scoring.job import load_job
from scoring.make_data import make_dataset
from scoring.manifest import JOURNAL_DIR, Manifest
from scoring.outputs import read_predictions
from scoring.worker import score_shards

ROOT = Path(__file__).resolve().parents[2]
CLASSES = 10
CROP = 32


def tiny_network() -> Network:
    rng = np.random.default_rng(0)
    net = Network("tiny")
    x = net.input("input", [None, 3, CROP, CROP])
    y = net.relu(net.conv(x, rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
                          np.zeros(8, np.float32), pad=1))
    y = net.flatten(net.global_avg_pool(y))
    y = net.linear(y, rng.standard_normal((CLASSES, 8)).astype(np.float32), np.zeros(CLASSES, np.float32))
    net.output(y, "logits")
    return net


def tiny_plan(path: Path) -> Path:
    return engine.build(tiny_network().graph(), engine.BuildConfig(max_batch=16)).save(path)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run_local")
    tiny_plan(root / "tiny.plan")
    make_dataset(root / "hf", 96, row_groups=8, image_size=(40, 56), corrupt=3, seed=1, workers=1)
    make_dataset(root / "binary", 60, row_groups=4, files=2, image_size=((30, 60), (30, 60)), corrupt=2,
                 column_kind="binary", format="PNG", seed=2, workers=1)
    make_dataset(root / "tensor", 64, row_groups=4, image_size=32, corrupt=1, column_kind="tensor", seed=3,
                 workers=1)
    make_dataset(root / "big", 120, row_groups=12, image_size=(200, 260), seed=4, workers=1)
    # Row groups of 4 rows, so shards of 8 rows: many small shards per worker.
    make_dataset(root / "small", 96, row_groups=24, image_size=(40, 56), corrupt=3, seed=5, workers=1)
    make_dataset(root / "bigsmall", 120, row_groups=30, image_size=(200, 260), seed=6, workers=1)
    return root


def write_job(work: Path, name: str, data: str, shard_rows: int = 16, workers: int = 1, batch: int = 8,
              **run) -> Path:
    lines = ["[model]", 'plan = "tiny.plan"', "[data]", f'source = "{data}"', f"shard_rows = {shard_rows}",
             "[preprocess]", "resize_shorter = 36", f"crop = {CROP}", "[output]", f'dir = "{name}-out"',
             "top_k = 3", "[run]", f"batch = {batch}", f"workers = {workers}", 'device = "cpu"', "decode_threads = 1"]
    lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in run.items()]
    path = work / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def source_ids(data: Path) -> list[str]:
    return pads.dataset(data, format="parquet").to_table(columns=["id"]).column("id").to_pylist()


def same_predictions(a: Path, b: Path) -> None:
    """Two output directories hold the same rows, error rows and scores."""
    ta = read_predictions(a).to_pandas().set_index("id").sort_index()
    tb = read_predictions(b).to_pandas().set_index("id").sort_index()
    assert list(ta.index) == list(tb.index)
    assert ta["error"].isna().tolist() == tb["error"].isna().tolist()
    good = ta["error"].isna()
    for col in ("top_k_indices", "top_k_scores"):
        np.testing.assert_allclose(np.stack(ta.loc[good, col].to_numpy()), np.stack(tb.loc[good, col].to_numpy()),
                                   rtol=1e-6, atol=1e-6)


def expected_scores(work: Path, data: Path, job) -> dict:
    """Scores of the first batch of the first shard, computed in this process: decode + engine."""
    ds = open_dataset(data)
    batch = next(read_shard(ds, ds.shards(16)[0], 8))
    out, errors = CpuDecoder(job.preprocess, 1).decode(batch.items)
    logits = engine.load(work / "tiny.plan").create_context().run({"input": out})["logits"]
    return {i: logits[k] for k, i in enumerate(batch.ids) if errors[k] is None}


@pytest.mark.parametrize("kind, corrupt, workers", [("hf", 3, 2), ("binary", 2, 1), ("tensor", 1, 1)])
def test_rows_in_rows_out(work, kind, corrupt, workers):
    job = load_job(write_job(work, kind, kind, workers=workers))
    report = run_local(job, quiet=True)
    out = job.output.dir
    assert report.data["summary"]["images"] == len(source_ids(work / kind))
    assert report.data["summary"]["errors"] == corrupt
    assert report.data["summary"]["workers"] == workers
    assert Manifest(out).verify().ok

    table = pads.dataset(out / "parts", format="parquet").to_table()  # read back with pyarrow
    assert sorted(table.column("id").to_pylist()) == sorted(source_ids(work / kind))
    df = read_predictions(out).to_pandas()  # and with pandas
    assert df["id"].is_unique and len(df) == table.num_rows
    bad = df[df["error"].notna()]
    assert len(bad) == corrupt
    assert bad["top_k_indices"].isna().all() and bad["top_k_scores"].isna().all()
    good = df[df["error"].isna()]
    assert good["top_k_indices"].map(len).eq(3).all()

    # The scores are the model's raw outputs for the decoded rows.
    want = expected_scores(work, work / kind, job)
    by_id = good.set_index("id")
    for row_id, logits in want.items():
        top = np.argsort(-logits, kind="stable")[:3]
        assert list(by_id.loc[row_id, "top_k_indices"]) == list(top)
        np.testing.assert_allclose(by_id.loc[row_id, "top_k_scores"], logits[top], rtol=1e-5, atol=1e-5)

    # A rerun has nothing left to do; `batchscore report DIR` re-renders from report.json.
    assert run_local(job, quiet=True) is None
    (out / "report.md").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert (out / "report.md").read_text().startswith("# ")


def test_small_shards_each_row_once_as_one_worker_scores_it(work):
    # 12 shards of 8 rows in batches of 4: a worker's prefetch thread asks for the next shard while
    # the last one is still being computed, so each worker holds several shards at once.
    one = load_job(write_job(work, "small1", "small", shard_rows=8, batch=4))
    two = load_job(write_job(work, "small2", "small", shard_rows=8, batch=4, workers=2))
    run_local(one, quiet=True)
    report = run_local(two, quiet=True)
    assert report.data["summary"]["images"] == 96 and report.data["summary"]["errors"] == 3
    assert report.data["summary"]["workers"] == 2
    assert len(Manifest(two.output.dir).done()) == 12 and Manifest(two.output.dir).verify().ok
    ids = pq.read_table(two.output.dir / "parts").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 96
    same_predictions(one.output.dir, two.output.dir)


def test_a_dead_worker_is_named_with_every_shard_it_held():
    killed = SimpleNamespace(exitcode=-signal.SIGKILL, pid=4321)
    assert _death(killed, 1, ["part-00003", "part-00004", "part-00005"]).startswith(
        "worker 1 (pid 4321) was killed by SIGKILL while scoring shards part-00003, part-00004, part-00005; ")
    assert "while scoring shard part-00003; " in _death(killed, 1, ["part-00003"])
    assert _death(SimpleNamespace(exitcode=3, pid=1), 0, []) == (
        "worker 0 (pid 1) exited with status 3 without reporting; the other workers took no new shards after that.")


def test_driver_link_keeps_the_two_threads_messages_whole():
    """The prefetch thread asks for shards while the main thread reports: messages larger than a
    pipe's buffer are written in several pieces, so unlocked sends would interleave."""
    driver_end, worker_end = mp.Pipe(duplex=True)
    link = _DriverLink(worker_end)
    big = "x" * 200_000
    seen = {"batch": 0, "next": 0}

    def driver():
        handed = 0
        while True:
            try:
                msg = driver_end.recv()
            except EOFError:
                return
            seen[msg[0]] = seen.get(msg[0], 0) + 1
            if msg[0] == "batch":
                assert msg[1] == big
            elif msg[0] == "next":
                driver_end.send(handed if handed < 50 else None)
                handed += 1

    got = []

    def prefetch():
        while (shard := link.next_shard()) is not None:
            got.append(shard)

    threads = [threading.Thread(target=driver), threading.Thread(target=prefetch)]
    for t in threads:
        t.start()
    for _ in range(100):
        link.send(("batch", big))
    threads[1].join(timeout=60)
    link.close()
    threads[0].join(timeout=60)
    assert got == list(range(50))
    assert seen["batch"] == 100 and seen["next"] == 51
    assert link.next_shard() is None  # closed: the prefetch thread stops asking


def test_fail_fast_stops_at_the_first_bad_row(work):
    job = load_job(write_job(work, "fast", "hf", shard_rows=48, fail_fast=True))
    with pytest.raises(WorkerFailed, match="fail_fast") as info:
        run_local(job, quiet=True)
    assert "img-" in str(info.value) and "worker 0 stopped" in str(info.value)
    rows = sum(p.rows for p in Manifest(job.output.dir).parts().values())
    assert rows < 96  # the shard holding the bad row was not recorded


def test_other_shard_size_on_rerun_is_refused(work):
    job = load_job(write_job(work, "resize", "tensor", shard_rows=16))
    score_shards(job, work / "tiny.plan", open_dataset(work / "tensor").shards(16)[:1], 0)  # in-process
    assert len(Manifest(job.output.dir).done()) == 1
    run_local(job, quiet=True)
    assert read_predictions(job.output.dir).num_rows == 64
    other = load_job(write_job(work, "resize", "tensor", shard_rows=32))
    with pytest.raises(JobError, match="other shards"):
        run_local(other, quiet=True)


def test_onnx_model_is_built_once_next_to_the_outputs(work):
    import onnx

    from engine.onnx_export import to_onnx

    onnx.save(to_onnx(tiny_network().graph()), work / "tiny.onnx")
    job_file = write_job(work, "onnx", "tensor", shard_rows=32)
    job_file.write_text(job_file.read_text().replace('plan = "tiny.plan"', 'onnx = "tiny.onnx"\nmax_batch = 8'))
    job = load_job(job_file)
    report = run_local(job, quiet=True)
    plans = list(job.output.dir.glob("*.plan"))
    assert [p.name for p in plans] == ["tiny.cpu.fp32.b8.plan"]
    assert report.data["job"]["plan"] == str(plans[0])
    assert read_predictions(job.output.dir).num_rows == 64


def _worker_pids(parent: int) -> list[int]:
    """The spawned worker processes of `parent` (not its multiprocessing resource tracker)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            pids.append(int(entry))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the worker")
@pytest.mark.parametrize("data, shard_rows, batch, shards", [("big", 10, 8, 12), ("bigsmall", 8, 4, 15)])
def test_killed_worker_fails_the_job_and_a_rerun_resumes(work, data, shard_rows, batch, shards):
    # bigsmall: shards of 8 rows in batches of 4, so the worker holds several when it is killed.
    job_file = write_job(work, f"kill-{data}", data, shard_rows=shard_rows, batch=batch)
    out = load_job(job_file).output.dir
    cmd = [sys.executable, "-m", "launchers.cli", "run", str(job_file), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 60
    try:
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            if Manifest(out).done():
                pids = _worker_pids(proc.pid)
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed = pids[0]
            time.sleep(0.005)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "the job finished before a worker could be killed"
    assert proc.returncode == 1, stderr
    assert f"worker 0 (pid {killed}) was killed by SIGKILL" in stderr
    assert "run the same command again" in stderr and "Traceback" not in stderr
    finished = Manifest(out).done()
    assert 0 < len(finished) < shards
    # The killed worker could not fold its manifest journal; the launcher did, once all had ended.
    assert not (out / JOURNAL_DIR).exists()
    assert {p["key"] for p in json.loads((out / "manifest.json").read_text())["parts"]} == finished
    # The shards it held, when it held any (a kill can land between two shards): "shards a, b".
    held = re.search(r"killed by SIGKILL(?: while scoring (shards?) ([^;]+))?;", stderr)
    assert held is not None, stderr
    if held.group(1):
        keys = held.group(2).split(", ")
        assert all(re.fullmatch(r"part-\d{5}", k) for k in keys) and (len(keys) > 1) == (held.group(1) == "shards")
    stale = out / "parts" / ".part-09999.parquet.killed.tmp"  # what a worker killed mid-write leaves
    stale.write_bytes(b"half a part")

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    table = pq.read_table(out / "parts")
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 120
    assert sorted(ids) == sorted(source_ids(work / data))
    assert len(Manifest(out).done()) == shards
    assert len(json.loads((out / "manifest.json").read_text())["parts"]) == shards
    assert Manifest(out).verify().ok
    assert not list((out / "parts").glob(".*.tmp")), "the rerun clears temps that killed workers left"
