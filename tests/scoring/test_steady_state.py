"""The steady state's images/s and GPU busy share: the middle of a run's rows."""

import pytest

from scoring.steady_state import (MIN_BATCHES, MIN_SAMPLES, first_batch_to_end_rate, steady_busy_fraction,
                                  steady_rate)


def _samples(rates, every=0.25, start=5.0, first_batch=256):
    """Throughput samples as Metrics.tick keeps them: (seconds, images done), one per `every`
    seconds after the first batch, the images of each interval at that interval's rate."""
    samples, t, done = [(start, first_batch)], start, first_batch
    for rate in rates:
        t += every
        done += round(rate * every)
        samples.append((t, done))
    return samples


def test_a_slow_start_is_left_out():
    # the decoders' first calls: the first 0.25 s after the first batch at 10,000 images/s
    samples = _samples([10_000] + [28_000] * 14)
    assert steady_rate(samples) == pytest.approx(28_000, rel=1e-3)
    assert first_batch_to_end_rate(samples) < 27_000


def test_a_backlog_at_the_start_does_not_inflate_it():
    # batches decoded while the first one computed: a burst (14% of the rows), then the steady rate
    samples = _samples([57_000] + [28_000] * 14)
    assert steady_rate(samples) == pytest.approx(28_000, rel=1e-3)
    assert first_batch_to_end_rate(samples) > 29_000


def test_a_slow_tail_is_left_out():
    samples = _samples([28_000] * 14 + [5_000])
    assert steady_rate(samples) == pytest.approx(28_000, rel=1e-3)


def test_interpolates_between_samples():
    # a constant rate, samples at uneven times: the middle is exact wherever its marks fall
    times = [0.0, 0.1, 0.45, 0.5, 1.3, 1.31, 2.0, 3.7]
    samples = [(t, 100 + round(1000 * t)) for t in times]
    assert steady_rate(samples) == pytest.approx(1000, rel=1e-3)


def test_a_first_batch_beyond_the_first_mark_starts_the_window():
    samples = [(1.0, 300), (2.0, 400), (3.0, 500), (4.0, 600), (5.0, 700), (6.0, 800)]
    # 20% of 800 is 160, before the first batch's 300: the window starts there
    assert steady_rate(samples) == pytest.approx((0.9 * 800 - 300) / (5.2 - 1.0), rel=1e-6)


def test_a_final_sample_with_no_new_rows_changes_nothing():
    samples = _samples([28_000] * 12)
    ended = samples + [(samples[-1][0] + 0.02, samples[-1][1])]  # Metrics.finish's closing sample
    assert steady_rate(ended) == pytest.approx(steady_rate(samples))


def test_short_runs_are_measured_whole():
    samples = _samples([10_000] + [28_000] * (MIN_SAMPLES - 3))
    assert len(samples) == MIN_SAMPLES - 1
    assert steady_rate(samples) == first_batch_to_end_rate(samples)
    assert steady_rate([(1.0, 256)]) is None and steady_rate([]) is None
    assert steady_rate([(0.5, 0), (1.0, 256), (2.0, 512)]) == pytest.approx(256)  # zeros are not progress


def _timeline(batches):
    """Running totals after each batch: (rows done, busy ms, idle ms), from (rows, busy, idle) each."""
    out, rows, busy, idle = [], 0, 0.0, 0.0
    for r, b, i in batches:
        rows, busy, idle = rows + r, busy + b, idle + i
        out.append((rows, busy, idle))
    return out


def test_busy_share_over_the_middle():
    # 100 batches: the first 8 wait 5 ms each for the decoders, the rest 0.4 ms
    timeline = _timeline([(256, 8.8, 5.0)] * 8 + [(256, 8.8, 0.4)] * 92)
    assert steady_busy_fraction(timeline) == pytest.approx(8.8 / 9.2)
    whole = timeline[-1][1] / (timeline[-1][1] + timeline[-1][2])
    assert whole < 8.8 / 9.2 - 0.01


def test_busy_share_of_a_short_run_is_the_whole_run():
    timeline = _timeline([(256, 8.0, 2.0)] * 2 + [(256, 8.0, 0.0)] * (MIN_BATCHES - 1))
    assert steady_busy_fraction(timeline) == pytest.approx(8.0 * (MIN_BATCHES + 1) / (8.0 * (MIN_BATCHES + 1) + 4.0))
    assert steady_busy_fraction([]) is None
    assert steady_busy_fraction([(256, 0.0, 0.0)]) is None


def test_busy_share_follows_rows_not_batches():
    # a last partial batch of 16 rows is a batch, but hardly any of the rows
    timeline = _timeline([(256, 8.8, 0.0)] * 40 + [(16, 0.5, 30.0)])
    assert steady_busy_fraction(timeline) == pytest.approx(1.0)
