"""benchmarks/device/thread_placement_probe.py reads /proc; here against a fake /proc tree."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "device"))

import thread_placement_probe as probe  # noqa: E402


def _stat(tid: int, name: str, utime: int, stime: int, cpu: int) -> str:
    # fields 3..52 of proc(5) after "pid (comm) "; utime is field 14, stime 15, processor 39
    fields = ["S"] + ["0"] * 49
    fields[14 - 3], fields[15 - 3], fields[39 - 3] = str(utime), str(stime), str(cpu)
    return f"{tid} ({name}) " + " ".join(fields) + "\n"


def test_task_sample_reads_name_cpu_and_time():
    got = probe.task_sample(_stat(7, "bs decode (2)", 250, 50, 13))
    assert got == {"name": "bs decode (2)", "cpu": 13, "cpu_s": round(300 / probe.TICKS, 3)}


def test_sample_finds_matching_processes_and_their_threads(tmp_path):
    def proc(pid, cmdline, tasks):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(cmdline)
        for tid, stat in tasks.items():
            (tmp_path / str(pid) / "task" / str(tid)).mkdir(parents=True)
            (tmp_path / str(pid) / "task" / str(tid) / "stat").write_text(stat)

    proc(100, b"python3\0-m\0launchers.cli\0run\0job.toml\0", {100: _stat(100, "python3", 10, 0, 1),
                                                               101: _stat(101, "bs-read", 20, 5, 2)})
    proc(200, b"bash\0-c\0sleep 1\0", {200: _stat(200, "bash", 1, 0, 3)})
    (tmp_path / "self").mkdir()  # not a pid
    got = probe.sample("launchers.cli", tmp_path)
    assert list(got) == ["100"]
    assert got["100"]["101"]["name"] == "bs-read" and got["100"]["101"]["cpu"] == 2


import gzip  # noqa: E402
import json  # noqa: E402

import thread_placement_summary as summary  # noqa: E402


def _sample(t, procs):
    return {"t": t, "procs": procs}


def test_summary_gives_each_worker_its_cores_per_role(tmp_path):
    def worker(main_s, read_s, blas_s):
        return {"10": {"name": "python3", "cpu": 0, "cpu_s": main_s},
                "11": {"name": "bs-read", "cpu": 1, "cpu_s": read_s},
                "12": {"name": "python3", "cpu": 2, "cpu_s": blas_s}}

    samples = [_sample(100.0, {"10": worker(0.0, 0.0, 0.0), "99": {"99": {"name": "mpirun", "cpu": 0, "cpu_s": 0}}}),
               _sample(102.0, {"10": worker(1.6, 0.4, 0.0)}),
               _sample(104.0, {"10": worker(3.2, 1.2, 0.2)})]
    path = tmp_path / "s.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(s) + "\n" for s in samples)
    rows = summary.summarize(summary.read_samples(path))
    assert len(rows) == 1  # mpirun has no reader: not a worker
    assert rows[0]["pid"] == 10 and (rows[0]["from_s"], rows[0]["to_s"]) == (0.0, 4.0)
    assert rows[0]["cores"] == {"bs-read": 0.3, "main": 0.8, "unnamed": 0.05}
    assert "bs-read" in summary.format_table(rows)


def test_shared_cpus_are_counted_only_for_busy_worker_threads():
    def procs(read_s, decode_s, cpu_of_decode):
        return {"10": {"10": {"name": "python3", "cpu": 0, "cpu_s": 0.0},
                       "11": {"name": "bs-read", "cpu": 5, "cpu_s": read_s},
                       "12": {"name": "bs-decode-0", "cpu": cpu_of_decode, "cpu_s": decode_s}}}

    samples = [_sample(0.0, procs(0.0, 0.0, 5)),
               _sample(1.0, procs(0.5, 0.5, 5)),   # both busy on CPU 5: shared
               _sample(2.0, procs(1.0, 1.0, 6)),   # busy on 5 and 6: not shared
               _sample(3.0, procs(1.5, 1.05, 5))]  # the decoder idle on CPU 5: not shared
    assert summary.shared_cpu_intervals(samples) == (3, 1)


import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402


@pytest.mark.skipif(shutil.which("cc") is None or (os.cpu_count() or 1) < 2, reason="needs a C compiler and 2 CPUs")
def test_core_to_core_measures_the_pairs_asked_for(tmp_path):
    source = Path(__file__).resolve().parents[1] / "benchmarks" / "device" / "core_to_core.c"
    binary = tmp_path / "c2c"
    subprocess.run(["cc", "-O2", "-pthread", str(source), "-o", str(binary)], check=True)
    cpus = len(os.sched_getaffinity(0))
    if cpus < os.cpu_count():
        pytest.skip("this process may not run on every CPU")
    lines = subprocess.run([str(binary), "200", "all"], capture_output=True, text=True, timeout=60,
                           check=True).stdout.split()
    rows = [lines[i:i + 3] for i in range(0, len(lines), 3)]
    assert [(int(a), int(b)) for a, b, _ in rows] == [(a, b) for a in range(cpus) for b in range(a + 1, cpus)]
    assert all(0 < float(ns) < 1e6 for _, _, ns in rows)
    one = subprocess.run([str(binary), "200", "1:0"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert one.split()[:2] == ["1", "0"]
    bad = subprocess.run([str(binary), "200", f"0:{cpus + 5}"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and f"cannot run on CPU {cpus + 5}" in bad.stderr


def test_a_torn_last_line_is_skipped_and_counted(tmp_path, capsys):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(_sample(1.0, {})) + "\n" + json.dumps(_sample(2.0, {})) + "\n" + '{"t": 3.0, "pro')
    assert [s["t"] for s in summary.read_samples(path)] == [1.0, 2.0]
    assert "skipped 1 line that did not parse" in capsys.readouterr().err


def test_per_cpu_rates_set_each_cpu_against_the_roles_median():
    # two workers' readers and decoders, sampled once a second; worker 20's reader sits on CPU 15,
    # where it uses twice the cores, and its decoder moves mid-stretch (that stretch says nothing)
    def procs(k):
        return {"10": {"10": {"name": "python3", "cpu": 0, "cpu_s": 0.9 * k},
                       "11": {"name": "bs-read", "cpu": 3, "cpu_s": 0.4 * k},
                       "12": {"name": "bs-decode-0", "cpu": 4, "cpu_s": 0.5 * k}},
                "20": {"20": {"name": "python3", "cpu": 1, "cpu_s": 0.9 * k},
                       "21": {"name": "bs-read", "cpu": 15, "cpu_s": 0.8 * k},
                       "22": {"name": "bs-decode-0", "cpu": 5 if k < 2 else 6, "cpu_s": 0.5 * k},
                       "23": {"name": "bs-decode-1", "cpu": 7, "cpu_s": 0.1 * k}}}  # waiting: left out

    rates = summary.per_cpu_rates([_sample(float(k), procs(k)) for k in range(9)], window=4)
    assert set(rates) == {"main", "bs-read", "bs-decode"}
    read = rates["bs-read"]
    assert read["stretches"] == 4 and read["median_cores"] == 0.6  # of 0.4, 0.4, 0.8, 0.8
    assert read["cpus"] == {3: {"vs_median": 0.67, "stretches": 2}, 15: {"vs_median": 1.33, "stretches": 2}}
    decode = rates["bs-decode"]
    assert decode["cpus"][4]["stretches"] == 2 and 5 not in decode["cpus"] and decode["cpus"][6]["stretches"] == 1
    assert 7 not in decode["cpus"]
    assert "15:1.33(2)" in summary.format_per_cpu(rates)
