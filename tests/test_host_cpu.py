"""benchmarks/host_cpu.py: the host's CPU shares between two readings of /proc/stat."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import host_cpu  # noqa: E402


def stat_file(tmp_path: Path, cpu_line: str) -> Path:
    path = tmp_path / "stat"
    path.write_text(f"{cpu_line}\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 12345\n")
    return path


def test_shares_of_steal_and_busy_between_two_readings(tmp_path):
    before = host_cpu.cpu_times(stat_file(tmp_path, "cpu  100 0 50 800 10 0 0 40 0 0"))
    after = host_cpu.cpu_times(stat_file(tmp_path, "cpu  400 0 150 1300 20 0 0 90 7 0"))
    assert before == {"user": 100, "nice": 0, "system": 50, "idle": 800, "iowait": 10, "irq": 0, "softirq": 0,
                      "steal": 40}
    shares = host_cpu.cpu_shares(before, after)  # 300 user + 100 system + 500 idle + 10 iowait + 50 steal
    assert shares == {"steal": pytest.approx(50 / 960), "busy": pytest.approx(400 / 960), "ticks": 960}


def test_an_old_kernels_short_line_counts_no_steal(tmp_path):
    assert host_cpu.cpu_times(stat_file(tmp_path, "cpu  1 2 3 4"))["steal"] == 0


def test_no_reading_no_shares(tmp_path):
    assert host_cpu.cpu_times(tmp_path / "missing") is None
    assert host_cpu.cpu_times(stat_file(tmp_path, "processes 12")) is None  # no aggregate cpu line
    reading = {name: 5 for name in host_cpu.FIELDS}
    assert host_cpu.cpu_shares(None, reading) is None and host_cpu.cpu_shares(reading, None) is None
    assert host_cpu.cpu_shares(reading, reading) is None  # no time between
