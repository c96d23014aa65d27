"""Green-context trial probe (issue #5, session 20): what the engine's graph costs on part of the
GPU's SMs, and whether a partition keeps small decoder-like kernels from slowing it.

    python3 benchmarks/device/green_context_probe.py PLAN [--batch 256] > out.json

1. The engine's graph replayed alone: on an ordinary stream (all SMs), and on the engine partition
   of green contexts that leave 8 or 16 SMs to the decoders, the engine's thread made current in
   the partition's context (cuDNN refuses a green stream used from the primary context: call 1).
2. Beside a "hog" thread that launches a small kernel (one 500x375 RGB image's worth of bytes) and
   waits for it, over and over, as nvJPEG's conversion does per image: the hog on a high-priority
   ordinary stream beside the engine on all SMs, against the hog on the decode partition beside
   the engine on the rest. Reported: the engine's ms a batch and the hog's kernels a second.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


# ---- green contexts (cuda.bindings: the device image has it) -----------------------------------
def _check(result):
    """cuda.bindings returns (CUresult, values...): the values, or an error naming the call's result."""
    from cuda.bindings import driver as cu

    error, *values = result if isinstance(result, tuple) else (result,)
    if error != cu.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"CUDA driver call failed: {error}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class SmPartition:
    """Two green contexts on one device: `decode` (at least decode_sms SMs) and `engine` (the rest)."""

    def __init__(self, device_id: int, decode_sms: int):
        from cuda.bindings import driver as cu

        self.cu = cu
        _check(cu.cuInit(0))
        device = _check(cu.cuDeviceGet(device_id))
        sm = _check(cu.cuDeviceGetDevResource(device, cu.CUdevResourceType.CU_DEV_RESOURCE_TYPE_SM))
        groups, _, rest = _check(cu.cuDevSmResourceSplitByCount(1, sm, 0, decode_sms))
        self.total_sms = int(sm.sm.smCount)
        self.decode_sms = int(groups[0].sm.smCount)
        self.engine_sms = int(rest.sm.smCount)
        self.decode = self._green(groups[0], device)
        self.engine = self._green(rest, device)
        self._streams = []  # kept for the process's life

    def _green(self, resource, device):
        cu = self.cu
        desc = _check(cu.cuDevResourceGenerateDesc([resource], 1))
        return _check(cu.cuGreenCtxCreate(desc, device, cu.CUgreenCtxCreate_flags.CU_GREEN_CTX_DEFAULT_STREAM))

    def stream(self, role: str, priority: int):
        """A CuPy stream on the `role` ("decode" or "engine") partition's SMs."""
        import cupy

        cu = self.cu
        green = self.decode if role == "decode" else self.engine
        handle = _check(cu.cuGreenCtxStreamCreate(green, cu.CUstream_flags.CU_STREAM_NON_BLOCKING.value, priority))
        self._streams.append(handle)
        return cupy.cuda.ExternalStream(int(handle))

    def make_current(self, role: str) -> None:
        """Make the `role` partition's context current on the calling thread."""
        cu = self.cu
        green = self.decode if role == "decode" else self.engine
        _check(cu.cuCtxSetCurrent(_check(cu.cuCtxFromGreenCtx(green))))

    def describe(self) -> dict:
        return {"total_sms": self.total_sms, "decode_sms": self.decode_sms, "engine_sms": self.engine_sms}


def _engine_ms(context, batch: int, replays: int) -> dict:
    import cupy as cp

    bucket = context.bucket(batch)
    name = context.engine.inputs[0].name
    with context.stream:
        bucket.bound[name][...] = 0
        context.execute(bucket)
        context.execute(bucket)
    context.stream.synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    wall = time.perf_counter()
    start.record(context.stream)
    for _ in range(replays):
        context.execute(bucket)
    end.record(context.stream)
    end.synchronize()
    wall = time.perf_counter() - wall
    return {"ms_per_batch": cp.cuda.get_elapsed_time(start, end) / replays, "wall_ms_per_batch": wall * 1e3 / replays}


