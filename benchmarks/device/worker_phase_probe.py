"""Where a GPU worker's decoders spend their time: one worker scores a JPEG dataset in this process
(scoring.worker.score_shards, as a launcher runs it) with the GpuDecoder's phases timed from outside
(wrapped methods), and the seconds per phase printed beside the worker's own stage times; the
calling thread's submit, input copy, graph launch and result waits are timed the same way.

    python benchmarks/device/worker_phase_probe.py PLAN DATA_DIR OUT_DIR [--switch-interval S] [--slots N]
                                                   [--skip resize,hardware] [--output yuv]
                                                   [--order decoded|read] [--raw]
                                                                          -> one JSON on stdout

--raw writes each row's whole score vector too ([output] raw). --switch-interval, --slots and
--order override scoring.worker's GPU_WORKER_SWITCH_INTERVAL_S, GPU_DECODE_SLOTS and BATCH_ORDER
for the run (trials); $BATCHSCORE_GPU_DECODERS sets the decoder count. The decoder threads' waits
(for a read, for a free ring slot) are timed too.

--skip leaves out GPU work of the decoders, to see what each part costs the worker beside the
engine (issue #5's ablation): "resize" skips the resize/crop/normalize kernel, "hardware" the
hardware JPEG decode (the kernel then reads whatever the pooled buffer holds). The scores are then
meaningless; only the rates count. --output yuv has the hardware decoder write planar YCbCr (no
chroma upsampling or colour conversion on the GPU) where it writes interleaved RGB, each plane at a
column offset of the image's RGB area (the kernel then reads planes as if they were RGB): what
nvJPEG's conversion costs the worker.

It also notes each wait of the calling thread for a batch to hand over, and whether later batches
were decoded when it began and when it ended (in read order, head-of-line waits: a batch decoded
late holds up those behind it), and the spread of each decoder call's time. On the writing side it
times each batch's rows, each part file's close and its manifest record, and it notes the engine's
idle gap before each batch (whether the busy fraction's idle time comes in a few long gaps or many
short ones), and the time of every batch written (the steady rate's window, batch by batch). And
each launch that came later than the batch before it took on the GPU, split by whether the decoders
were behind or the calling thread was busy elsewhere (late_launches).

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


def timed(name: str, fn, each: list | None = None):
    """fn with its seconds added to SECONDS[name] (and each call's to `each`, where given)."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds = time.perf_counter() - start
            with _lock:
                SECONDS[name] += seconds
                CALLS[name] += 1
                if each is not None:
                    each.append(seconds)
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


# (seconds the caller waited for the next batch, later batches decoded when it began, and when it ended)
WAITS: list[tuple[float, int, int]] = []
DECODE_CALLS: list[float] = []  # seconds of each decode_into call
CLOSE_CALLS: list[float] = []  # seconds of each PartWriter.close
GAPS: list[float] = []  # ms the engine's stream sat idle before each batch (from the second on)
TICKS: list[tuple[float, int]] = []  # (Metrics.now(), images written) after every batch
HANDED: dict[int, float] = {}  # seq -> when its slot was handed over (perf_counter)
SUBMITS: list[tuple[float, float, int]] = []  # (entered, returned, seq) of every GpuRunner.submit


def _noting_hand_over(hand_over):
    """Prefetcher._hand_over with each slot's time noted in HANDED."""
    def wrapper(self, seq, item):
        HANDED[seq] = time.perf_counter()
        return hand_over(self, seq, item)
    return wrapper


def _noting_submits(submit):
    """GpuRunner.submit with its start and return noted: it returns once the GPU has begun the
    batch (its copy into the input), so a batch's return to the next one's start is the time
    the calling thread took to launch the next batch while this one ran."""
    def wrapper(self, slot):
        entered = time.perf_counter()
        try:
            return submit(self, slot)
        finally:
            SUBMITS.append((entered, time.perf_counter(), slot.seq))
    return wrapper


def _launch_summary(graph_ms: float) -> dict:
    """Each launch's lateness: how long after the previous batch began the calling thread began
    submitting the next, beyond the previous batch's `graph_ms` (then the GPU sat idle), split by
    whether that next batch came just before the calling thread took it (within 1 ms: the thread
    was waiting for it, the decoders were behind) or had been waiting for the calling thread, busy
    with something else (writing, the GIL)."""
    late = {"decoders_behind": [0, 0.0], "calling_thread": [0, 0.0]}
    for (_, began, _), (entered, _, seq) in zip(SUBMITS[3:], SUBMITS[4:]):
        over = 1e3 * (entered - began) - graph_ms
        if over <= 0:
            continue
        kind = "decoders_behind" if HANDED.get(seq, 0.0) > entered - 0.001 else "calling_thread"
        late[kind][0] += 1
        late[kind][1] += over
    return {kind: {"launches": n, "ms_beyond_graph": round(ms, 1)} for kind, (n, ms) in late.items()}


def _noting_ticks(tick):
    """Metrics.tick with every batch's (time, images) kept (Metrics keeps one every 0.25 s)."""
    def wrapper(self, images, errors=None):
        TICKS.append((self.now(), int(images)))
        return tick(self, images, errors)
    return wrapper


def _tick_summary(metrics) -> dict:
    """The steady rate's window, batch by batch: from the first batch written to the last, and to
    the worker's end (which the reported steady rate runs to); the rate without the first 10
    batches (the decoders' start-up); and the first batches' times."""
    if len(TICKS) < 12:
        return {}
    (t0, n0), (t10, n10), (t1, n1) = TICKS[0], TICKS[10], TICKS[-1]
    return {"first_to_last_batch_per_s": round((n1 - n0) / (t1 - t0)),
            "from_batch_10_per_s": round((n1 - n10) / (t1 - t10)),
            "last_batch_to_end_s": round(metrics.wall_s - t1, 3),
            "first_batches_ms": [round(1e3 * (t - t0), 1) for t, _ in TICKS[:12]]}


def _noting_gaps(account):
    """GpuRunner._account with the gap before each batch noted in GAPS, as the busy fraction
    counts it (the time from the previous batch's end to this one's start)."""
    def wrapper(self, events):
        if self._previous_end is not None:
            GAPS.append(max(0.0, self.cp.cuda.get_elapsed_time(self._previous_end, events["start"])))
        return account(self, events)
    return wrapper


def _gap_summary() -> dict:
    """How the engine's idle time is spread over the batches: a few long gaps (something on the
    calling thread held up a launch now and then) or many short ones."""
    steady = sorted(GAPS[3:], reverse=True)  # the busy fraction leaves out the first batches too
    total = sum(steady)
    return {"batches": len(steady), "total_ms": round(total, 1),
            "largest_ms": [round(g, 2) for g in steady[:12]],
            "share_of_largest_25": round(sum(steady[:25]) / total, 3) if total else None,
            "over_1ms": sum(g > 1 for g in steady), "over_1ms_total_ms": round(sum(g for g in steady if g > 1), 1)}


def _spread_ms(seconds: list[float]) -> dict:
    import numpy as np

    if not seconds:
        return {}
    ms = np.array(seconds) * 1e3
    return {"calls": len(ms), "total": round(float(ms.sum()), 1),
            **{q: round(float(np.percentile(ms, int(q[1:]))), 2) for q in ("p50", "p90")}, "max": round(float(ms.max()), 2)}


def _noting_waits(wait_for_next):
    """Prefetcher._wait_for_next (called holding the Prefetcher's lock) with each wait noted in
    WAITS: one where no batch could be handed over when the calling thread asked. In read order
    those are head-of-line waits where later batches were decoded already; handed over as decoded
    (the worker's way since session 17), later batches wait only past the Prefetcher's max_ahead."""
    def wrapper(self):
        if self._ready_seq() is not None:
            return wait_for_next(self)
        start, later = time.perf_counter(), sum(1 for seq in self._slots if seq > self._next)
        seq = wait_for_next(self)
        WAITS.append((time.perf_counter() - start, later,
                      sum(1 for other in self._slots if other > self._next and other != seq)))
        return seq
    return wrapper


def _wait_summary() -> dict:
    import numpy as np

    steady = WAITS[1:]  # the first wait is the start-up's
    later = [w for w, at_start, _ in steady if at_start > 0]
    overtaken = [w for w, _, at_end in steady if at_end > 0]
    calls = np.array(DECODE_CALLS) * 1e3 if DECODE_CALLS else np.zeros(1)
    return {"caller_waits": len(WAITS), "caller_wait_s": round(sum(w for w, _, _ in WAITS), 3),
            "first_wait_s": round(WAITS[0][0], 3) if WAITS else None,
            "steady_wait_s": round(sum(w for w, _, _ in steady), 3),
            "head_of_line_waits": len(later), "head_of_line_wait_s": round(sum(later), 3),
            # waits at whose end later batches were decoded already: the next one was overtaken
            "overtaken_waits": len(overtaken), "overtaken_wait_s": round(sum(overtaken), 3),
            "later_ready_at_end": [n for _, _, n in steady if n > 0][:40],
            "decode_call_ms": {q: round(float(np.percentile(calls, int(q[1:]))), 2) for q in ("p10", "p50", "p90", "p99")}
            | {"max": round(float(calls.max()), 2)}}


_OUTPUT_YUV = 1  # nvjpegOutputFormat_t NVJPEG_OUTPUT_YUV


def _decode_planar(self, pointers, lengths, outputs, pitches, stream_ptr) -> None:
    """HardwareJpegDecoder.decode with planar YCbCr out: in each image's area (rows of 3 x width
    bytes), Y in the first third of every row, Cb in the second, Cr in the last (chroma planes
    are at most as wide and tall as Y)."""
    import numpy as np

    from scoring.nvjpeg_hardware import _IMAGE_WORDS, HardwareDecodeError

    n = len(pointers)
    if n != getattr(self, "_planar_batch", None):
        status = self._lib.nvjpegDecodeBatchedInitialize(self._handle, self._state, n, 1, _OUTPUT_YUV)
        if status != 0:
            raise HardwareDecodeError(f"nvjpegDecodeBatchedInitialize({n}, YUV): status {status}")
        self._planar_batch = n
    widths = np.asarray(pitches, np.uint64) // 3
    images = np.zeros((n, _IMAGE_WORDS), np.uint64)
    for plane in range(3):
        images[:, plane] = np.asarray(outputs, np.uint64) + plane * widths
        images[:, 4 + plane] = pitches
    data = np.ascontiguousarray(pointers, np.uint64)
    sizes = np.ascontiguousarray(lengths, np.uint64)
    status = self._lib.nvjpegDecodeBatched(self._handle, self._state, data.ctypes.data, sizes.ctypes.data,
                                           images.ctypes.data, stream_ptr)
    if status != 0:
        self._planar_batch = None
        raise HardwareDecodeError(f"planar hardware decode of {n} images failed: status {status}")


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("plan")
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--switch-interval", type=float)
    parser.add_argument("--slots", type=int)
    parser.add_argument("--skip", default="", help="comma-separated: resize, hardware")
    parser.add_argument("--output", default="rgbi", choices=["rgbi", "yuv"])
    parser.add_argument("--order", choices=["decoded", "read"], help="the order batches reach the engine in")
    parser.add_argument("--raw", action="store_true", help="[output] raw = true: each row's whole score vector too")
    args = parser.parse_args()
    skip = {name for name in args.skip.split(",") if name}
    if skip - {"resize", "hardware"}:
        parser.error(f"--skip: unknown {sorted(skip - {'resize', 'hardware'})}; use resize, hardware")
    plan, data, out = args.plan, args.data, args.out
    from scoring import worker

    if args.switch_interval is not None:
        worker.GPU_WORKER_SWITCH_INTERVAL_S = args.switch_interval
    if args.slots is not None:
        worker.GPU_DECODE_SLOTS = args.slots
    if args.order is not None:
        worker.BATCH_ORDER = args.order
    order = getattr(worker, "BATCH_ORDER", "read")  # trees before session 17 hand over in read order
    from scoring_gpu_e2e import job_dict

    from scoring import gpu_decode, nvjpeg_hardware, pipeline
    from scoring.job import parse_job
    from scoring.report import steady_rate
    from scoring.worker import open_job_dataset, score_shards

    G = gpu_decode.GpuDecoder
    for name in ("decode_into", "route", "_decode_batch", "_decode_on_hardware", "_decode_jpegs", "_launch",
                 "_upload_arrays", "_cpu_fallback"):
        setattr(G, name, timed(name, getattr(G, name), DECODE_CALLS if name == "decode_into" else None))
    pipeline.read_shard = _timed_iterator(pipeline.read_shard)
    pipeline.Prefetcher._poll = _timed_poll(pipeline)
    if hasattr(pipeline.Prefetcher, "_wait_for_next"):  # not in trees before session 17 (A/B runs)
        pipeline.Prefetcher._wait_for_next = _noting_waits(pipeline.Prefetcher._wait_for_next)
    H = nvjpeg_hardware.HardwareJpegDecoder
    H.decode = timed("nvjpeg_decode_batched", H.decode)
    if args.output == "yuv":
        H.decode = timed("nvjpeg_decode_batched", _decode_planar)
    if "hardware" in skip:
        H.decode = timed("nvjpeg_decode_batched", lambda *args, **kwargs: None)
    if "resize" in skip:
        G._launch = timed("_launch", lambda *args, **kwargs: None)
    # The calling thread's side: submit (which waits for the previous batch's graph), the copy into
    # the binding and the graph launch (host time between them is GPU time if the stream is idle).
    from engine.gpu_runtime import GpuContext
    from scoring.gpu_runner import GpuPending, GpuRunner

    for name in ("submit", "_copy_in"):
        setattr(GpuRunner, name, timed(f"runner.{name}", getattr(GpuRunner, name)))
    GpuContext.execute = timed("context.execute", GpuContext.execute)
    GpuPending.result = timed("pending.result", GpuPending.result)
    GpuRunner._account = _noting_gaps(GpuRunner._account)
    GpuRunner.submit = _noting_submits(GpuRunner.submit)  # inside the timed wrapper set above
    pipeline.Prefetcher._hand_over = _noting_hand_over(pipeline.Prefetcher._hand_over)
    from scoring.report import Metrics

    Metrics.tick = _noting_ticks(Metrics.tick)
    # The writing side: a batch's rows, a part file's close (fsync and rename) and its record.
    from scoring.manifest import Manifest
    from scoring.outputs import PartWriter

    PartWriter.add = timed("part.add", PartWriter.add)
    PartWriter.close = timed("part.close", PartWriter.close, CLOSE_CALLS)
    Manifest.record = timed("manifest.record", Manifest.record)
    spec = job_dict(plan, data, out, 256, "fp16", decode="gpu")
    spec["output"]["raw"] = args.raw
    job = parse_job(spec, check_files=False)
    dataset = open_job_dataset(job)
    shards = dataset.shards(4096)
    started = time.perf_counter()
    metrics = score_shards(job, plan, shards, 0, dataset=dataset, device="cuda:0")
    wall = time.perf_counter() - started
    graph_ms = 1e3 * metrics.stages.get("compute", 0.0) / max(1, CALLS["context.execute"] - 2)  # less the warm-up's
    images = metrics.images
    print(json.dumps({
        "argv": sys.argv[1:], "images": images, "wall_s": round(wall, 2), "images_per_s": round(images / wall),
        "steady_images_per_s": round(steady_rate(metrics.samples) or 0),
        "worker_stages_s": {k: round(v, 2) for k, v in metrics.stages.items()},
        "cpu_s": round(metrics.cpu_s or 0, 2),
        "skip": sorted(skip), "output": args.output, "order": order, "raw": args.raw, "waits": _wait_summary(),
        "gpu_gaps": _gap_summary(), "part_close_ms": _spread_ms(CLOSE_CALLS), "ticks": _tick_summary(metrics),
        "first_decode_calls_ms": [round(1e3 * c, 1) for c in DECODE_CALLS[:8]],
        "late_launches": _launch_summary(graph_ms),
        "busy_fraction": round(metrics.busy_fraction, 4) if metrics.busy_fraction is not None else None,
        # per graph launch; the count includes the warm-up's two (about 0.5% low for 100,000 rows)
        "compute_ms_per_batch": round(1e3 * metrics.stages.get("compute", 0.0) / max(1, CALLS["context.execute"]), 3),
        "phases_s": {k: round(v, 3) for k, v in sorted(SECONDS.items(), key=lambda kv: -kv[1])},
        "phase_us_per_image": {k: round(1e6 * v / images, 1) for k, v in SECONDS.items()},
        "calls": dict(CALLS)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
