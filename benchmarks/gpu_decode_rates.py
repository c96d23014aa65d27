"""JPEG decode rates on one GPU: nvImageCodec by backend mix and number of parallel decoders, and
batchscore's GpuDecoder (decode + resize/crop/normalize) with 1-3 decoders on their own threads.

    python benchmarks/gpu_decode_rates.py OUTDIR [--data DIR]   -> OUTDIR/gpu_decode_rates.json

DIR is a JPEG Parquet dataset (default: OUTDIR/data, made with make_dataset if missing); 6,144
images of it are decoded in batches of 256. These figures chose the worker's defaults (two GPU
decoders per worker, nvImageCodec's own backend choice): see scoring/worker.py.
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


def main() -> int:
    import cupy as cp
    from nvidia import nvimgcodec as nv

    from scoring.decode import Preprocess
    from scoring.gpu_decode import GpuDecoder, backend_preset

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
    pre = Preprocess(dtype="float16")
    for count in (1, 2, 3):
        decoders = [GpuDecoder(pre, max(1, (cores - 1) // count)) for _ in range(count)]
        outs = [cp.empty((BATCH,) + pre.output_shape, pre.np_dtype) for _ in range(count)]
        workers = [lambda chunk, d=d, o=o: d.decode_into(chunk, o) for d, o in zip(decoders, outs)]
        rate = parallel_rate(data, workers)
        rows.append({"what": "GpuDecoder decode + resize/crop/normalize", "backends": "all", "decoders": count,
                     "images_per_s": rate})
        print(rows[-1], flush=True)
        for d in decoders:
            d.close()
    from kernels.cuda.device import describe_gpu

    record = {"benchmark": "gpu_decode_rates", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": describe_gpu(), "cores": cores, "images": len(data),
              "mean_bytes": sum(map(len, data)) / len(data), "batch": BATCH, "rows": rows,
              "command": "python " + " ".join(sys.argv)}
    (out / "gpu_decode_rates.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
