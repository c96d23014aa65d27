"""Where a GPU worker's decoders spend their time: one worker scores a JPEG dataset in this process
(scoring.worker.score_shards, as a launcher runs it) with the GpuDecoder's phases timed from outside
(wrapped methods), and the seconds per phase printed beside the worker's own stage times; the
calling thread's submit, input copy, graph launch and result waits are timed the same way.

    python benchmarks/device/worker_phase_probe.py PLAN DATA_DIR OUT_DIR [--switch-interval S] [--slots N]
                                                                          -> one JSON on stdout

--switch-interval and --slots override scoring.worker's GPU_WORKER_SWITCH_INTERVAL_S and
GPU_DECODE_SLOTS for the run (trials); $BATCHSCORE_GPU_DECODERS sets the decoder count. The decoder
threads' waits (for a read, for a free ring slot) are timed too.

A diagnostic for the device (it patches GpuDecoder's methods in this process only).
"""

from __future__ import annotations

import collections
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SECONDS: dict[str, float] = collections.defaultdict(float)
CALLS: dict[str, int] = collections.defaultdict(int)
_lock = threading.Lock()


def timed(name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with _lock:
                SECONDS[name] += time.perf_counter() - start
                CALLS[name] += 1
    return wrapper


def _timed_iterator(read_shard):
    """read_shard whose batches are timed one by one (the reader thread's Parquet reads)."""
    def wrapper(*args, **kwargs):
        batches = read_shard(*args, **kwargs)

        class Timed:
            def __iter__(self):
                return self

            def __next__(self):
                start = time.perf_counter()
                try:
                    return next(batches)
                finally:
                    with _lock:
                        SECONDS["read_batch"] += time.perf_counter() - start
                        CALLS["read_batch"] += 1

            def close(self):
                batches.close()
        return Timed()
    return wrapper


def _timed_poll(pipeline):
    """Prefetcher._poll timed by what it waits for: a batch read, or a free ring slot."""
    poll = pipeline.Prefetcher._poll

    def wrapper(self, source):
        start = time.perf_counter()
        try:
            return poll(self, source)
        finally:
            name = "wait_read" if source is self._reads else "wait_free_slot" if source is self._free else "wait_other"
            with _lock:
                SECONDS[name] += time.perf_counter() - start
                CALLS[name] += 1
    return wrapper


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("plan")
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--switch-interval", type=float)
    parser.add_argument("--slots", type=int)
    args = parser.parse_args()
    plan, data, out = args.plan, args.data, args.out
    from scoring import worker

    if args.switch_interval is not None:
        worker.GPU_WORKER_SWITCH_INTERVAL_S = args.switch_interval
    if args.slots is not None:
        worker.GPU_DECODE_SLOTS = args.slots
    from scoring_gpu_e2e import job_dict

    from scoring import gpu_decode, nvjpeg_hardware, pipeline
    from scoring.job import parse_job
    from scoring.report import steady_rate
    from scoring.worker import open_job_dataset, score_shards

    G = gpu_decode.GpuDecoder
    for name in ("decode_into", "route", "_decode_batch", "_decode_on_hardware", "_decode_jpegs", "_launch",
                 "_upload_arrays", "_cpu_fallback"):
        setattr(G, name, timed(name, getattr(G, name)))
    pipeline.read_shard = _timed_iterator(pipeline.read_shard)
    pipeline.Prefetcher._poll = _timed_poll(pipeline)
    H = nvjpeg_hardware.HardwareJpegDecoder
    H.decode = timed("nvjpeg_decode_batched", H.decode)
    # The calling thread's side: submit (which waits for the previous batch's graph), the copy into
    # the binding and the graph launch (host time between them is GPU time if the stream is idle).
    from engine.gpu_runtime import GpuContext
    from scoring.gpu_runner import GpuPending, GpuRunner

    for name in ("submit", "_copy_in"):
        setattr(GpuRunner, name, timed(f"runner.{name}", getattr(GpuRunner, name)))
    GpuContext.execute = timed("context.execute", GpuContext.execute)
    GpuPending.result = timed("pending.result", GpuPending.result)
    job = parse_job(job_dict(plan, data, out, 256, "fp16", decode="gpu"), check_files=False)
    dataset = open_job_dataset(job)
    shards = dataset.shards(4096)
    started = time.perf_counter()
    metrics = score_shards(job, plan, shards, 0, dataset=dataset, device="cuda:0")
    wall = time.perf_counter() - started
    images = metrics.images
    print(json.dumps({
        "argv": sys.argv[1:], "images": images, "wall_s": round(wall, 2), "images_per_s": round(images / wall),
        "steady_images_per_s": round(steady_rate(metrics.samples) or 0),
        "worker_stages_s": {k: round(v, 2) for k, v in metrics.stages.items()},
        "cpu_s": round(metrics.cpu_s or 0, 2),
        "phases_s": {k: round(v, 3) for k, v in sorted(SECONDS.items(), key=lambda kv: -kv[1])},
        "phase_us_per_image": {k: round(1e6 * v / images, 1) for k, v in SECONDS.items()},
        "calls": dict(CALLS)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
