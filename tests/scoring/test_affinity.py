"""scoring.affinity: cpulists, the GPU's local CPUs from sysfs, and pinning every thread of a process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scoring.affinity import local_cpus, most_cpus_to_leave, parse_cpulist

ROOT = Path(__file__).resolve().parents[2]


def test_cpulists_are_read_as_linux_writes_them():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("5") == [5] and parse_cpulist("") == [] and parse_cpulist("14\n") == [14]
    for bad in ("3-1", "a", "1-b", "-2", "0-x"):  # scoring.irq_cpus reads /proc/irq's lists with it too
        with pytest.raises(ValueError):
            parse_cpulist(bad)


def test_a_gpus_local_cpus_come_from_its_pci_address(tmp_path):
    device = tmp_path / "0000:1b:00.0"  # sysfs names are lower case; CUDA gives upper case
    device.mkdir()
    (device / "local_cpulist").write_text("0-1,4\n")
    assert local_cpus("0000:1B:00.0", tmp_path) == [0, 1, 4]
    assert local_cpus("0000:2C:00.0", tmp_path) is None  # no such device
    (device / "local_cpulist").write_text("garbage\n")
    assert local_cpus("0000:1B:00.0", tmp_path) is None


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two CPUs to pin to one")
def test_pinning_moves_threads_started_before_it_and_after_it():
    code = """
import os, threading
from scoring.affinity import pin_process
go, seen = threading.Event(), {}
def report(name):
    go.wait()
    seen[name] = sorted(os.sched_getaffinity(0))
early = threading.Thread(target=report, args=("early",))
early.start()
cpu = max(os.sched_getaffinity(0))
pin_process([cpu])
late = threading.Thread(target=report, args=("late",))
late.start()
go.set(); early.join(); late.join()
child = os.popen("python3 -c 'import os; print(sorted(os.sched_getaffinity(0)))'").read().strip()
print(cpu, seen["early"], seen["late"], sorted(os.sched_getaffinity(0)), child)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    cpu, *rest = done.stdout.split(" ", 1)
    assert rest[0].strip() == " ".join([f"[{cpu}]"] * 4)  # both threads, the main one and a child process


@pytest.mark.gpu
def test_a_gpu_worker_is_pinned_next_to_its_gpu():
    code = """
import os, cupy
from scoring.affinity import local_cpus, pin_to_gpu
before = os.sched_getaffinity(0)
near = local_cpus(cupy.cuda.runtime.deviceGetPCIBusId(0))
chosen = pin_to_gpu()
after = os.sched_getaffinity(0)
if near is None or set(near) >= before or not set(near) & before:
    assert chosen is None and after == before, (near, chosen, after)
else:
    assert chosen and after == set(chosen) <= set(near), (near, chosen, after)
print("ok", len(before), len(after))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr[-2000:]


def test_a_worker_leaves_at_most_a_quarter_of_its_cpus():
    assert [most_cpus_to_leave(range(n)) for n in (1, 3, 4, 7, 16)] == [0, 0, 1, 1, 4]
