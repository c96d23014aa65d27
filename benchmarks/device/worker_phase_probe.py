"""Where a GPU worker's decoders spend their time: one worker scores a JPEG dataset in this process
(scoring.worker.score_shards, as a launcher runs it) with the GpuDecoder's phases timed from outside
(wrapped methods), and the seconds per phase printed beside the worker's own stage times.

    python benchmarks/device/worker_phase_probe.py PLAN DATA_DIR OUT_DIR    -> one JSON on stdout

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


def main() -> int:
    plan, data, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
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
    H = nvjpeg_hardware.HardwareJpegDecoder
    H.decode = timed("nvjpeg_decode_batched", H.decode)
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
