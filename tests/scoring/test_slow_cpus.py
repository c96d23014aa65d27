"""scoring.slow_cpus: a thread's CPU time per row, CPU by CPU, and the CPUs its process leaves.

The operating system (clocks, the CPU a thread is on, affinity) is replaced by FakeOs, which
runs one thread at a time on a CPU of the test's choosing at a cost per row the test sets."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

from scoring.slow_cpus import MIN_ROWS, WINDOW_S, SlowCpu, SlowCpus, current_cpu, watch


class FakeOs:
    """CPUs with a cost per row each; the calling thread is on `cpu`; note() spends its CPU time."""

    def __init__(self, cpu: int, cost_us: dict[int, float], default_us: float = 20.0):
        self.cpu, self.cost_us, self.default_us = cpu, cost_us, default_us
        self.now, self.cpu_s = 0.0, 0.0
        self.own_affinity: list[set[int]] = []  # what the watched thread set for itself
        self.process_affinity: list[set[int]] = []  # what mark() set on every thread

    def spend(self, rows: int) -> None:
        """The thread handles `rows` on its CPU over a window's worth of wall time."""
        self.cpu_s += rows * self.cost_us.get(self.cpu, self.default_us) * 1e-6
        self.now += WINDOW_S

    def pin_thread(self, cpus: set[int]) -> None:
        self.own_affinity.append(set(cpus))
        if self.cpu not in cpus:  # the kernel moves the thread at once
            self.cpu = min(cpus)

    def pin_process(self, cpus: set[int]) -> None:
        self.process_affinity.append(set(cpus))

    def slow_cpus(self, allowed=range(64)) -> SlowCpus:
        return SlowCpus(set(allowed), pin_thread=self.pin_thread, pin_process=self.pin_process,
                        clock=lambda: self.now, cpu_clock=lambda: self.cpu_s, where=lambda: self.cpu)


def run_windows(fake: FakeOs, w, windows: int, rows: int = 10_000) -> None:
    for _ in range(windows):
        fake.spend(rows)
        w.note(rows)


def test_a_thread_that_starts_on_a_slow_cpu_steps_off_and_the_process_leaves_that_cpu():
    fake = FakeOs(cpu=15, cost_us={15: 44.0})
    cpus = fake.slow_cpus()
    w = cpus.watch("read")
    run_windows(fake, w, 2)  # warm-up, then a window on CPU 15
    assert fake.own_affinity, "after its first measured window the thread steps off its CPU"
    stepped_to = fake.own_affinity[-1]
    assert 15 not in stepped_to and not stepped_to & set(range(8, 23)), "the far half: slow CPUs come in runs"
    assert fake.cpu in stepped_to
    run_windows(fake, w, 1)  # a window on the far CPU, at 20 us per row
    assert cpus.slow == {15}
    found = cpus.found[0]
    assert (found.thread, found.elsewhere) == ("read", fake.cpu)
    assert found.us_per_row == pytest.approx(44.0) and found.elsewhere_us_per_row == pytest.approx(20.0)
    assert fake.process_affinity == [set(range(64)) - {15}]
    assert cpus.report() == [found.as_dict()]


def test_a_thread_on_an_ordinary_cpu_steps_off_once_and_goes_back_among_all():
    fake = FakeOs(cpu=3, cost_us={})
    cpus = fake.slow_cpus()
    w = cpus.watch("decode-0")
    run_windows(fake, w, 3)
    assert cpus.slow == frozenset() and fake.process_affinity == []
    assert fake.own_affinity[-1] == set(range(64)), "after the comparison the thread may run anywhere again"
    steps = len(fake.own_affinity)
    run_windows(fake, w, 5)
    assert len(fake.own_affinity) == steps, "it steps off once, not every window"


def test_a_thread_that_lands_on_a_slow_cpu_later_leaves_it():
    fake = FakeOs(cpu=3, cost_us={17: 40.0})
    cpus = fake.slow_cpus()
    w = cpus.watch("read")
    run_windows(fake, w, 3)  # warm-up, CPU 3, its comparison window elsewhere
    fake.cpu = 17  # the scheduler moves it: the window it moved in is not counted, the next is
    run_windows(fake, w, 1)
    assert cpus.slow == frozenset()
    run_windows(fake, w, 1)
    assert cpus.slow == {17}
    assert cpus.found[0].us_per_row == pytest.approx(40.0)


