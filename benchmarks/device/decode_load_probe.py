"""Why GPU JPEG decoding starves while the model runs: decode rates alone and under engine load by
nvImageCodec backend and options, and a CUPTI trace (through torch.profiler, this script only) of
what the decoders put on the GPU meanwhile.

    python benchmarks/device/decode_load_probe.py PLAN OUTDIR [--data DIR] [--images N]
        -> OUTDIR/decode_load_probe.json, OUTDIR/trace_summary.json

PLAN is a ResNet-50 FP16 plan (max batch 256). The engine load replays PLAN's CUDA graph back to
back on its own thread at batch 256 and at batch 32, as benchmarks/gpu_decode_rates.py does.
A diagnostic for the device: torch is imported here to read CUPTI, never by batchscore itself.
"""

from __future__ import annotations

import collections
import datetime
import gzip
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_decode_rates import BATCH, load, parallel_rate  # noqa: E402
from gpu_decode_rates import EngineLoad as Load  # noqa: E402  (the plan's graph replayed back to back)


def raw_workers(count: int, backends, options: str, cores: int, failures: list):
    """nvImageCodec decode only, `count` decoders on their own streams; failures[0] counts None images."""
    import cupy as cp
    from nvidia import nvimgcodec as nv

    params = nv.DecodeParams(apply_exif_orientation=True, color_spec=nv.ColorSpec.SRGB)
    workers = []
    for _ in range(count):
        kwargs = {"max_num_cpu_threads": max(1, (cores - 1) // count)}
        if backends is not None:
            kwargs["backends"] = backends
        decoder = nv.Decoder(options=options, **kwargs) if options else nv.Decoder(**kwargs)
        stream = cp.cuda.Stream(non_blocking=True, priority=-1000)

        def run(chunk, decoder=decoder, stream=stream):
            images = decoder.decode(chunk, params=params, cuda_stream=stream.ptr)
            stream.synchronize()
            failures[0] += sum(1 for im in images if im is None)
        workers.append(run)
    return workers


def backend_sets(nv):
    kinds = nv.BackendKind
    return {
        "default": None,
        "hw_only": [nv.Backend(kinds.HW_GPU_ONLY)],
        "hybrid_only": [nv.Backend(kinds.HYBRID_CPU_GPU)],
        "hw+hybrid": [nv.Backend(kinds.HW_GPU_ONLY), nv.Backend(kinds.HYBRID_CPU_GPU)],
    }


def summarize_trace(path: Path, engine_thread_ids: set) -> dict:
    """Kernel time per stream, the top kernels of the non-engine streams, runtime calls by name."""
    trace = json.loads(path.read_text())
    events = trace.get("traceEvents", trace)
    per_stream = collections.defaultdict(lambda: [0.0, 0])
    kernels = collections.defaultdict(lambda: collections.defaultdict(lambda: [0.0, 0]))
    runtime = collections.defaultdict(lambda: [0.0, 0])
    memcpy = collections.defaultdict(lambda: [0.0, 0])
    span = [float("inf"), 0.0]
    for e in events:
        cat = e.get("cat", "")
        dur = float(e.get("dur", 0) or 0)
        if cat == "kernel":
            stream = e.get("args", {}).get("stream")
            per_stream[stream][0] += dur
            per_stream[stream][1] += 1
            k = kernels[stream][e.get("name", "?")[:90]]
            k[0] += dur
            k[1] += 1
            span[0] = min(span[0], e["ts"])
            span[1] = max(span[1], e["ts"] + dur)
        elif cat in ("gpu_memcpy", "gpu_memset"):
            m = memcpy[(e.get("args", {}).get("stream"), e.get("name", "?"))]
            m[0] += dur
            m[1] += 1
        elif cat in ("cuda_runtime", "cuda_driver"):
            r = runtime[e.get("name", "?")]
            r[0] += dur
            r[1] += 1
    window_us = span[1] - span[0] if span[1] > span[0] else None
    busiest = max(per_stream, key=lambda s: per_stream[s][0]) if per_stream else None
    out = {"window_us": window_us, "engine_stream_guess": busiest,
           "streams": {str(s): {"kernel_us": round(v[0]), "kernels": v[1]} for s, v in per_stream.items()},
           "top_kernels_off_engine_stream": {}, "runtime_calls": {}, "memcpy": {}}
    for s, names in kernels.items():
        if s == busiest:
            continue
        top = sorted(names.items(), key=lambda kv: -kv[1][0])[:8]
        out["top_kernels_off_engine_stream"][str(s)] = [{"name": n, "us": round(v[0]), "count": v[1]} for n, v in top]
    for name, v in sorted(runtime.items(), key=lambda kv: -kv[1][0])[:25]:
        out["runtime_calls"][name] = {"us": round(v[0]), "count": v[1]}
    for (s, name), v in sorted(memcpy.items(), key=lambda kv: -kv[1][0])[:12]:
        out["memcpy"][f"{s}:{name}"] = {"us": round(v[0]), "count": v[1]}
    return out


def main() -> int:
    import cupy as cp
    from nvidia import nvimgcodec as nv

    from kernels.cuda.device import describe_gpu
    from scoring.decode import Preprocess
    from scoring.gpu_decode import GpuDecoder

    plan, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(sys.argv[sys.argv.index("--data") + 1]) if "--data" in sys.argv else out / "data"
    images = int(sys.argv[sys.argv.index("--images") + 1]) if "--images" in sys.argv else 3072
    data = load(data_dir)[:images]
    cores = len(os.sched_getaffinity(0))
    rows: list[dict] = []

    def record(row):
        rows.append(row)
        print(row, flush=True)

    sets = backend_sets(nv)
    configs = [(name, opts) for name in sets for opts in ("", ":fancy_upsampling=1")]
    # alone
    for name, opts in configs:
        failures = [0]
        try:
            rate = parallel_rate(data, raw_workers(2, sets[name], opts, cores, failures))
        except Exception as exc:
            record({"backends": name, "options": opts, "load": None, "error": f"{type(exc).__name__}: {exc}"})
            continue
        record({"backends": name, "options": opts, "load": None, "decoders": 2, "images_per_s": rate,
                "failed_images": failures[0]})
    for engine_batch in (256, 32):
        busy = Load(plan, engine_batch)
        _, alone = busy.measure(lambda: time.sleep(2.0))
        record({"engine_batch": engine_batch, "engine_alone_images_per_s": alone})
        for name, opts in configs:
            failures = [0]
            try:
                workers = raw_workers(2, sets[name], opts, cores, failures)
                rate, engine_rate = busy.measure(lambda: parallel_rate(data, workers))
            except Exception as exc:
                record({"backends": name, "options": opts, "load": engine_batch, "error": f"{type(exc).__name__}: {exc}"})
                continue
            record({"backends": name, "options": opts, "load": engine_batch, "decoders": 2, "images_per_s": rate,
                    "engine_images_per_s_meanwhile": engine_rate, "failed_images": failures[0]})
        pre = Preprocess(dtype="float16")
        for preset, opts in (("all", ":fancy_upsampling=1"), ("hw", ""), ("hw", ":fancy_upsampling=1")):
            decs = [GpuDecoder(pre, max(1, (cores - 1) // 2), nvimgcodec_backends=preset, nvimgcodec_options=opts)
                    for _ in range(2)]
            outs = [cp.empty((BATCH,) + pre.output_shape, pre.np_dtype) for _ in decs]
            workers = [lambda c, d=d, o=o: d.decode_into(c, o) for d, o in zip(decs, outs)]
            rate, engine_rate = busy.measure(lambda: parallel_rate(data, workers))
            record({"GpuDecoder": preset, "options": opts, "load": engine_batch, "decoders": 2, "images_per_s": rate,
                    "engine_images_per_s_meanwhile": engine_rate})
            if engine_batch == 256 and preset == "all" and "--trace" in sys.argv:
                import torch
                from torch.profiler import ProfilerActivity, profile

                torch.cuda.init()
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    parallel_rate(data[: 4 * BATCH], workers)
                trace = out / "trace.json"
                prof.export_chrome_trace(str(trace))
                summary = summarize_trace(trace, set())
                (out / "trace_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
                with open(trace, "rb") as f, gzip.open(out / "trace.json.gz", "wb") as g:
                    g.write(f.read())
                trace.unlink()
                print(json.dumps(summary, indent=1)[:6000], flush=True)
            for d in decs:
                d.close()
        busy.close()
    result = {"benchmark": "decode_load_probe",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": describe_gpu(), "cores": cores, "images": len(data),
              "mean_bytes": sum(map(len, data)) / len(data), "batch": BATCH,
              "nvimgcodec": getattr(nv, "__version__", None), "rows": rows,
              "command": "python " + " ".join(sys.argv)}
    (out / "decode_load_probe.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
