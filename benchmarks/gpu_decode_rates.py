"""JPEG decode rates on one GPU: nvImageCodec by backend mix and number of parallel decoders, and
batchscore's GpuDecoder (decode + resize/crop/normalize) with 1-3 decoders on their own threads.

    python benchmarks/gpu_decode_rates.py OUTDIR [--data DIR] [--engine PLAN]  -> OUTDIR/gpu_decode_rates.json

DIR is a JPEG Parquet dataset (default: OUTDIR/data, made with make_dataset if missing); 6,144
images of it are decoded in batches of 256. These figures chose the worker's defaults (two GPU
decoders per worker, nvImageCodec's own backend choice): see scoring/worker.py.

With --engine, the GpuDecoder rows are measured again while a thread replays PLAN's CUDA graph at
batch 256 without pause, as the scoring pipeline does, and the engine's own rate in that window is
recorded beside the decoders': what decoding and the model take from each other on one GPU. GPU
decoders in child processes (scoring.decode_processes) are measured that way too.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IMAGES, BATCH = 6144, 256


def load(data_dir: Path) -> list[bytes]:
    import pyarrow.parquet as pq

    from scoring.make_data import make_dataset

    if not data_dir.exists():
        make_dataset(data_dir, rows=IMAGES, row_groups=8)
    data: list[bytes] = []
    for f in sorted(glob.glob(str(data_dir / "*.parquet"))):
        data += [r["bytes"] for r in pq.read_table(f, columns=["image"]).column("image").to_pylist()]
        if len(data) >= IMAGES:
            break
    return data[:IMAGES]


def parallel_rate(data: list, workers: list) -> float:
    """Images/s with each worker(chunk) on its own thread, chunks dealt round-robin."""
    chunks = [data[i:i + BATCH] for i in range(0, len(data), BATCH)]
    for w in workers:
        w(chunks[0])  # warm-up
    start = time.perf_counter()
    threads = [threading.Thread(target=lambda k=k: [workers[k](c) for c in chunks[k::len(workers)]])
               for k in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(data) / (time.perf_counter() - start)


class EngineLoad:
    """A thread that replays a plan's CUDA graph back to back at `batch` (default: the plan's
    largest); `measure(run)` gives the engine's images/s while run() ran."""

    def __init__(self, plan_path: str, batch: int | None = None):
        import engine

        eng = engine.load(plan_path)
        self.context = eng.create_context()
        self.batch = batch or eng.max_batch or BATCH
        self.bucket = self.context.bucket(self.batch)
        for _ in range(2):  # eager, then captured
            self.context.execute(self.bucket)
        self.context.stream.synchronize()
        self.batches = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.context.execute(self.bucket)
            self.context.stream.synchronize()
            self.batches += 1

    def measure(self, run) -> tuple[float, float]:
        """(run()'s result, the engine's images/s while it ran)."""
        first, start = self.batches, time.perf_counter()
        result = run()
        return result, (self.batches - first) * self.batch / (time.perf_counter() - start)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def gpu_decoder_rows(data: list, cores: int, load: EngineLoad | None) -> list[dict]:
    import cupy as cp

    from scoring.decode import Preprocess
    from scoring.decode_processes import DecoderRecipe, ProcessDecoder, SharedBuffers
    from scoring.gpu_decode import GpuDecoder

    pre = Preprocess(dtype="float16")
    rows = []
    settings = [("thread", "all", n) for n in (1, 2, 3)]
    if load is not None:
        settings += [("thread", "hw", n) for n in (2, 3)] + [("process", "all", n) for n in (2, 3)]
    for where, preset, count in settings:
        threads = max(1, (cores - 1) // count)
        shared = SharedBuffers.on_device()
        outs = [shared.allocate((BATCH,) + pre.output_shape, pre.np_dtype) for _ in range(count)]
        if where == "thread":
            decoders = [GpuDecoder(pre, threads, nvimgcodec_backends=preset) for _ in range(count)]
        else:
            recipe = DecoderRecipe("gpu", pre, threads, preset, cp.cuda.Device().id)
            decoders = [ProcessDecoder(recipe) for _ in range(count)]
            for d in decoders:
                d.attach(shared)
        workers = [lambda chunk, d=d, o=o: d.decode_into(chunk, o) for d, o in zip(decoders, outs)]
        if load is None:
            rate, engine_rate = parallel_rate(data, workers), None
        else:
            rate, engine_rate = load.measure(lambda: parallel_rate(data, workers))
        rows.append({"what": f"GpuDecoder decode + resize/crop/normalize, in a {where}", "backends": preset,
                     "decoders": count, "images_per_s": rate, "engine_images_per_s_meanwhile": engine_rate})
        print(rows[-1], flush=True)
        for d in decoders:
            d.close()
        shared.close()
    return rows


def main() -> int:
    import cupy as cp
    from nvidia import nvimgcodec as nv

    from scoring.gpu_decode import backend_preset

    out = Path(sys.argv[1])
    data_dir = Path(sys.argv[sys.argv.index("--data") + 1]) if "--data" in sys.argv else out / "data"
    out.mkdir(parents=True, exist_ok=True)
    data = load(data_dir)
    params = nv.DecodeParams(apply_exif_orientation=True, color_spec=nv.ColorSpec.SRGB)
    cores = len(os.sched_getaffinity(0))
    rows = []

    def raw(preset: str, count: int):
        def make():
            decoder = nv.Decoder(max_num_cpu_threads=max(1, (cores - 1) // count), backends=backend_preset(nv, preset))
            stream = cp.cuda.Stream(non_blocking=True)

            def run(chunk):
                decoder.decode(chunk, params=params, cuda_stream=stream.ptr)
                stream.synchronize()
            return run
        return [make() for _ in range(count)]

    for preset in ("all", "hw"):
        for count in (1, 2, 3):
            rate = parallel_rate(data, raw(preset, count))
            rows.append({"what": "nvimgcodec decode only", "backends": preset, "decoders": count, "images_per_s": rate})
            print(rows[-1], flush=True)
    rows += gpu_decoder_rows(data, cores, None)
    engine_alone = None
    if "--engine" in sys.argv:
        busy = EngineLoad(sys.argv[sys.argv.index("--engine") + 1])
        _, engine_alone = busy.measure(lambda: time.sleep(3.0))
        print({"engine alone, images/s": engine_alone}, flush=True)
        rows += gpu_decoder_rows(data, cores, busy)
        busy.close()
    from kernels.cuda.device import describe_gpu

    record = {"benchmark": "gpu_decode_rates", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": describe_gpu(), "cores": cores, "images": len(data),
              "mean_bytes": sum(map(len, data)) / len(data), "batch": BATCH, "rows": rows,
              "engine_alone_images_per_s": engine_alone,
              "command": "python " + " ".join(sys.argv)}
    (out / "gpu_decode_rates.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
