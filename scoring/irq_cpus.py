"""Keep a GPU worker's busy threads off the CPUs that take the GPUs' interrupts.

Why: on the H100 hosts the NVIDIA driver's interrupt is delivered to one CPU, 14: 155,293 of them
over two scoring runs, every one on CPU 14, and none elsewhere (/proc/interrupts, irq 42 "nvidia";
benchmarks/results/scoring/h100_2026-11-23_s24/call7). A decoder thread that ran there did its work
4.5-9 times slower than elsewhere. The slow-CPU watch (scoring.slow_cpus) marked CPU 14 in most runs
of that session, on every machine, but only after half a second or more of the slow work: those
runs' throughput dipped to 18,000-22,000 images/s meanwhile, against 27,000-29,000.

How: /proc/interrupts names each interrupt's handlers; those of the "nvidia" driver are the GPUs',
and the ones that have fired most carry its load (busy_irqs). Each one's CPUs come from
/proc/irq/N/effective_affinity_list (where the kernel delivers it; else smp_affinity_list, where it
may). An interrupt that may go to every CPU of the process names none to leave. The worker leaves
the CPUs found once its engine is loaded and warmed up (the driver has fired by then), before its
reading, decoding and writing threads start, where that leaves at least MIN_LEFT CPUs and takes no
more than a quarter of them.

    cpus = gpu_interrupt_cpus(set(os.sched_getaffinity(0)))   # {14} on those hosts
    left = leave_interrupt_cpus()       # the process pinned to the others; what it left ([14])
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from scoring.affinity import most_cpus_to_leave, parse_cpulist, pin_process

log = logging.getLogger("batchscore.run")

DRIVER = "nvidia"
MIN_LEFT = 4  # CPUs the process keeps at the least
MIN_INTERRUPTS = 100  # fewer so far (a GPU that has done nothing yet) say nothing about where they go
BUSY_SHARE = 0.10


def driver_interrupts(interrupts: str, driver: str = DRIVER) -> dict[int, int]:
    """Interrupt number -> how many times it has fired (every CPU together), for the interrupts one
    of whose handlers is `driver`, from /proc/interrupts' text: a header of CPU names, then per
    interrupt "N:", a count per CPU, the chip, the kind and the handlers (comma-separated)."""
    lines = interrupts.splitlines()
    if not lines:
        return {}
    cpus = len(lines[0].split())
    found = {}
    for line in lines[1:]:
        number, _, rest = line.strip().partition(":")
        words = rest.split()
        if not number.isdigit() or driver not in re.split(r"[\s,]+", " ".join(words[cpus:])):
            continue
        found[int(number)] = sum(int(w) for w in words[:cpus] if w.isdigit())
    return found


def busy_irqs(counts: dict[int, int]) -> list[int]:
    """The interrupts that carry the driver's load: MIN_INTERRUPTS or more, and BUSY_SHARE or more
    of the driver's total (the driver has several; on the H100 hosts one took 155,293 and the
    rest 43)."""
    total = sum(counts.values())
    return sorted(irq for irq, n in counts.items() if n >= MIN_INTERRUPTS and n >= BUSY_SHARE * total)


def irq_cpus(irq: int, proc: Path = Path("/proc")) -> set[int]:
    """The CPUs interrupt `irq` is delivered to (its effective affinity where the kernel says)."""
    for name in ("effective_affinity_list", "smp_affinity_list"):
        path = proc / "irq" / str(irq) / name
        try:
            cpus = set(parse_cpulist(path.read_text()))
        except (OSError, ValueError):  # missing, or not what this kernel writes: ask the next file
            continue
        if cpus:
            return cpus
    return set()


def gpu_interrupt_cpus(allowed: set[int], proc: Path = Path("/proc")) -> set[int]:
    """Of `allowed`, the CPUs that take the GPUs' interrupts; none where that cannot be read or an
    interrupt may go to any of them."""
    try:
        interrupts = (proc / "interrupts").read_text()
    except OSError:
        return set()
    found: set[int] = set()
    for irq in busy_irqs(driver_interrupts(interrupts)):
        cpus = irq_cpus(irq, proc) & allowed
        if cpus and cpus != allowed:
            found |= cpus
    return found


def cpus_text(cpus) -> str:
    """CPUs in words, for the log and the report: "CPU 14", "CPUs 5, 6"."""
    cpus = sorted(cpus)
    return f"CPU{'s' if len(cpus) > 1 else ''} {', '.join(map(str, cpus))}"


def leave_interrupt_cpus(proc: Path = Path("/proc"), pin=pin_process, allowed: set[int] | None = None) -> list[int]:
    """Pin this process off the CPUs that take the GPUs' interrupts, where enough are left (see
    the module); the CPUs it left, sorted (none: nothing changed). `allowed`: the CPUs the process
    may use (its affinity by default)."""
    if allowed is None:
        if not hasattr(os, "sched_getaffinity"):
            return []
        allowed = set(os.sched_getaffinity(0))
    try:
        busy = gpu_interrupt_cpus(allowed, proc)
    except Exception:  # a help to the job, never a reason for it to fail
        log.warning("could not read where the GPU's interrupts go", exc_info=True)
        return []
    keep = allowed - busy
    if not busy or len(keep) < MIN_LEFT or len(busy) > most_cpus_to_leave(allowed):
        return []
    try:
        pin(sorted(keep))
    except OSError:
        return []
    log.info("leaving %s: the GPU's interrupts go there", cpus_text(busy))
    return sorted(busy)
