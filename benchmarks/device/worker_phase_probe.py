"""Where a GPU worker's decoders spend their time: one worker scores a JPEG dataset in this process
(scoring.worker.score_shards, as a launcher runs it) with the GpuDecoder's phases timed from outside
(wrapped methods), and the seconds per phase printed beside the worker's own stage times; the
calling thread's submit, input copy, graph launch and result waits are timed the same way.

    python benchmarks/device/worker_phase_probe.py PLAN DATA_DIR OUT_DIR [--switch-interval S] [--slots N]
                                                   [--skip resize,hardware] [--output yuv]
                                                   [--order decoded|read] [--raw]
                                                                          -> one JSON on stdout
                                                             (anything else printed goes to stderr)

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
were behind or the calling thread was busy elsewhere (late_launches). Every collection of Python's
cyclic garbage collector, which holds the GIL while it runs, per generation, and whether one ran on
the way to each launch that left the engine idle for over 1 ms (collector: on an H100 in session 19
almost none did). And each of those gaps set against what the threads were doing when the GPU went
idle (idle_causes, from the GPU's event times mapped onto the host's clock). A bystander thread
that sleeps 1 ms at a time notes how late it wakes (gil_canary_late_ms: the wait for the GIL that
every thread has after a native call), and the calling thread's wall and CPU time on its way to
each launch that left the engine idle (calling_thread_before_gaps).

A diagnostic for the device (it patches GpuDecoder's methods in this process only).
"""

from __future__ import annotations

import collections
import json
import os
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
    """fn with its seconds added to SECONDS[name] (and each call's (start, end) to `each`, where given)."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            end = time.perf_counter()
            with _lock:
                SECONDS[name] += end - start
                CALLS[name] += 1
                if each is not None:
                    each.append((start, end))
    return wrapper


def _seconds(intervals: list[tuple[float, float]]) -> list[float]:
    return [end - start for start, end in intervals]


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
            end = time.perf_counter()
            with _lock:
                SECONDS[name] += end - start
                CALLS[name] += 1
                if name != "wait_other":
                    INTERVALS["read_wait" if name == "wait_read" else "free_wait"].append((start, end))
    return wrapper


# (seconds the caller waited for the next batch, later batches decoded when it began, and when it ended)
WAITS: list[tuple[float, int, int]] = []
CLOSE_CALLS: list[tuple[float, float]] = []  # (start, end) of each PartWriter.close
GAPS: list[float] = []  # ms the engine's stream sat idle before each batch (from the second on)
TICKS: list[tuple[float, int]] = []  # (Metrics.now(), images written) after every batch
HANDED: dict[int, float] = {}  # seq -> when its slot was handed over (perf_counter)
SUBMITS: list[tuple[float, float, int]] = []  # (entered, returned, seq) of every GpuRunner.submit
SUBMIT_CPU: list[tuple[float, float]] = []  # the calling thread's CPU seconds when each submit was entered, returned
CANARY: list[tuple[float, float]] = []  # (when, seconds) each 1 ms sleep of a bystander thread overslept
# The canary's wakes of over HOG_MS late: when, how late, and the threads whose CPU time grew by over
# half of it meanwhile, with the line each was at (the GIL's holders, as they let it go).
HOGS: list[dict] = []
HOG_MS = 3.0
COLLECTIONS: list[tuple[float, float, int]] = []  # (began, ms, generation) of every cyclic GC collection
# For idle_causes: each batch's (start, end) on the GPU in perf_counter seconds, and each decoder
# thread's (start, end) in a decode call (decode_into), a wait for a read, a wait for a slot.
BATCH_TIMES: list[tuple[float, float]] = []
INTERVALS: dict[str, list[tuple[float, float]]] = {"call": [], "read_wait": [], "free_wait": []}
GPU_CLOCK: list = []  # [event, perf_counter]: an event recorded on an idle stream, and when it was


def _noting_warm_up(warm_up):
    """GpuRunner._warm_up, then an event on the idle stream as the GPU clock's origin."""
    def wrapper(self):
        warm_up(self)
        origin = self.cp.cuda.Event()
        origin.record(self.stream)
        origin.synchronize()  # spins (a default event): within microseconds of the GPU's time
        GPU_CLOCK[:] = [origin, time.perf_counter()]
    return wrapper