def test_one_cheap_window_elsewhere_does_not_condemn_the_other_cpus():
    """Against the median of the other CPUs, not their cheapest: a thread whose work is sometimes
    cheap for reasons of its own (a main loop that waits) marks nothing."""
    fake = FakeOs(cpu=3, cost_us={})
    cpus = fake.slow_cpus()
    w = cpus.watch("decode-0")
    run_windows(fake, w, 3)  # warm-up, CPU 3, the comparison window elsewhere: 20 us each
    for cpu in (5, 7):
        fake.cpu = cpu
        run_windows(fake, w, 2)
    fake.cost_us[9] = 12.0  # one cheap window on CPU 9
    fake.cpu = 9
    run_windows(fake, w, 2)
    for cpu in (11, 13, 40):  # 20 us again: 1.67x the cheapest, 1.0x the median
        fake.cpu = cpu
        run_windows(fake, w, 2)
    assert cpus.slow == frozenset()


def test_a_difference_under_the_ratio_marks_nothing():
    fake = FakeOs(cpu=15, cost_us={15: 28.0})  # 1.4x: within what one window's mix of work can move
    cpus = fake.slow_cpus()
    run_windows(fake, cpus.watch("decode-1"), 4)
    assert cpus.slow == frozenset()


def test_the_first_window_is_only_a_warm_up():
    fake = FakeOs(cpu=15, cost_us={15: 44.0})
    cpus = fake.slow_cpus()
    w = cpus.watch("read")
    run_windows(fake, w, 1)
    assert w.cost == {} and fake.own_affinity == []


def test_a_window_split_over_two_cpus_is_not_counted():
    fake = FakeOs(cpu=15, cost_us={15: 44.0})
    cpus = fake.slow_cpus()
    w = cpus.watch("read")
    run_windows(fake, w, 1)
    fake.spend(10_000)
    fake.cpu = 40  # moved during the window
    w.note(10_000)
    assert w.cost == {} and w.windows == 1


