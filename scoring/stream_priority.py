"""CUDA stream priorities of a GPU worker's streams: the decoders' and the engine's.

Lower numbers run first: when both streams have thread blocks waiting, the GPU schedules the
higher-priority stream's blocks as SMs free up. CUDA clamps a value beyond the GPU's range
(on Hopper, -5 to 0) to the nearest end, so -1000 means "the greatest" on any GPU.

The decoders run above the engine. The other way round, ResNet-50 FP16 on an H100 lost the GPU
time the decoders' kernels took from it (the engine's "compute" stage fell from 9.0 to 8.7 ms a
batch), but the decoders fell behind: 23,176-23,358 images/s steady (GPU busy 0.81) against
24,717-24,880 (0.88-0.89), alternating in one call (benchmarks/results/scoring/
scoring_gpu_e2e_h100_2026-11-22_s8_{base,swap}*.json).

$BATCHSCORE_DECODE_STREAM_PRIORITY and $BATCHSCORE_ENGINE_STREAM_PRIORITY override the defaults,
for trials.
"""

from __future__ import annotations

import os

GREATEST = -1000
LEAST = 0
DEFAULTS = {"decode": GREATEST, "engine": LEAST}


def stream_priority(role: str) -> int:
    """The priority for the streams of `role` ("decode" or "engine")."""
    if role not in DEFAULTS:
        raise ValueError(f"stream role must be one of {sorted(DEFAULTS)}, got {role!r}")
    variable = f"BATCHSCORE_{role.upper()}_STREAM_PRIORITY"
    value = os.environ.get(variable, "").strip()
    if not value:
        return DEFAULTS[role]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{variable} must be an integer (lower runs first), got {value!r}") from None
