"""Does nvJPEG's batched hardware decode scale with more threads, or with more processes? Each
configuration decodes distinct batches of 256 JPEGs from a dataset for a few seconds, synchronizing
its stream after every batch (as a GPU worker does), with no model running; the JSON line gives the
images/s of all threads of all processes together.

    python benchmarks/device/nvjpeg_scaling_probe.py DATA_DIR [--seconds S] [--load PLAN] [--mode M]
        -> JSON lines on stdout

--load PLAN replays the plan's CUDA graph at batch 256 back to back in each process meanwhile (the
JSON gives the engine's images/s too); --mode decoder runs GpuDecoder.decode_into (route made
beforehand, then nvJPEG, the resize kernel and a stream synchronization) instead of nvJPEG alone;
--mode yuv asks nvJPEG for planar YUV (no colour conversion) instead of interleaved RGB;
--pinned (nvjpeg mode) copies each batch's JPEG bytes into pinned host memory first, inside the
timed step, where nvJPEG otherwise copies each image from pageable Arrow memory;
--trace OUT records the window of each single-process configuration with CUPTI (torch.profiler:
this probe only, never batchscore) and writes OUT/trace_summary_<threads>.json (kernel time per
stream, the top kernels off the engine's stream, runtime calls, copies) beside the gzipped trace.

A probe for the device (it needs a GPU with hardware JPEG decoders), not part of batchscore.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "device"))
BATCH = 256
CONFIGS = [(1, 1), (1, 2), (1, 3), (2, 1), (3, 1), (2, 2), (4, 1)]  # (processes, threads each)


def _batches(data_dir: Path, rows: int):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from scoring.dataset import open_dataset
    from scoring.decode_route import route_batch
    from scoring.encoded_items import EncodedItems

    dataset = open_dataset(data_dir)
    routes, left = [], rows
    for file in dataset.files:
        column = pq.read_table(file, columns=[dataset.image_column]).column(dataset.image_column)
        if dataset.kind == "hf_struct":
            column = pc.struct_field(column, "bytes")
        items = EncodedItems.from_arrow(column)
        for start in range(0, len(items) - BATCH + 1, BATCH):
            route = route_batch(items[start:start + BATCH], hardware=True, pixel_limit=None)
            routes.append(route.hardware)
            left -= BATCH
            if left <= 0:
                return routes
    return routes


def _process(data_dir: str, part: int, parts: int, threads: int, start_at: float, seconds: float, queue,
             plan: str | None = None, mode: str = "nvjpeg", trace: str | None = None, pinned: bool = False) -> None:
    import cupy
    import numpy as np

    from kernels.cuda import prefer_more_hardware_queues

    prefer_more_hardware_queues()
    from scoring.decode import Preprocess
    from scoring.gpu_decode import GpuDecoder
    from scoring.nvjpeg_hardware import HardwareJpegDecoder

    batches = _batches(Path(data_dir), 48 * BATCH)[part::parts]
    counts = [0] * threads
    load = None
    if plan:
        from gpu_decode_rates import EngineLoad

        load = EngineLoad(plan, BATCH)

    def run(k: int) -> None:
        mine = batches[k::threads]
        if mode == "decoder":
            gpu = GpuDecoder(Preprocess(dtype="float16"))
            out = cupy.empty((BATCH,) + gpu.preprocess.output_shape, np.float16)
            routes = [gpu.route(b.owner) for b in mine]  # ahead, as the reader thread does

            def step(i):
                gpu.decode_into(mine[i].owner, out, routes[i])
        elif mode == "yuv":
            decoder = HardwareJpegDecoder()
            stream = cupy.cuda.Stream(non_blocking=True, priority=-1000)
            out = cupy.empty(max(int((b.heights * b.widths * 3).sum()) for b in batches), np.uint8)

            def step(i):
                _decode_yuv(decoder, mine[i], out, stream)
        else:
            decoder = HardwareJpegDecoder()
            stream = cupy.cuda.Stream(non_blocking=True, priority=-1000)
            out = cupy.empty(max(int((b.heights * b.widths * 3).sum()) for b in batches), np.uint8)

            staging = _pinned_staging(cupy, mine) if pinned else None

            def step(i):
                _decode(decoder, mine[i], out, stream, staging)
        step(0)  # warm-up
        while time.time() < start_at:
            time.sleep(0.001)
        i = 0
        while time.time() < start_at + seconds:
            step(i % len(mine))
            counts[k] += len(mine[i % len(mine)])
            i += 1

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    profiler = _start_trace() if trace and parts == 1 else None
    while time.time() < start_at:
        time.sleep(0.001)
    engine_first = load.batches if load else 0
    time.sleep(seconds)
    engine = (load.batches - engine_first) * BATCH / seconds if load else None
    if profiler is not None:
        _write_trace(profiler, Path(trace), threads)
    for w in workers:
        w.join()
    if load:
        load.close()
    queue.put((sum(counts), engine))


def _pinned_staging(cupy, batches):
    """A pinned host buffer that holds any one batch's JPEG bytes."""
    import numpy as np

    size = 2 * max(int(b.lengths.sum()) for b in batches)
    memory = cupy.cuda.alloc_pinned_memory(size)
    return memory, np.frombuffer(memory, np.uint8, size)