def _on_host_clock(cp, event) -> float:
    origin, at = GPU_CLOCK
    return at + cp.cuda.get_elapsed_time(origin, event) / 1e3


def _watch_collections() -> None:
    """Note every collection of the cyclic garbage collector: it holds the GIL while it runs."""
    import gc

    began: list[float] = []

    def callback(phase, info):
        now = time.perf_counter()
        if phase == "start":
            began[:] = [now]
        elif began:
            COLLECTIONS.append((began[0], 1e3 * (now - began[0]), int(info["generation"])))
            began.clear()

    gc.callbacks.append(callback)


def _gaps_before_submits():
    """(k, gap ms) for each gap of over 1 ms: GAPS[j] is the gap before the (j + 1)-th submitted
    batch, whose submit is SUBMITS[k] (and SUBMIT_CPU[k]: the two are noted together)."""
    for j, gap in enumerate(GAPS):
        if gap > 1 and j + 1 < len(SUBMITS):
            yield j + 1, gap


def _collection_summary() -> dict:
    """Collections per generation (count, total and longest ms), and the engine's gaps of over
    1 ms split by whether a collection ran while the calling thread was on its way to that launch
    (from the previous submit's return to this one's entry)."""
    by_generation = {}
    for generation in (0, 1, 2):
        pauses = [ms for _, ms, g in COLLECTIONS if g == generation]
        by_generation[f"gen{generation}"] = {"count": len(pauses), "total_ms": round(sum(pauses), 1),
                                             "max_ms": round(max(pauses), 2) if pauses else 0.0}
    with_gc, without = [0, 0.0, 0.0], [0, 0.0]
    for k, gap in _gaps_before_submits():
        start, end = SUBMITS[k - 1][1], SUBMITS[k][0]
        paused = sum(ms for began, ms, _ in COLLECTIONS if began < end and began + ms / 1e3 > start)
        if paused > 0:
            with_gc[0] += 1
            with_gc[1] += gap
            with_gc[2] += paused
        else:
            without[0] += 1
            without[1] += gap
    return {**by_generation,
            "gaps_over_1ms_with_collection": {"gaps": with_gc[0], "gap_ms": round(with_gc[1], 1),
                                              "collection_ms": round(with_gc[2], 1)},
            "gaps_over_1ms_without": {"gaps": without[0], "gap_ms": round(without[1], 1)}}


def _start_canary(stop: threading.Event) -> threading.Thread:
    """A thread that sleeps 1 ms at a time and notes how late it wakes: past the OS's own
    wake-up, what it waits for is the GIL, as every thread of the worker does after a native call."""
    def cpu_clocks() -> dict:
        clocks = {}
        for thread in threading.enumerate():
            try:
                clocks[thread.ident] = (thread.name, time.pthread_getcpuclockid(thread.ident))
            except (OSError, AttributeError, TypeError):
                pass
        return clocks

    def cpu_times(clocks: dict) -> dict:
        times = {}
        for ident, (_, clock) in clocks.items():
            try:
                times[ident] = time.clock_gettime(clock)
            except OSError:  # the thread has ended
                pass
        return times

    def run():
        clocks = cpu_clocks()
        before = cpu_times(clocks)
        wakes = 0
        while not stop.is_set():
            start = time.perf_counter()
            time.sleep(0.001)
            now = time.perf_counter()
            late = now - start - 0.001
            CANARY.append((now, late))
            wakes += 1
            if wakes % 200 == 0:  # threads come and go (the reader, part threads)
                clocks = cpu_clocks()
            after = cpu_times(clocks)
            if late * 1e3 > HOG_MS and len(HOGS) < 2000:
                frames = sys._current_frames()
                hogs = []
                for ident, cpu in after.items():
                    used = cpu - before.get(ident, cpu)
                    if used > late / 2 and ident != threading.get_ident():
                        where = _where(frames.get(ident))
                        hogs.append({"thread": clocks[ident][0], "cpu_ms": round(1e3 * used, 2), "at": where})
                HOGS.append({"when": now, "late_ms": round(1e3 * late, 2), "hogs": hogs})
            before = after
    thread = threading.Thread(target=run, name="gil-canary", daemon=True)
    thread.start()
    return thread


