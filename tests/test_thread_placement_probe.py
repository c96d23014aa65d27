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
