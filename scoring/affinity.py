"""Pin a GPU worker to the CPU cores next to its GPU ([run] pin_cpus).

On a host with several CPU sockets (or NUMA nodes), each GPU hangs off one of them. A worker whose
threads run on another socket reads its Parquet, decodes and copies across the socket link. On 4
H200s with `mpirun --bind-to none`, each of four workers decoded 45-60% slower per image than one
worker alone (benchmarks/results/scaling/h200x4_2026-11-22_s4*), which is what that would look like;
pinning is the usual cure, and this module does it from the GPU's own PCI address, whatever the
launcher. Linux only: where sysfs has no `local_cpulist` for the GPU, nothing is pinned.

Decode threads are counted before pinning (the host's cores shared among its workers), so two
workers whose GPUs share a socket keep their share of it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("batchscore.run")

SYSFS_PCI = Path("/sys/bus/pci/devices")


def most_cpus_to_leave(allowed) -> int:
    """How many of the `allowed` CPUs a worker may stop using for any one reason (slow ones:
    scoring.slow_cpus; the GPU's interrupt CPUs: scoring.irq_cpus): a quarter, so its threads keep
    most of what the launcher gave it."""
    return len(allowed) // 4


def parse_cpulist(text: str) -> list[int]:
    """The CPUs of a Linux cpulist ("0-3,8,10-11"), sorted; ValueError on anything else."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if low < 0 or high < low:
            raise ValueError(f"bad cpulist range {part!r} in {text!r}")
        cpus.update(range(low, high + 1))
    return sorted(cpus)


def local_cpus(pci_bus_id: str, sysfs: Path = SYSFS_PCI) -> list[int] | None:
    """The CPUs next to the PCI device `pci_bus_id` ("0000:1B:00.0"), or None where sysfs does not say."""
    path = sysfs / pci_bus_id.lower() / "local_cpulist"
    try:
        return parse_cpulist(path.read_text()) or None
    except (OSError, ValueError):
        return None


def pin_process(cpus: list[int]) -> None:
    """Every thread of this process onto `cpus`; threads and processes started later inherit it."""
    tasks = Path("/proc/self/task")
    ids = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]
    for tid in ids:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


def pin_to_gpu(device_id: int = 0) -> list[int] | None:
    """Pin this process to the CPUs next to CUDA device `device_id` (of those it may use); returns
    them, or None where there is nothing to do (no sysfs entry, or they are already all it has)."""
    import cupy

    bus_id = cupy.cuda.runtime.deviceGetPCIBusId(device_id)
    near = local_cpus(bus_id)
    if near is None:
        log.info("pin_cpus: sysfs gives no local CPUs for GPU %s; not pinned", bus_id)
        return None
    allowed = os.sched_getaffinity(0)
    chosen = sorted(set(near) & allowed)
    if not chosen or len(chosen) == len(allowed):
        return None
    pin_process(chosen)
    log.info("pinned to the %d CPUs next to GPU %s", len(chosen), bus_id)
    return chosen
