"""benchmarks/device/e2e_summary.py: a device call's runs summed up per variant, from the files a
call script copies (benchmark JSON, worker report, /proc/stat readings)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "device"))

import e2e_summary  # noqa: E402


def write_run(directory: Path, name: str, share: float | None, busy: float | None = 0.98,
              report: bool = False, steal: str | None = None) -> None:
    bench = {"engine_only": {"images_per_s": 31500.0},
             "end_to_end": {"steady_images_per_s": None if share is None else share * 31500.0,
                            "busy_fraction": busy, **({"error": "worker failed"} if share is None else {})},
             "ratio_steady_over_engine": share, "ratio_first_batch_to_end_over_engine": share and share - 0.02}
    (directory / f"e2e_{name}.json").write_text(json.dumps(bench))
    if report:
        worker = {"thread_cpu_us_per_image": {"main": 3.04, "read": 21.66}, "slow_cpus_left": [{"cpu": 14, "thread": "read"}]}
        (directory / f"report_{name}.json").write_text(json.dumps({"workers": [worker]}))
    if steal is not None:
        (directory / f"steal_{name}.txt").write_text(steal)


def test_runs_are_grouped_by_variant_with_range_median_and_the_runs_at_target(tmp_path):
    for run, share in enumerate([0.905, 0.899, 0.911], start=1):
        write_run(tmp_path, f"slots4_{run}", share)
    write_run(tmp_path, "slots12_1", 0.907, busy=0.99)
    write_run(tmp_path, "slots12_2", None, busy=None)  # a failed run: counted, no share
    runs = [e2e_summary.run_line(p) for p in sorted(tmp_path.glob("e2e_*.json"))]
    summary = e2e_summary.variant_lines(runs)
    assert summary["slots4"] == {"runs": 3, "share": (0.899, 0.911), "median": 0.905, "busy": (0.98, 0.98), "at_target": 2}
    assert summary["slots12"] == {"runs": 2, "share": (0.907, 0.907), "median": 0.907, "busy": (0.99, 0.99), "at_target": 1}
    text = e2e_summary.summarize([tmp_path])
    assert "= slots4: 3 runs, share 0.899-0.911 median 0.9050, busy 0.980-0.980, 2 at 0.90 or more" in text
    assert "slots12_2: alone 31,500 steady - share - " in text and "ERROR worker failed" in text


def test_a_report_and_a_steal_reading_join_their_run(tmp_path):
    write_run(tmp_path, "main_1", 0.9, report=True,
              steal="before user 100 system 50 idle 800 steal 50\nafter user 200 system 100 idle 1600 steal 100\n")
    run = e2e_summary.run_line(tmp_path / "e2e_main_1.json")
    assert run["variant"] == "main" and run["thread_cpu_us_per_image"] == {"main": 3.0, "read": 21.7}
    assert run["slow_cpus"] == [(14, "read")] and run["steal"] == pytest.approx(0.05)
    assert "steal 5.00% | main 3.0 read 21.7 slow [(14, 'read')]" in e2e_summary.summarize([tmp_path])


def test_a_report_without_workers_leaves_the_run_without_thread_figures(tmp_path):
    write_run(tmp_path, "main_1", 0.9)
    (tmp_path / "report_main_1.json").write_text(json.dumps({"workers": []}))
    run = e2e_summary.run_line(tmp_path / "e2e_main_1.json")
    assert run["thread_cpu_us_per_image"] == {} and run["slow_cpus"] == []


def test_a_steal_file_without_both_readings_gives_none(tmp_path):
    half = tmp_path / "steal_x.txt"
    half.write_text("before user 1 system 1 idle 1 steal 1\n")
    assert e2e_summary.steal_share(half) is None
    assert e2e_summary.steal_share(tmp_path / "missing.txt") is None


def test_a_run_without_a_number_is_its_own_variant(tmp_path):
    write_run(tmp_path, "alone", 0.9)
    assert e2e_summary.run_line(tmp_path / "e2e_alone.json")["variant"] == "alone"


def test_an_empty_folder_or_a_bad_file_is_an_error_not_a_trace(tmp_path, capsys):
    assert e2e_summary.main([str(tmp_path)]) == 2
    assert f"no e2e_*.json in {tmp_path}" in capsys.readouterr().err
    (tmp_path / "e2e_broken_1.json").write_text("{not json")
    assert e2e_summary.main([str(tmp_path)]) == 2
    assert "e2e_summary:" in capsys.readouterr().err


def _steal(percent: float) -> str:
    """A /proc/stat reading pair with `percent` of the CPU time stolen."""
    stolen = round(percent * 100)
    return f"before user 0 system 0 idle 0 steal 0\nafter user 10000 system 0 idle {-stolen} steal {stolen}\n"


def test_runs_fall_into_bands_of_the_hosts_steal_time(tmp_path):
    for name, share, percent in [("a_1", 0.91, 0.0), ("a_2", 0.905, 0.05), ("b_1", 0.89, 0.5), ("b_2", 0.86, 0.6),
                                 ("b_3", 0.75, 1.5), ("prof_1", 0.03, 0.0)]:
        write_run(tmp_path, name, share, steal=_steal(percent))
    write_run(tmp_path, "c_1", 0.92)  # no steal reading: in no band
    runs = [e2e_summary.run_line(p) for p in sorted(tmp_path.glob("e2e_*.json")) if "prof" not in p.name]
    bands = e2e_summary.steal_bands(runs)
    assert [(b["steal"], b["runs"], b["at_target"]) for b in bands] == [
        ((0.0, 0.001), 2, 2), ((0.004, 0.008), 2, 0), ((0.008, 1.0), 1, 0)]
    assert bands[0]["median"] == pytest.approx(0.9075) and bands[1]["lowest"] == 0.86
    text = e2e_summary.summarize([tmp_path], by_steal=True, exclude=("prof",))
    assert "prof_1" not in text and "by the host's CPU steal time (1 folder):" in text
    assert "steal 0.0% to 0.1%: 2 runs, share median 0.9075, lowest 0.905, 2 at 0.90 or more" in text
    assert "steal 0.8% to 100.0%: 1 run, share median 0.7500, lowest 0.750, 0 at 0.90 or more" in text
    assert "by the host" not in e2e_summary.summarize([tmp_path])


def test_without_a_steal_file_the_benchmarks_own_reading_is_used(tmp_path):
    write_run(tmp_path, "main_1", 0.9)
    bench = json.loads((tmp_path / "e2e_main_1.json").read_text())
    bench["end_to_end"]["host_cpu"] = {"steal": 0.0042, "busy": 0.2, "ticks": 1000}
    (tmp_path / "e2e_main_1.json").write_text(json.dumps(bench))
    assert e2e_summary.run_line(tmp_path / "e2e_main_1.json")["steal"] == 0.0042
    write_run(tmp_path, "main_2", 0.9, steal=_steal(1.0))  # a call script's reading wins
    assert e2e_summary.run_line(tmp_path / "e2e_main_2.json")["steal"] == pytest.approx(0.01)
