"""scoring/report.py: time from the job's launch to each worker's first finished batch, and the
slowest of them in the summary, in report.json and report.md; old reports without a launch time."""

import json

import numpy as np

from scoring.report import Metrics, build_report, render, write_report
from tests.scoring.test_run_local import tiny_plan, write_job

T0 = 1_700_000_000.0


def _worker(k, *, start, startup, wall=10.0):
    samples = [(float(t), int(100 * (t - startup + 0.5))) for t in np.arange(startup, wall + 1e-9, 0.5)]
    return Metrics(worker=k, device=f"cuda:{k}", started_at=T0 + start, images=samples[-1][1],
                   wall_s=wall, startup_s=startup, samples=samples)


def _three():
    # launched at T0 - 3: the workers' processes began 3 s (0, 1) and 4 s (2) after the launch
    return [_worker(0, start=0.0, startup=1.0), _worker(1, start=1.0, startup=2.0),
            _worker(2, start=0.0, startup=1.5)]


def test_launch_to_first_batch_per_worker_and_the_slowest():
    data = build_report({"name": "t", "started_at": T0 - 3.0}, _three())
    per_worker = [w["launch_to_first_batch_s"] for w in data["workers"]]
    assert per_worker == [4.0, 6.0, 4.5]  # started_at + startup_s - launch
    assert data["summary"]["launch_to_first_batch_s"] == 6.0
    assert data["summary"]["launch_to_first_batch_worker"] == 1
    assert data["summary"]["startup_s"]["max"] == 2.0  # the worker-side figure is unchanged


def test_a_worker_without_a_batch_is_left_out():
    metrics = _three()
    metrics[1].startup_s = None  # it finished no batch
    data = build_report({"started_at": T0 - 3.0}, metrics)
    assert [w["launch_to_first_batch_s"] for w in data["workers"]] == [4.0, None, 4.5]
    assert data["summary"]["launch_to_first_batch_s"] == 4.5
    assert data["summary"]["launch_to_first_batch_worker"] == 2


def test_no_launch_time_gives_none():
    data = build_report({"name": "old"}, _three())
    assert all(w["launch_to_first_batch_s"] is None for w in data["workers"])
    assert data["summary"]["launch_to_first_batch_s"] is None
    assert data["summary"]["launch_to_first_batch_worker"] is None


def test_markdown_row_and_column(tmp_path):
    rep = write_report(tmp_path, {"name": "t", "started_at": T0 - 3.0}, _three())
    md = rep.md_path.read_text()
    assert "| Launch to first batch | 6.0 s until every worker had a batch done (the last: worker 1) |" in md
    header = next(line for line in md.splitlines() if line.startswith("| Worker"))
    assert "From launch" in header
    row = next(line for line in md.splitlines() if line.startswith("| 2 "))
    assert "| 4.5 s |" in row
    assert json.loads(rep.json_path.read_text())["summary"]["launch_to_first_batch_s"] == 6.0
    assert "| started_at | 2023-11-1" in md and str(T0 - 3.0) not in md  # a date, not an epoch


def test_one_worker_says_just_the_time(tmp_path):
    rep = write_report(tmp_path, {"name": "t", "started_at": T0 - 0.25}, [_worker(0, start=0.0, startup=1.0)])
    assert "| Launch to first batch | 1.2 s |" in rep.md_path.read_text()


def test_old_report_renders_without_the_figure(tmp_path):
    rep = write_report(tmp_path, {"name": "old"}, _three())
    data = json.loads(rep.json_path.read_text())
    for w in data["workers"]:  # a report.json written before the figure existed
        del w["launch_to_first_batch_s"]
    del data["summary"]["launch_to_first_batch_s"], data["summary"]["launch_to_first_batch_worker"]
    rep.json_path.write_text(json.dumps(data))
    md = render(tmp_path).md_path.read_text()
    assert "Launch to first batch" not in md and "From launch" not in md


def test_local_run_reports_it(tmp_path):
    """A real local run: the launcher's started_at comes before every worker's first batch."""
    from launchers.local import run_local
    from scoring.job import load_job
    from scoring.make_data import make_dataset

    tiny_plan(tmp_path / "tiny.plan")
    make_dataset(tmp_path / "images", 32, row_groups=2, image_size=(40, 56), seed=1, workers=1)
    rep = run_local(load_job(write_job(tmp_path, "launch", "images", shard_rows=16)), quiet=True)
    s, (w,) = rep.data["summary"], rep.data["workers"]
    assert rep.data["job"]["started_at"] > 0
    assert w["startup_s"] <= w["launch_to_first_batch_s"] < 120
    assert s["launch_to_first_batch_s"] == w["launch_to_first_batch_s"]
    assert "Launch to first batch" in rep.md_path.read_text()
