"""One configuration of GPU decoding under engine load, in a fresh process (the hardware-queue count
is read when CUDA starts): does a decoder's work wait behind the model's CUDA graph because their
streams share a hardware work queue?

    CUDA_DEVICE_MAX_CONNECTIONS=32 python benchmarks/device/decode_queue_probe.py PLAN DATA_DIR \
        --threads 4 --decoders 2 --backends all --order engine_last   -> one JSON line on stdout

--order engine_first creates the engine's stream before the decoders' (and their first decode,
which makes nvImageCodec's own streams); engine_last after them. CUDA hands streams hardware
queues in turn, so the order decides which decoder stream, if any, shares the engine's queue.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "device"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("plan")
    ap.add_argument("data")
    ap.add_argument("--threads", type=int, default=7)
    ap.add_argument("--decoders", type=int, default=2)
    ap.add_argument("--backends", default="all")
    ap.add_argument("--order", choices=("engine_first", "engine_last"), default="engine_first")
    ap.add_argument("--engine-batch", type=int, default=256)
    ap.add_argument("--images", type=int, default=3072)
    args = ap.parse_args()

    import cupy as cp

    from decode_load_probe import Load
    from gpu_decode_rates import BATCH, load, parallel_rate
    from scoring.decode import Preprocess
    from scoring.gpu_decode import GpuDecoder

    data = load(Path(args.data))[: args.images]
    pre = Preprocess(dtype="float16")
    busy = Load(args.plan, args.engine_batch) if args.order == "engine_first" else None
    if busy is not None:
        busy.stop.set()  # created first, started after the decoders
        busy.thread.join()
    decoders = [GpuDecoder(pre, args.threads, nvimgcodec_backends=args.backends) for _ in range(args.decoders)]
    outs = [cp.empty((BATCH,) + pre.output_shape, pre.np_dtype) for _ in decoders]
    workers = [lambda c, d=d, o=o: d.decode_into(c, o) for d, o in zip(decoders, outs)]
    alone = parallel_rate(data, workers)  # also makes nvImageCodec's streams
    if busy is None:
        busy = Load(args.plan, args.engine_batch)
    else:
        busy.stop.clear()
        busy.thread = __import__("threading").Thread(target=busy._loop, daemon=True)
        busy.thread.start()
    _, engine_alone = busy.measure(lambda: time.sleep(1.5))
    loaded, engine_meanwhile = busy.measure(lambda: parallel_rate(data, workers))
    busy.close()
    from kernels.cuda.device import describe_gpu

    print(json.dumps({"device": describe_gpu().get("name"), "connections": os.environ.get("CUDA_DEVICE_MAX_CONNECTIONS", "8 (default)"),
                      "threads": args.threads, "decoders": args.decoders, "backends": args.backends,
                      "order": args.order, "engine_batch": args.engine_batch,
                      "decode_alone": round(alone), "decode_under_load": round(loaded),
                      "engine_alone": round(engine_alone), "engine_meanwhile": round(engine_meanwhile)}), flush=True)
    for d in decoders:
        d.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
