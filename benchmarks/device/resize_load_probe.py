"""What the GPU decoder's preprocessing kernel costs the model (issue #5): the production kernel
(scoring/resize_kernel.py: antialiased resize, crop, normalise, FP16 NHWC) timed alone on a batch of
already-decoded images, then launched beside the model at given rates on a stream of the decoders'
priority, with the model's images/s meanwhile against the model alone.

    python benchmarks/device/resize_load_probe.py PLAN [--size 500x375] [--rates 13000,26000,max]
        [--seconds 3] [--kernel tiled|pixel] -> JSON lines on stdout

Why: beside the decoders the model's batches run 12-14% longer than alone, and nvJPEG's own decode
(colour conversion included) accounts for 2-7% of it in benchmarks/device/nvjpeg_batched_probe.py.
This says how much of the rest the resize kernel is, before anyone rewrites it. The images are
random pixels of one size (the JPEGs of make_dataset are about 500x375); the kernel's work does
not depend on their content. A probe for the device, not part of batchscore.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

BATCH = 256


def parse_size(text: str) -> tuple[int, int]:
    """"500x375" -> (500, 375): width, height."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 500x375; got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


def parse_rates(text: str) -> list[float | None]:
    """"13000,max" -> [13000.0, None]: images/s to launch at, None for back to back."""
    rates: list[float | None] = []
    for part in text.split(","):
        part = part.strip()
        if part == "max":
            rates.append(None)
            continue
        try:
            rate = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"rates are images/s or 'max', got {part!r}") from None
        if rate <= 0:
            raise argparse.ArgumentTypeError(f"rates must be positive, got {part!r}")
        rates.append(rate)
    return rates


def paced(run_batch, rate: float | None, seconds: float, batch: int = BATCH, clock=time.perf_counter,
          sleep=time.sleep) -> float:
    """Call run_batch() (one batch of `batch` images, synchronized) for `seconds`, no faster than
    `rate` images/s (None: back to back); the images/s it reached."""
    start = clock()
    done = 0
    while clock() - start < seconds:
        run_batch()
        done += batch
        if rate is not None:
            ahead = start + done / rate - clock()
            if ahead > 0:
                sleep(ahead)
    return done / (clock() - start)


class Preprocessing:
    """The production kernels over BATCH random images of one size, on their own stream, launched as
    GpuDecoder launches them; `tiled` False sends every image to the per-pixel kernel."""

    def __init__(self, width: int, height: int, tiled: bool = True):
        import cupy as cp
        import numpy as np

        from scoring.decode import Preprocess
        from scoring.resize_kernel import _COLUMNS, PreprocessKernels, Sources, fill_table
        from scoring.stream_priority import stream_priority

        self.cp = cp
        self.pre = Preprocess(dtype="float16", layout="NHWC")  # an FP16 plan's ring rows
        self.stream = cp.cuda.Stream(non_blocking=True, priority=stream_priority("decode"))
        self.images = cp.random.randint(0, 256, size=(BATCH, height, width, 3), dtype=cp.uint8)
        pitch = width * 3
        sources = Sources.of([(i, self.images[i].data.ptr, height, width, pitch, 3, False) for i in range(BATCH)])
        table = np.zeros((BATCH, len(_COLUMNS)), np.int64)
        self.launches = fill_table(table, sources, self.pre, tiled=tiled)
        self.table = cp.asarray(table)
        self.out = cp.empty((BATCH,) + self.pre.output_shape, dtype=cp.float16)
        self.kernels = PreprocessKernels(self.pre.layout, self.pre.dtype)
        self.scalars = (*[np.int32(c) for c in (0, 1, 2)], *[np.float32(m) for m in self.pre.mean],
                        *[np.float32(s) for s in self.pre.std])

    def launch(self) -> None:
        with self.stream:
            self.kernels.launch(self.launches, self.table, BATCH, self.pre.crop, self.out, self.scalars)

    def run_batch(self) -> None:
        self.launch()
        self.stream.synchronize()

    def ms_per_batch(self, repeats: int = 50) -> float:
        """The kernel alone: GPU milliseconds per batch (events), after a warm-up."""
        cp = self.cp
        self.run_batch()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record(self.stream)
        for _ in range(repeats):
            self.launch()
        end.record(self.stream)
        end.synchronize()
        return cp.cuda.get_elapsed_time(start, end) / repeats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("plan")
    ap.add_argument("--size", type=parse_size, default=(500, 375))
    ap.add_argument("--rates", type=parse_rates, default=parse_rates("13000,26000,max"))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--kernel", choices=("tiled", "pixel"), default="tiled",
                    help="tiled: as GpuDecoder launches it; pixel: every image on the per-pixel kernel")
    args = ap.parse_args(argv)
    from gpu_decode_rates import EngineLoad

    width, height = args.size
    prep = Preprocessing(width, height, tiled=args.kernel == "tiled")
    ms = prep.ms_per_batch()
    print(json.dumps({"kernel": args.kernel, "kernel_alone_ms_per_batch": round(ms, 3),
                      "images_per_s": round(BATCH / ms * 1e3), "size": f"{width}x{height}", "batch": BATCH,
                      "launches": prep.launches._asdict()}), flush=True)
    load = EngineLoad(args.plan, BATCH)
    try:
        _, alone = load.measure(lambda: time.sleep(args.seconds))
        for rate in args.rates:
            reached, meanwhile = load.measure(lambda: paced(prep.run_batch, rate, args.seconds))
            print(json.dumps({"rate": rate or "max", "kernel_images_per_s": round(reached),
                              "engine_alone": round(alone), "engine_meanwhile": round(meanwhile),
                              "engine_share": round(meanwhile / alone, 4)}), flush=True)
    finally:
        load.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
