"""Keep a GPU worker's busy threads off the CPUs that run them slowly ([run] avoid_slow_cpus).

Why: on the 4 x H200 hosts (virtual machines whose guest sees one socket and one NUMA node) a few
vCPUs run the same work slower. On five machines sampled, a worker's reader thread used 1.7-3.0x
its usual CPU on some of CPUs 14-20 and its decoders 1.3-1.5x, and that worker straggled for the
whole run (benchmarks/results/scaling/h200x4_2026-11-22_s11_baseline/NOTES.md). Linux moves a
thread to balance load, not because its CPU is slow, so a busy thread that starts on such a CPU
stays there.

How: each watched thread (the pipeline's reader and decoders, the worker's main loop) tells its
ThreadWatch after each batch how many rows it handled. Every WINDOW_S seconds the watch works out
the thread's CPU time per row on the CPU it ran on. time.thread_time leaves waiting out (where the
wait sleeps), so the figure measures the CPU's speed at this work, not how busy the worker is.
Once, after a warm-up window, the thread steps off to the far half of its CPUs for one window, to
have a figure to compare with; whenever the work costs SLOW_RATIO times or more on one CPU what it
cost on another, that CPU is marked slow and every thread of the process leaves it (against the
median of the other CPUs it was measured on, so that one cheap window elsewhere does not condemn
the rest). At most a quarter of the process's CPUs are
marked. Linux only (sched_getcpu and per-thread affinity); elsewhere, or with fewer than MIN_CPUS,
nothing is watched.

Only GPU workers are watched unless the job says "on": on the CPU backend the model's own threads
(BLAS) want every core, and leaving a CPU would take it from them too. The worker's main loop is
watched only where its waits for the GPU sleep ([run] gpu_wait, scoring.gpu_wait): spinning in
them, its CPU per row followed how long it waited (19 to 31 us per row on one worker in one run),
and watched then, it marked sixteen CPUs of 64 on the strength of one cheap window (session 11,
call 5).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

from scoring.affinity import most_cpus_to_leave, pin_process
from scoring.libc import linux_libc

log = logging.getLogger("batchscore.run")

SLOW_RATIO = 1.5  # per row, the reader and decoders cost 1.6-4.5x on the slow CPUs that were left
WINDOW_S = 0.5  # about 15,000 rows at a worker's 30,000 images/s
MIN_ROWS = 256  # a window needs at least a batch to say anything
WARMUP_WINDOWS = 1  # a thread's first window (imports, first file opens) is not compared
MIN_CPUS = 4  # with fewer, leaving one out costs more than it can save


@dataclass(frozen=True)
class SlowCpu:
    """Why a CPU was left: `thread` did its work at `us_per_row` there and `elsewhere_us_per_row`
    on `elsewhere`."""

    cpu: int
    thread: str
    us_per_row: float
    elsewhere: int
    elsewhere_us_per_row: float

    def as_dict(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def describe(found: dict) -> str:
    """A SlowCpu's dict in words: "CPU 15 (read thread: 44 µs of CPU per row there, 15 on CPU 47)"."""
    return (f"CPU {found['cpu']} ({found['thread']} thread: {found['us_per_row']:,.0f} µs of CPU per row there, "
            f"{found['elsewhere_us_per_row']:,.0f} on CPU {found['elsewhere']})")


def current_cpu() -> int | None:
    """The CPU the calling thread runs on (sched_getcpu), or None where that cannot be asked."""
    libc = linux_libc()
    try:
        cpu = libc.sched_getcpu() if libc is not None else -1
    except AttributeError:
        return None
    return cpu if cpu >= 0 else None


def _pin_this_thread(cpus: set[int]) -> None:
    try:
        os.sched_setaffinity(0, cpus)  # on Linux, 0 is the calling thread, not the process
    except OSError:  # a CPU taken from the process meanwhile
        pass


def _pin_this_process(cpus: set[int]) -> None:
    try:
        pin_process(sorted(cpus))
    except OSError:  # a CPU taken from the process meanwhile (threads that ended are skipped there)
        pass


_this_process: dict[int, SlowCpus] = {}  # pid -> SlowCpus.for_this_process()


