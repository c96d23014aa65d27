"""benchmarks/device/nvjpeg_kernel_count.py's summary of an ncu --csv log: kernels by name, their
launches per batch and time, whatever unit ncu chose for each row."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device" / "nvjpeg_kernel_count.py"
spec = importlib.util.spec_from_file_location("nvjpeg_kernel_count", SCRIPT)
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)

HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size",'
          '"Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"')


def _row(kernel_id: int, name: str, unit: str, value: str, metric: str = "gpu__time_duration.sum") -> str:
    return (f'"{kernel_id}","77","python3","host","{name}","1","13","(256, 1, 1)","(64, 1, 1)","0","9.0",'
            f'"Command line profiler metrics","{metric}","{unit}","{value}"')


def test_kernels_are_counted_by_name_per_batch_in_microseconds(tmp_path):
    log = tmp_path / "k.csv"
    log.write_text("\n".join([
        "==PROF== Connected to process 77",
        HEADER,
        _row(0, "convert", "usecond", "2.50"),
        _row(1, "convert", "nsecond", "3,500"),
        _row(2, "convert", "us", "2.00"),  # the short unit names of ncu 2025
        _row(3, "copy", "msecond", "0.01"),
        _row(3, "copy", "", "7", metric="launch__grid_size"),  # another metric of a kernel already counted
    ]) + "\n")
    got = probe.summarize(log, batches=3)
    assert got["total_launches"] == 4
    assert got["kernels"]["convert"] == {"launches": 3, "us": 8.0, "per_batch": 1.0}
    assert got["kernels"]["copy"] == {"launches": 1, "us": 10.0, "per_batch": pytest.approx(1 / 3)}


def test_a_log_without_a_table_says_so(tmp_path):
    log = tmp_path / "k.csv"
    log.write_text("==PROF== Connected to process 77\n==ERROR== no kernels were profiled\n")
    with pytest.raises(ValueError, match="no ncu table"):
        probe.summarize(log, batches=1)