def _where(frame, depth: int = 3) -> str:
    """A thread's innermost `depth` Python frames, as file:line function < caller < ..."""
    parts = []
    while frame is not None and len(parts) < depth:
        parts.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(parts) or "?"


def _canary_summary() -> dict:
    """The canary's lateness over the engine's steady batches (from the STEADY_AFTER-th batch's
    start to the last one's end), and which threads held the GIL through the late wakes then:
    per thread and line, how often and the CPU ms they used meanwhile."""
    import numpy as np

    if not CANARY:
        return {}
    begin, end = (BATCH_TIMES[3][0], BATCH_TIMES[-1][1]) if len(BATCH_TIMES) > 4 else (-1.0, float("inf"))
    late = np.array([seconds for when, seconds in CANARY if begin <= when <= end]) * 1e3
    if not len(late):
        return {}
    holders: dict[str, list] = {}
    late_wakes = [h for h in HOGS if begin <= h["when"] <= end]
    for wake in late_wakes:
        for hog in wake["hogs"]:
            key = f"{hog['thread']} @ {hog['at']}"
            entry = holders.setdefault(key, [0, 0.0])
            entry[0] += 1
            entry[1] += hog["cpu_ms"]
    top = sorted(holders.items(), key=lambda kv: -kv[1][1])[:15]
    return {"steady_s": round(end - begin, 3), "wakes": len(late),
            **{q: round(float(np.percentile(late, int(q[1:]))), 3) for q in ("p50", "p90", "p99")},
            "max": round(float(late.max()), 3), "over_1ms": int((late > 1).sum()),
            "over_1ms_total_ms": round(float(late[late > 1].sum()), 1),
            f"wakes_over_{HOG_MS:g}ms": len(late_wakes),
            "holders": [{"where": key, "wakes": n, "cpu_ms": round(ms, 1)} for key, (n, ms) in top],
            "latest": [{"late_ms": h["late_ms"], "hogs": h["hogs"]} for h in sorted(late_wakes, key=lambda h: -h["late_ms"])[:8]]}


def _ready_gap_cpu() -> dict:
    """Over the gaps of over 1 ms: the calling thread's wall and CPU time from the previous
    submit's return to this submit's entry (CPU far below wall, outside its waits for a batch, is
    time spent waiting for the GIL or a core); and the same per launch over every launch."""
    wall = cpu = 0.0
    gaps = 0
    for k, _ in _gaps_before_submits():
        gaps += 1
        wall += SUBMITS[k][0] - SUBMITS[k - 1][1]
        cpu += SUBMIT_CPU[k][0] - SUBMIT_CPU[k - 1][1]
    n = max(1, len(SUBMITS) - 1)
    all_wall = sum(SUBMITS[k][0] - SUBMITS[k - 1][1] for k in range(1, len(SUBMITS)))
    all_cpu = sum(SUBMIT_CPU[k][0] - SUBMIT_CPU[k - 1][1] for k in range(1, len(SUBMIT_CPU)))
    return {"gaps_over_1ms": gaps, "wall_ms": round(1e3 * wall, 1), "cpu_ms": round(1e3 * cpu, 1),
            "every_launch_mean_wall_ms": round(1e3 * all_wall / n, 3), "every_launch_mean_cpu_ms": round(1e3 * all_cpu / n, 3)}


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
        entered, cpu_entered = time.perf_counter(), time.thread_time()
        try:
            return submit(self, slot)
        finally:
            SUBMITS.append((entered, time.perf_counter(), slot.seq))
            SUBMIT_CPU.append((cpu_entered, time.thread_time()))
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
    def wrapper(self, events, rows):
        if self._previous_end is not None:
            GAPS.append(max(0.0, self.cp.cuda.get_elapsed_time(self._previous_end, events["start"])))
        if GPU_CLOCK:
            BATCH_TIMES.append((_on_host_clock(self.cp, events["start"]), _on_host_clock(self.cp, events["end"])))
        return account(self, events, rows)
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
    calls = np.array(_seconds(INTERVALS["call"])) * 1e3 if INTERVALS["call"] else np.zeros(1)
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


