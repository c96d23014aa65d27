import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _have_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _have_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Counts for the conformance suites, printed at the end of the run ("the test run prints the counts").
_SUITES = {"test_node_cases.py::test_node_case": "ONNX node cases", "test_backend_suites.py::OnnxBackend": "ONNX BackendTest models"}
_counts: dict[str, dict[str, int]] = {}


def pytest_runtest_logreport(report):
    for key, label in _SUITES.items():
        if key in report.nodeid and (report.when == "call" or (report.when == "setup" and report.skipped)):
            bucket = _counts.setdefault(label, {"passed": 0, "failed": 0, "skipped": 0})
            bucket[report.outcome] = bucket.get(report.outcome, 0) + 1


def pytest_terminal_summary(terminalreporter):
    for label, c in _counts.items():
        total = sum(c.values())
        terminalreporter.write_line(
            f"{label}: {total} run, {c['passed']} passed, {c['failed']} failed, "
            f"{c['skipped']} excluded ({100.0 * c['skipped'] / max(total, 1):.1f}%)"
        )
