"""benchmarks/device/pyspy_threads.py: a py-spy raw profile summed per thread of a worker."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "benchmarks" / "device" / "pyspy_threads.py"
sys.path.insert(0, str(TOOL.parent))

import pyspy_threads  # noqa: E402

WORKER = 'process 770:"python3 -B -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=40)"'
LAUNCHER = 'process 741:"python3 benchmarks/scoring_gpu_e2e.py /tmp/e"'
PROFILE = [
    f"{WORKER};thread (807): prefetch-read;run (threading.py:1010);read_shard (scoring/dataset.py:206) 30\n",
    f"{WORKER};thread (807): prefetch-read;run (threading.py:1010);route_batch (scoring/decode_route.py:71) 10\n",
    f"{WORKER};thread (807): prefetch-read;_find_and_load (<frozen importlib._bootstrap>:1360) 7\n",
    f"{WORKER};thread (770): MainThread;_score (scoring/worker.py:320);submit (scoring/gpu_runner.py:232) 12\n",
    f"{WORKER};thread (770): MainThread;load (engine/runtime.py:264) 40\n",
    f"{WORKER};thread (812): bs-parts_0;add (scoring/outputs.py:263) 5\n",
    f"{LAUNCHER};thread (741): MainThread;_score (scoring/worker.py:320) 99\n",
    "\n",
]


def test_a_profile_summed_per_thread_of_the_worker_with_start_up_set_apart():
    threads = pyspy_threads.summarize(PROFILE, depth=1)
    assert {name: (t.scoring, t.startup) for name, t in threads.items()} == {
        "prefetch-read": (40, 7), "MainThread": (12, 40), "bs-parts_0": (5, 0)}  # not the launcher's 99
    counted = pyspy_threads.summarize(PROFILE, count_texts=("route_batch", "submit", "_find_and_load"))
    assert counted["prefetch-read"].counted == {"route_batch": 10}  # the import is start-up, not counted
    assert counted["MainThread"].counted == {"submit": 12}
    assert threads["prefetch-read"].places.most_common() == [
        ("read_shard (scoring/dataset.py:206)", 30), ("route_batch (scoring/decode_route.py:71)", 10)]
    summary = pyspy_threads.report(threads, rate=500, window=0.5, top=1)
    assert summary["scoring_samples"] == 57 and summary["scoring_s"] == 0.114
    assert summary["share_of_window"] == pytest.approx(0.228)
    first = summary["threads"][0]
    assert first["thread"] == "prefetch-read" and first["share_of_window"] == pytest.approx(0.16)
    assert first["places"] == [{"where": "read_shard (scoring/dataset.py:206)", "samples": 30}]


def test_a_process_name_with_semicolons_is_split_at_the_thread_frame():
    process, thread, frames, count = pyspy_threads.parse_line(PROFILE[0])
    assert process == WORKER and thread == "thread (807): prefetch-read" and count == 30
    assert frames == ["run (threading.py:1010)", "read_shard (scoring/dataset.py:206)"]
    assert pyspy_threads.thread_name("thread (0)") == "thread (0)"  # no name: the frame itself


@pytest.mark.parametrize("line, message", [
    ("no count here\n", "not a raw py-spy line"),
    (f"{WORKER};run (threading.py:1010) 3\n", "no thread frame"),
])
def test_a_line_that_is_not_a_threaded_raw_profile_is_named(line, message):
    with pytest.raises(ValueError, match=f"line 2: {message}"):
        pyspy_threads.summarize([PROFILE[0], line])


def test_the_command_reads_a_gzipped_profile_and_writes_json(tmp_path):
    raw = tmp_path / "gil.txt.gz"
    with gzip.open(raw, "wt") as handle:
        handle.writelines(PROFILE)
    out = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, str(TOOL), str(raw), "--window", "0.5", "--json", str(out),
                           "--count", "route_batch"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "57 samples while scoring (0.114 s, 22.8% of 0.5 s)" in proc.stdout
    assert "prefetch-read: 40 samples, 0.08 s (16.0%); 7 in start-up" in proc.stdout
    assert "10  with 'route_batch' in the stack" in proc.stdout
    summary = json.loads(out.read_text())
    assert summary["threads"][1]["thread"] == "MainThread" and summary["threads"][0]["counted"] == {"route_batch": 10}


def test_the_command_says_what_is_wrong_with_its_input(tmp_path):
    raw = tmp_path / "other.txt"
    raw.write_text(f"{LAUNCHER};thread (741): MainThread;x (a.py:1) 3\n")
    proc = subprocess.run([sys.executable, str(TOOL), str(raw)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no samples of a process whose name holds 'spawn_main'" in proc.stderr
    raw.write_text("garbage\n")
    proc = subprocess.run([sys.executable, str(TOOL), str(raw)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "line 1: not a raw py-spy line" in proc.stderr
    proc = subprocess.run([sys.executable, str(TOOL), str(tmp_path / "missing.txt")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "is not a file" in proc.stderr