def _stdout_for_json_alone():
    """A file on the process's stdout, for the JSON; from now on anything else written to stdout,
    from Python or native code (a trial's print, a library's banner), lands on stderr, so the JSON
    stays whole (a trial's print broke session 24's call 3 JSON)."""
    sys.stdout.flush()
    kept = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return kept


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
    json_out = _stdout_for_json_alone()
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
    from idle_causes import idle_causes
    from scoring.report import steady_rate
    from scoring.worker import open_job_dataset, score_shards

    G = gpu_decode.GpuDecoder
    for name in ("decode_into", "route", "_decode_batch", "_decode_on_hardware", "_decode_jpegs", "_launch",
                 "_upload_arrays", "_cpu_fallback"):
        setattr(G, name, timed(name, getattr(G, name), INTERVALS["call"] if name == "decode_into" else None))
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
    GpuContext.execute_from = timed("context.execute_from", GpuContext.execute_from)  # slots read in place
    GpuPending.result = timed("pending.result", GpuPending.result)
    GpuRunner._account = _noting_gaps(GpuRunner._account)
    GpuRunner._warm_up = _noting_warm_up(GpuRunner._warm_up)
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
    import gc

    tracked = len(gc.get_objects())
    _watch_collections()
    stop_canary = threading.Event()
    canary = _start_canary(stop_canary)
    started = time.perf_counter()
    metrics = score_shards(job, plan, shards, 0, dataset=dataset, device="cuda:0")
    wall = time.perf_counter() - started
    stop_canary.set()
    canary.join()
    # batches run: a graph launch per batch (a head and a tail where slots are read in place), less
    # the warm-up's two passes
    batches = CALLS["context.execute"] - 2 + CALLS["context.execute_from"]
    graph_ms = 1e3 * metrics.stages.get("compute", 0.0) / max(1, batches)
    images = metrics.images
    print(json.dumps({
        "argv": sys.argv[1:], "images": images, "wall_s": round(wall, 2), "images_per_s": round(images / wall),
        "steady_images_per_s": round(steady_rate(metrics.samples) or 0),
        "worker_stages_s": {k: round(v, 2) for k, v in metrics.stages.items()},
        "cpu_s": round(metrics.cpu_s or 0, 2),
        "skip": sorted(skip), "output": args.output, "order": order, "raw": args.raw, "waits": _wait_summary(),
        "gpu_gaps": _gap_summary(), "part_close_ms": _spread_ms(_seconds(CLOSE_CALLS)), "ticks": _tick_summary(metrics),
        "first_decode_calls_ms": [round(1e3 * c, 1) for c in _seconds(INTERVALS["call"][:8])],
        "late_launches": _launch_summary(graph_ms),
        "idle_causes": idle_causes(BATCH_TIMES, list(HANDED.values()), [entered for entered, _, _ in SUBMITS], INTERVALS),
        "gil_canary_late_ms": _canary_summary(),
        "calling_thread_before_gaps": _ready_gap_cpu(),
        "collector": {"tracked_objects_before": tracked, **_collection_summary()},
        "busy_fraction": round(metrics.busy_fraction, 4) if metrics.busy_fraction is not None else None,
        "compute_ms_per_batch": round(graph_ms, 3),
        "phases_s": {k: round(v, 3) for k, v in sorted(SECONDS.items(), key=lambda kv: -kv[1])},
        "phase_us_per_image": {k: round(1e6 * v / images, 1) for k, v in SECONDS.items()},
        "calls": dict(CALLS)}, indent=1), file=json_out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