def test_short_windows_wait_for_enough_rows_and_time():
    fake = FakeOs(cpu=15, cost_us={15: 44.0})
    cpus = fake.slow_cpus()
    w = cpus.watch("read")
    for _ in range(20):  # plenty of time, too few rows
        fake.spend(MIN_ROWS // 40)
        w.note(MIN_ROWS // 40)
    assert w.windows == 0
    w = cpus.watch("decode-0")
    w.note(100_000)  # plenty of rows, no time
    assert w.windows == 0
    fake.now += WINDOW_S
    w.note(1)
    assert w.windows == 1 and w.rows == 100_001


def test_at_most_a_quarter_of_the_cpus_are_left():
    cpus = SlowCpus(set(range(8)), pin_thread=lambda c: None, pin_process=lambda c: None)
    marked = [cpus.mark(SlowCpu(c, "read", 40.0, 7, 20.0)) for c in range(4)]
    assert marked == [True, True, False, False] and cpus.slow == {0, 1}
    assert not cpus.mark(SlowCpu(0, "read", 40.0, 7, 20.0)), "once is enough"
    assert not cpus.mark(SlowCpu(99, "read", 40.0, 7, 20.0)), "a CPU the process may not use"
    assert cpus.usable() == set(range(2, 8))
    assert cpus.usable(also_avoid=set(range(2, 8))) == set(range(2, 8)), "never no CPU at all"


def test_cpus_left_for_another_reason_are_never_used_again():
    cpus = SlowCpus(set(range(16)), pin_thread=lambda c: None, pin_process=lambda c: None)
    cpus.leave([14])  # the GPU's interrupts go there (scoring.irq_cpus)
    assert 14 not in cpus.usable() and 14 not in cpus.far_half(3)
    assert not cpus.mark(SlowCpu(14, "read", 40.0, 7, 20.0)), "no longer the process's CPU"
    assert cpus.mark(SlowCpu(5, "read", 40.0, 7, 20.0)) and cpus.usable() == set(range(16)) - {5, 14}


def test_far_half_leaves_out_the_neighbourhood_cyclically():
    cpus = SlowCpus(set(range(64)))
    assert cpus.far_half(14) == set(range(31, 62))
    assert cpus.far_half(62) == set(range(15, 46))  # 62 + 17 wraps round to 15
    few = SlowCpus({2, 3, 5, 8})
    assert few.far_half(2) == {5}, "with four CPUs: the one opposite"


def test_a_watch_that_fails_stops_without_failing_its_thread(caplog):
    fake = FakeOs(cpu=3, cost_us={})
    cpus = fake.slow_cpus()
    w = cpus.watch("read")
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("sched_getcpu went away")

    cpus.where = w._where = broken
    with caplog.at_level("WARNING", logger="batchscore.run"):
        run_windows(fake, w, 3)  # no exception reaches the caller
    assert len(calls) == 1 and w.rows == 30_000, "it stopped at the first failure and still counts rows"
    assert "slow-CPU watch of the read thread stopped" in caplog.text


def test_watch_without_slow_cpus_does_nothing():
    w = watch(None, "read")
    w.note(1_000_000)  # no error, no state


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sched_getcpu is Linux's")
def test_current_cpu_is_one_this_process_may_use():
    assert current_cpu() in os.sched_getaffinity(0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sched_getcpu is Linux's")
def test_a_process_that_scores_again_keeps_what_it_learnt(monkeypatch):
    from scoring import slow_cpus

    affinity = set(range(16))
    monkeypatch.setattr(slow_cpus.os, "sched_getaffinity", lambda pid: set(affinity))
    monkeypatch.setattr(slow_cpus, "_this_process", {})
    first = SlowCpus.for_this_process()
    assert first is not None and first.allowed == frozenset(range(16))
    first.pin_process = lambda cpus: None  # not this test process's threads
    first.mark(SlowCpu(5, "read", 40.0, 9, 20.0))
    affinity.discard(5)  # what mark() did to the process
    again = SlowCpus.for_this_process()
    assert again is first and again.slow == {5} and again.allowed == frozenset(range(16))
    affinity.update({16, 17})  # the process was given other CPUs: start afresh
    assert SlowCpus.for_this_process() is not first
    monkeypatch.setattr(slow_cpus, "_this_process", {})
    affinity.clear()
    affinity.update({0, 1, 2})
    assert SlowCpus.for_this_process() is None, "too few CPUs to leave one"


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs sched_getaffinity")
def test_for_this_process_watches_only_with_enough_cpus():
    cpus = SlowCpus.for_this_process()
    if len(os.sched_getaffinity(0)) < 4:
        assert cpus is None
    else:
        assert cpus is not None and cpus.allowed == frozenset(os.sched_getaffinity(0))


def test_the_prefetcher_notes_every_row_on_its_reader_and_decoders(tmp_path):
    """Wiring: the pipeline's reader and each decoder thread note the rows they handle."""
    from scoring.dataset import open_dataset
    from scoring.decode import CpuDecoder, Preprocess
    from scoring.make_data import make_dataset
    from scoring.pipeline import HostRing, Prefetcher

    make_dataset(tmp_path / "d", rows=40, row_groups=4, seed=3)
    dataset = open_dataset(tmp_path / "d")
    pre = Preprocess(resize_shorter=40, crop=32)
    lock = threading.Lock()
    ticks = [0.0]

    def clock():  # every call a window's worth: the watches measure as they go
        with lock:
            ticks[0] += WINDOW_S
            return ticks[0]

    cpus = SlowCpus(set(range(8)), pin_thread=lambda c: None, pin_process=lambda c: None, clock=clock,
                    where=lambda: 3)
    decoders = [CpuDecoder(pre, 1), CpuDecoder(pre, 1)]
    ring = HostRing(4, 8, pre.output_shape, np.float32)
    with Prefetcher(dataset, dataset.shards(20), decoders, ring, 8, slow_cpus=cpus) as batches:
        rows = 0
        for slot in batches:
            rows += slot.rows
            batches.release(slot)
    names = sorted(w.name for w in cpus.watches)
    assert names == ["decode-0", "decode-1", "read"]
    by_name = {w.name: w.rows for w in cpus.watches}
    assert rows == 40 and by_name["read"] == 40
    assert by_name["decode-0"] + by_name["decode-1"] == 40
