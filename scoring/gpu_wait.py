"""How a GPU worker's threads wait for the GPU ([run] gpu_wait): asleep ("block") or spinning ("spin").

Why block: CUDA's default schedule spins in a wait when a process has fewer GPU contexts than
CPUs, which is always the case here. A worker's main loop waits most of every batch in
GpuRunner.submit (the previous batch's graph runs before this one's input is consumed), and each
GPU decoder waits for its kernels. Spinning, those waits take whole cores from the decoders, and
each thread's CPU time becomes the length of its waits rather than the cost of its work, which is
what scoring.slow_cpus measures to find slow CPUs. A blocked wait costs the wake-up when the GPU is
done; the main loop submits one batch ahead (GpuRunner.lag), so that delay is not on the GPU's path.
On an H100 the main loop's CPU per image was 30.5-31.3 us spinning and 7.3-8.7 us asleep, at the
same images/s (benchmarks/results/scoring/scoring_gpu_e2e_h100_2026-11-22_s12_*.json).

"spin" is there for a comparison (as trtexec's --useSpinWait), and "auto" is $BATCHSCORE_GPU_WAIT
(block or spin) where set, else "block", so that an A/B can set it for every worker of a launcher.
"""

from __future__ import annotations

import os

from scoring.errors import ScoringError

GPU_WAITS = ("auto", "block", "spin")
ENV = "BATCHSCORE_GPU_WAIT"


def spin_wait(setting: str = "auto", environ=os.environ) -> bool:
    """Whether waits spin, for [run] gpu_wait = `setting`."""
    if setting not in GPU_WAITS:
        raise ScoringError(f"[run] gpu_wait must be one of {', '.join(GPU_WAITS)}, got {setting!r}")
    if setting == "auto":
        setting = environ.get(ENV, "").strip() or "block"
        if setting not in ("block", "spin"):
            raise ScoringError(f"{ENV} must be block or spin, got {setting!r}")
    return setting == "spin"


def wait_event(cp, spin: bool, timing: bool = False):
    """A CUDA event to wait on: its synchronize() sleeps unless `spin`. `timing`: it may also be
    one end of an elapsed time."""
    return cp.cuda.Event(block=not spin, disable_timing=not timing)


def wait_for_stream(cp, stream, spin: bool) -> None:
    """Return once the work queued on `stream` so far is done."""
    if spin:
        stream.synchronize()
        return
    done = wait_event(cp, spin=False)
    done.record(stream)
    done.synchronize()
