"""A run's steady state: the middle of each worker's rows, from the moment STEADY_FROM (20%) of them
were done to the moment STEADY_TO (90%) of them were. Both the steady images/s (the report, the scaling table)
and the GPU busy fraction (scoring.gpu_runner) are measured over it.

Why not from the first finished batch to the end: the first quarter of a second after that batch is
not steady. On an H100 scoring 100,000 JPEGs (about 3.6 s of scoring) it ran at 9,000 to 57,000
images/s while the rest ran at 27,000-29,500, depending on how many decoded batches were waiting
when the first one finished (the decoders' first calls take 40-77 ms against 12-15 later). That
alone moved one run's figure from 0.86 to 0.97 of the engine alone
(benchmarks/results/scoring/h100_2026-11-23_s24/NOTES.md). A burst like that held up to 15% of a
100,000-row run's rows, hence a window that starts at 20%. A job of millions of rows runs at the
middle's rate; a short one's first-batch-to-end rate says more about its start than its speed.
`first_batch_to_end_rate` keeps the old figure for comparison.

Runs too short to have a middle (fewer than MIN_SAMPLES throughput samples, or MIN_BATCHES
batches) are measured whole, as before.
"""

from __future__ import annotations

import numpy as np

STEADY_FROM, STEADY_TO = 0.20, 0.90
MIN_SAMPLES = 5  # throughput samples (0.25 s apart) a run needs for its middle to be measured
MIN_BATCHES = 10  # batches between the two marks for the busy fraction's window


def first_batch_to_end_rate(samples) -> float | None:
    """Images/s from a worker's first finished batch to its last sample ((seconds, images done)
    pairs); None with fewer than two such samples."""
    points = _progress(samples)
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return None
    (t0, n0), (t1, n1) = points[0], points[-1]
    return (n1 - n0) / (t1 - t0)


def steady_rate(samples) -> float | None:
    """Images/s between the moments STEADY_FROM and STEADY_TO of the worker's images were done,
    interpolated between samples; the first-batch-to-end rate for a run with too few samples."""
    points = _progress(samples)
    if len(points) < MIN_SAMPLES:
        return first_batch_to_end_rate(samples)
    total = points[-1][1]
    low = max(STEADY_FROM * total, points[0][1])  # a first batch bigger than that starts the window
    high = STEADY_TO * total
    t_low, t_high = _time_at(points, low), _time_at(points, high)
    if high <= low or t_high <= t_low:
        return first_batch_to_end_rate(samples)
    return (high - low) / (t_high - t_low)


def steady_busy_fraction(timeline) -> float | None:
    """The GPU's busy share over the middle of a run from its batches' running totals, in order:
    (rows done, busy ms, idle ms) after each batch. Over the whole timeline where the middle holds
    fewer than MIN_BATCHES batches; None where nothing was timed."""
    if not timeline:
        return None
    rows = np.array([entry[0] for entry in timeline], np.float64)
    total = rows[-1]
    first = int(np.searchsorted(rows, STEADY_FROM * total, side="left"))
    last = int(np.searchsorted(rows, STEADY_TO * total, side="left"))
    if last - first < MIN_BATCHES:  # the whole run
        busy, idle = timeline[-1][1], timeline[-1][2]
    else:
        busy, idle = timeline[last][1] - timeline[first][1], timeline[last][2] - timeline[first][2]
    return busy / (busy + idle) if busy + idle > 0 else None


def _progress(samples) -> list[tuple[float, int]]:
    return [(float(t), int(n)) for t, n in samples if int(n) > 0]


def _time_at(points: list[tuple[float, int]], images: float) -> float:
    """When `images` were done: linear between the samples around it (counts never fall)."""
    counts = np.array([n for _, n in points], np.float64)
    i = int(np.searchsorted(counts, images, side="left"))
    if i == 0:
        return points[0][0]
    if i >= len(points):
        return points[-1][0]
    (t0, n0), (t1, n1) = points[i - 1], points[i]
    return t0 + (images - n0) / (n1 - n0) * (t1 - t0)