def _stage(rows, view):
    """Copy the batch's JPEGs into the pinned `view`; their addresses there. One copy when the
    batch's bytes lie together in Arrow's buffer (a dataset batch), else one per row."""
    import ctypes

    import numpy as np

    base = view.ctypes.data
    low = int(rows.pointers.min())
    span = int((rows.pointers + rows.lengths).max()) - low
    if span <= view.size:
        ctypes.memmove(base, low, span)
        return rows.pointers - np.uint64(low) + np.uint64(base)
    offsets = np.concatenate(([0], np.cumsum(rows.lengths)[:-1])).astype(np.uint64)
    for pointer, length, offset in zip(rows.pointers.tolist(), rows.lengths.tolist(), offsets.tolist()):
        ctypes.memmove(base + offset, pointer, length)
    return offsets + np.uint64(base)


def _decode(decoder, rows, out, stream, staging=None) -> None:
    import numpy as np

    pointers = rows.pointers if staging is None else _stage(rows, staging[1])
    pitches = 3 * rows.widths
    ends = np.cumsum(rows.heights * pitches)
    outputs = (out.data.ptr + ends - rows.heights * pitches).astype(np.uint64)
    decoder.decode(pointers, rows.lengths, outputs, pitches.astype(np.uint64), stream.ptr)
    stream.synchronize()


def _start_trace():
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.init()
    profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
    profiler.__enter__()
    return profiler


def _write_trace(profiler, out: Path, threads: int) -> None:
    """Stop the profiler; write the summary (decode_load_probe.summarize_trace) and the gzipped trace."""
    import gzip

    from decode_load_probe import summarize_trace

    profiler.__exit__(None, None, None)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"trace_{threads}.json"
    profiler.export_chrome_trace(str(raw))
    (out / f"trace_summary_{threads}.json").write_text(json.dumps(summarize_trace(raw, set()), indent=1) + "\n")
    with open(raw, "rb") as f, gzip.open(out / f"trace_{threads}.json.gz", "wb") as g:
        g.write(f.read())
    raw.unlink()


def _decode_yuv(decoder, rows, out, stream) -> None:
    """nvJPEG's planar YUV output (NVJPEG_OUTPUT_YUV: no colour conversion), each plane given a
    full-size area so any chroma sampling fits."""
    import numpy as np

    n = len(rows)
    if decoder._batch_size != ("yuv", n):
        decoder._lib.nvjpegDecodeBatchedInitialize(decoder._handle, decoder._state, n, 1, 1)
        decoder._batch_size = ("yuv", n)
    plane = rows.heights * rows.widths
    ends = np.cumsum(3 * plane)
    base = out.data.ptr + ends - 3 * plane
    images = np.zeros((n, 8), np.uint64)
    for c in range(3):
        images[:, c] = base + c * plane
        images[:, 4 + c] = rows.widths
    status = decoder._lib.nvjpegDecodeBatched(decoder._handle, decoder._state, rows.pointers.ctypes.data,
                                              rows.lengths.ctypes.data, images.ctypes.data, stream.ptr)
    if status != 0:
        raise RuntimeError(f"YUV decode failed: {status}")
    stream.synchronize()


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--load")
    parser.add_argument("--mode", choices=("nvjpeg", "decoder", "yuv"), default="nvjpeg")
    parser.add_argument("--configs", help="PxT,... (processes x threads each) instead of the defaults")
    parser.add_argument("--pinned", action="store_true",
                        help="nvjpeg mode: copy each batch's bytes into pinned memory first (timed), not pageable Arrow memory")
    parser.add_argument("--trace", help="a folder for CUPTI traces of the single-process configurations")
    args = parser.parse_args()
    if args.pinned and args.mode != "nvjpeg":
        parser.error("--pinned applies to --mode nvjpeg only")
    context = mp.get_context("spawn")
    configs = CONFIGS if args.load is None and args.mode == "nvjpeg" else [(1, 1), (1, 2), (1, 3)]
    if args.configs:
        configs = [tuple(int(x) for x in c.split("x")) for c in args.configs.split(",")]
    for processes, threads in configs:
        queue = context.Queue()
        start_at = time.time() + 12.0  # every process loads its batches (and plan) and warms up first
        children = [context.Process(target=_process, args=(args.data, p, processes, threads, start_at, args.seconds,
                                                            queue, args.load, args.mode, args.trace, args.pinned))
                    for p in range(processes)]
        for child in children:
            child.start()
        results = [queue.get(timeout=180) for _ in children]
        for child in children:
            child.join()
        engine = [round(e) for _, e in results if e is not None]
        print(json.dumps({"processes": processes, "threads_each": threads, "seconds": args.seconds,
                          "mode": args.mode, "load": args.load, "pinned": args.pinned,
                          "nvjpeg_flags": os.environ.get("BATCHSCORE_NVJPEG_FLAGS", "(default)"),
                          "images_per_s": round(sum(n for n, _ in results) / args.seconds),
                          "engine_images_per_s": engine or None}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
