"""How fast each CPU of this host runs the same work, now: a pure-Python loop pinned to each CPU in
turn, its best of `--repeats` timings, and each CPU's time spent on interrupts and stolen by the
hypervisor over the probe (/proc/stat). For issue #5: on the H100 hosts the workers' slow-CPU
watch (scoring.slow_cpus) marked CPU 14 in most runs (threads 2-7x slower there), and this says
whether a probe at start-up could have found it.

    python benchmarks/device/cpu_speed_probe.py [--repeats 5] [--seconds 0] -> one JSON line

--seconds S repeats the sweep for S seconds (0: once). A probe for the device, not part of batchscore.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def loop_ms(n: int = 200_000) -> float:
    start = time.perf_counter()
    total = 0
    for i in range(n):
        total += i
    return (time.perf_counter() - start) * 1e3


def cpu_times() -> dict[int, dict[str, int]]:
    """Per CPU: irq, softirq and steal ticks from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts[0].startswith("cpu") and parts[0] != "cpu":
                values = [int(v) for v in parts[1:]]
                out[int(parts[0][3:])] = {"irq": values[5], "softirq": values[6], "steal": values[7]}
    return out


def sweep(cpus: list[int], repeats: int) -> dict[int, float]:
    best = {}
    for cpu in cpus:
        os.sched_setaffinity(0, {cpu})
        loop_ms(20_000)  # settle on the CPU
        best[cpu] = round(min(loop_ms() for _ in range(repeats)), 3)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.0)
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    before = cpu_times()
    sweeps = []
    start = time.perf_counter()
    while True:
        sweeps.append(sweep(cpus, args.repeats))
        if time.perf_counter() - start >= args.seconds:
            break
    after = cpu_times()
    os.sched_setaffinity(0, set(cpus))
    ticks = {cpu: {k: after[cpu][k] - before[cpu][k] for k in after[cpu]} for cpu in cpus if cpu in before}
    worst = {cpu: max(s[cpu] for s in sweeps) for cpu in cpus}
    best = {cpu: min(s[cpu] for s in sweeps) for cpu in cpus}
    print(json.dumps({"cpus": cpus, "sweeps": len(sweeps), "best_ms": best, "worst_ms": worst,
                      "ticks": ticks, "clock_ticks_per_s": os.sysconf("SC_CLK_TCK")}))


if __name__ == "__main__":
    main()