class Hog:
    """A thread that launches one small kernel on `stream` and waits for it, until stopped."""

    def __init__(self, stream, on_thread=None):
        import cupy as cp

        self.stream = stream  # a stream, or a callable that makes one on the hog's thread
        self.on_thread = on_thread  # run first on the hog's thread (make a green context current)
        self.src = cp.zeros(500 * 375 * 3, dtype=cp.uint8)
        self.dst = cp.empty_like(self.src)
        self.kernel = cp.ElementwiseKernel("uint8 x", "uint8 y", "y = (unsigned char)(x * 3 + 1)", "hog_kernel")
        self.count = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if self.on_thread is not None:
            self.on_thread()
        if callable(self.stream):
            self.stream = self.stream()
        with self.stream:
            while not self.stop.is_set():
                self.kernel(self.src, self.dst)
                self.stream.synchronize()
                self.count += 1

    def __enter__(self):
        self.thread.start()
        time.sleep(0.05)  # past the first launch's compile and set-up
        self.count = 0
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.perf_counter() - self.started
        self.stop.set()
        self.thread.join()
        self.rate = self.count / self.elapsed


def _try(results: dict, key: str, run) -> None:
    try:
        results[key] = run()
    except Exception as exc:
        results[key] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
    print(key, json.dumps(results[key])[:300], file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("plan")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--replays", type=int, default=60)
    args = parser.parse_args()

    import cupy as cp

    from engine import runtime as engine_api

    engine = engine_api.load(args.plan)
    results: dict = {"plan": args.plan, "batch": args.batch, "replays": args.replays}
    high = cp.cuda.Stream(non_blocking=True, priority=-1000)

    def full():
        return _engine_ms(engine.create_context(cp.cuda.Stream(non_blocking=True)), args.batch, args.replays)

    _try(results, "engine_all_sms", full)
    partitions = {}
    for decode_sms in (8, 16):
        def green(decode_sms=decode_sms):
            part = SmPartition(cp.cuda.Device().id, decode_sms)
            partitions[decode_sms] = part
            return part.describe()  # cuDNN refuses a green stream used from the primary context (call 1)
        _try(results, f"partition_decode{decode_sms}", green)

    def current(decode_sms):
        from cuda.bindings import driver as cu

        part = partitions[decode_sms]
        primary = cu.cuCtxGetCurrent()[1]
        part.make_current("engine")
        try:
            out = part.describe()
            out.update(_engine_ms(engine.create_context(cp.cuda.Stream(non_blocking=True)), args.batch, args.replays))
            context = engine.create_context(cp.cuda.Stream(non_blocking=True))
            _engine_ms(context, args.batch, 3)
            with Hog(lambda: cp.cuda.Stream(non_blocking=True, priority=-1000),
                     on_thread=lambda: part.make_current("decode")) as hog:
                beside = _engine_ms(context, args.batch, args.replays)
            out["beside_hog_ms_per_batch"] = beside["ms_per_batch"]
            out["hog_per_s"] = hog.rate
        finally:
            cu.cuCtxSetCurrent(primary)
        return out

    for decode_sms in (8, 16):
        if decode_sms in partitions:
            _try(results, f"engine_green_current_decode{decode_sms}", lambda d=decode_sms: current(d))
            cp.get_default_memory_pool().free_all_blocks()

    def hog_alone(stream):
        with Hog(stream) as hog:
            time.sleep(0.5)
        return {"hog_per_s": hog.rate}

    def beside(engine_stream, hog_stream):
        context = engine.create_context(engine_stream)
        _engine_ms(context, args.batch, 3)  # warm-up and capture first
        with Hog(hog_stream) as hog:
            out = _engine_ms(context, args.batch, args.replays)
        out["hog_per_s"] = hog.rate
        return out

    _try(results, "hog_alone_all_sms", lambda: hog_alone(high))
    for decode_sms in (8, 16):
        if decode_sms in partitions:
            part = partitions[decode_sms]
            _try(results, f"hog_alone_green_decode{decode_sms}", lambda p=part: hog_alone(p.stream("decode", -1000)))
    _try(results, "beside_all_sms", lambda: beside(cp.cuda.Stream(non_blocking=True), high))
    _try(results, "beside_all_sms_again", lambda: beside(cp.cuda.Stream(non_blocking=True), high))
    json.dump(results, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