class SlowCpus:
    """The CPUs one process avoids, shared by the ThreadWatches it hands out (watch()). `allowed`
    is what the process may use (after any pinning). The rest reach the operating system, and tests
    replace them: `pin_thread(cpus)` (the calling thread), `pin_process(cpus)` (every thread of the
    process), `clock()` (wall seconds), `cpu_clock()` (the calling thread's CPU seconds) and
    `where()` (the calling thread's CPU)."""

    def __init__(self, allowed: set[int], *, pin_thread: Callable[[set[int]], None] = _pin_this_thread,
                 pin_process: Callable[[set[int]], None] = _pin_this_process,
                 clock: Callable[[], float] = time.monotonic, cpu_clock: Callable[[], float] = time.thread_time,
                 where: Callable[[], int | None] = current_cpu):
        self.allowed = frozenset(allowed)
        self.max_slow = most_cpus_to_leave(self.allowed)
        self.found: list[SlowCpu] = []
        self.watches: list[ThreadWatch] = []
        self.pin_thread, self.pin_process = pin_thread, pin_process
        self.clock, self.cpu_clock, self.where = clock, cpu_clock, where
        self._lock = threading.Lock()

    def watch(self, name: str) -> ThreadWatch:
        """A watch for the calling thread, named for the report ("read", "decode-0")."""
        w = ThreadWatch(self, name)
        with self._lock:
            self.watches.append(w)
        return w

    @classmethod
    def for_this_process(cls) -> SlowCpus | None:
        """The process's own, or None where nothing can be watched (not Linux, too few CPUs). A
        process that scores again gets the same one back: what it learnt holds, and the CPUs it
        left (no longer in its affinity) are not taken for all it may use."""
        global _this_process
        if not hasattr(os, "sched_getaffinity") or current_cpu() is None:
            return None
        allowed = os.sched_getaffinity(0)
        mine = _this_process.get(os.getpid())
        if mine is not None and allowed <= mine.allowed:
            return mine
        if len(allowed) < MIN_CPUS:
            return None
        _this_process = {os.getpid(): cls(allowed)}  # a forked child starts its own
        return _this_process[os.getpid()]

    def leave(self, cpus) -> None:
        """No longer use `cpus` at all (the process left them for another reason: scoring.irq_cpus)."""
        with self._lock:
            self.allowed = self.allowed - frozenset(cpus)

    @property
    def slow(self) -> frozenset[int]:
        return frozenset(s.cpu for s in self.found)

    def usable(self, also_avoid: frozenset[int] | set[int] = frozenset()) -> set[int]:
        """The allowed CPUs less the slow ones (and `also_avoid`, unless that would leave none)."""
        usable = set(self.allowed - self.slow)
        return (usable - set(also_avoid)) or usable

    def far_half(self, cpu: int) -> set[int]:
        """The usable CPUs farther than a quarter of the allowed list from `cpu` (cyclically): slow
        CPUs came in runs (14-20), and Linux places a thread near where it was."""
        order = sorted(self.allowed)
        n = len(order)
        at = order.index(cpu) if cpu in order else 0
        far = {order[(at + k) % n] for k in range(n // 4 + 1, n - n // 4)}
        return self.usable() & far or self.usable(also_avoid={cpu})

    def mark(self, found: SlowCpu) -> bool:
        """Leave `found.cpu` on every thread of the process; whether it was newly marked."""
        with self._lock:
            if found.cpu in self.slow or found.cpu not in self.allowed or len(self.found) >= self.max_slow:
                return False
            self.found.append(found)
            self.pin_process(self.usable())
        log.info("leaving slow %s", describe(found.as_dict()))
        return True

    def report(self) -> list[dict]:
        return [s.as_dict() for s in self.found]


class ThreadWatch:
    """One thread's watch (SlowCpus.watch): call note(rows) on that thread after each batch."""

    def __init__(self, cpus: SlowCpus, name: str):
        self.cpus, self.name = cpus, name
        self._clock, self._cpu_clock, self._where = cpus.clock, cpus.cpu_clock, cpus.where
        self.cost: dict[int, float] = {}  # CPU -> the latest window's CPU seconds per row there
        self.rows = 0  # every row noted
        self.windows = 0
        self._stepped_off: int | None = None  # the CPU left for the comparison window
        self._has_stepped = False
        self._stopped = False
        self._begin()

    def _begin(self) -> None:
        self._t0, self._cpu0, self._rows, self._at = self._clock(), self._cpu_clock(), 0, self._where()

    def note(self, rows: int) -> None:
        self.rows += rows
        if self._stopped:
            return
        try:
            self._note(rows)
        except Exception:  # a watch is a help to the job, never a reason for it to fail
            self._stopped = True
            log.warning("the slow-CPU watch of the %s thread stopped", self.name, exc_info=True)

    def _note(self, rows: int) -> None:
        self._rows += rows
        if self._clock() - self._t0 < WINDOW_S or self._rows < MIN_ROWS:
            return
        cpu = self._where()
        if cpu is not None and cpu == self._at:  # a window split over two CPUs says nothing
            self._window(cpu, (self._cpu_clock() - self._cpu0) / self._rows)
        self._begin()

    def _window(self, cpu: int, cost: float) -> None:
        self.windows += 1
        if self.windows <= WARMUP_WINDOWS:
            return
        self.cost[cpu] = cost
        if self._stepped_off is not None:
            left, self._stepped_off = self._stepped_off, None
            if cpu == left or not self._judge(left, cpu):
                self.cpus.pin_thread(self.cpus.usable())  # back among all usable CPUs
            return
        others = sorted((v, c) for c, v in self.cost.items() if c != cpu and c not in self.cpus.slow)
        if others and self._judge(cpu, others[len(others) // 2][1]):  # the median (the upper of two)
            return
        if not self._has_stepped:
            self._has_stepped, self._stepped_off = True, cpu
            self.cpus.pin_thread(self.cpus.far_half(cpu))

    def _judge(self, suspect: int, other: int) -> bool:
        """Mark `suspect` slow if this thread's work cost SLOW_RATIO times more there than on
        `other`; whether it did."""
        there, elsewhere = self.cost.get(suspect), self.cost.get(other)
        if there is None or elsewhere is None or there < SLOW_RATIO * elsewhere:
            return False
        return self.cpus.mark(SlowCpu(suspect, self.name, 1e6 * there, other, 1e6 * elsewhere))


class NoWatch:
    """Where nothing is watched: note() does nothing."""

    def note(self, rows: int) -> None:
        pass


def watch(cpus: SlowCpus | None, name: str) -> ThreadWatch | NoWatch:
    """The calling thread's watch (call it on that thread), or a NoWatch where `cpus` is None."""
    return cpus.watch(name) if cpus is not None else NoWatch()
