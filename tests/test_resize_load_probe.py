"""benchmarks/device/resize_load_probe.py: its arguments and its pacing (the GPU part runs on the device)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "device"))

import resize_load_probe as probe  # noqa: E402


def test_sizes_and_rates_parse_or_say_what_is_wrong():
    assert probe.parse_size("500x375") == (500, 375)
    assert probe.parse_rates("13000, max,2.5e4") == [13000.0, None, 25000.0]
    for bad in ("500", "ax3", "0x5"):
        with pytest.raises(argparse.ArgumentTypeError, match="size must be"):
            probe.parse_size(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="images/s or 'max', got 'fast'"):
        probe.parse_rates("100,fast")
    with pytest.raises(argparse.ArgumentTypeError, match="must be positive"):
        probe.parse_rates("-5")


class FakeTime:
    def __init__(self, batch_s: float):
        self.now, self.batch_s, self.slept = 0.0, batch_s, 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds

    def run_batch(self) -> None:
        self.now += self.batch_s


def test_paced_holds_the_rate_and_back_to_back_does_not_sleep():
    t = FakeTime(batch_s=0.001)  # 256 images in 1 ms: 256,000 images/s flat out
    reached = probe.paced(t.run_batch, 25_600.0, 1.0, batch=256, clock=t.clock, sleep=t.sleep)
    assert reached == pytest.approx(25_600, rel=0.02) and t.slept > 0.8
    t = FakeTime(batch_s=0.001)
    assert probe.paced(t.run_batch, None, 1.0, batch=256, clock=t.clock, sleep=t.sleep) == pytest.approx(256_000)
    assert t.slept == 0.0


def test_a_rate_above_what_the_kernel_reaches_is_not_slept_for():
    t = FakeTime(batch_s=0.01)  # 25,600 images/s at most
    reached = probe.paced(t.run_batch, 1e9, 0.5, batch=256, clock=t.clock, sleep=t.sleep)
    assert reached == pytest.approx(25_600) and t.slept == 0.0
