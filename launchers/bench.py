"""`batchscore bench`: in the manner of trtexec, time a plan (or an ONNX model, built first).

Per batch size: throughput and latency (min/median/p90/p99) of the engine alone (device-resident
input, CUDA-graph replay on a GPU), host latency split into H2D, compute and D2H, GPU power from
NVML and images/s/W; then a per-layer profile at the largest batch. Writes JSON with --json and a
batch-sweep plot with --plot.
"""

from __future__ import annotations

import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np


def _percentiles(ms: list[float]) -> dict:
    a = np.sort(np.asarray(ms))
    return {"min": float(a[0]), "median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def _input_feeds(engine, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in engine.inputs:
        shape = [batch if isinstance(d, str) else d for d in spec.shape]
        feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


def bench_gpu(engine, batches: list[int], iterations: int, warmup: int, sampler_factory) -> dict:
    import cupy as cp

    context = engine.create_context()
    rows = []
    for batch in batches:
        feeds = _input_feeds(engine, batch)
        bucket = context.bucket(batch)
        with context.stream:
            context.stage_inputs(bucket, feeds)
            for _ in range(max(warmup, 2)):  # the first eager pass captures the graph
                context.execute(bucket)
            context.stream.synchronize()
            events = [(cp.cuda.Event(), cp.cuda.Event()) for _ in range(iterations)]
            with sampler_factory() as sampler:
                started = time.perf_counter()
                for start, end in events:
                    start.record(context.stream)
                    context.execute(bucket)
                    end.record(context.stream)
                context.stream.synchronize()
                elapsed = time.perf_counter() - started
            compute = [cp.cuda.get_elapsed_time(s, e) for s, e in events]
            host = _host_split(context, bucket, feeds)
        watts = sampler.mean_watts() if sampler is not None else None
        ips = batch * iterations / elapsed
        rows.append({"batch": batch, "images_per_s": ips, "latency_ms": _percentiles(compute), "host_ms": host,
                     "watts": watts, "images_per_s_per_w": (ips / watts) if watts else None,
                     "cuda_graph": bucket.graph is not None})
    from engine.gpu_runtime import time_layers

    profile = time_layers(context, batches[-1])
    return {"rows": rows, "layer_profile_ms": profile, "layer_tactics": dict(context.bucket(batches[-1]).tactics)}


def _host_split(context, bucket, feeds, repeats: int = 5) -> dict:
    """Host latency of one batch: H2D of the inputs, compute, D2H of the outputs (events)."""
    import cupy as cp

    parts = {"h2d": [], "compute": [], "d2h": []}
    outputs = [bucket.bound[s.name] for s in context.engine.outputs]
    host_out = [np.empty(o.shape, o.dtype) for o in outputs]
    pinned = {k: _pinned_copy(v) for k, v in feeds.items()}
    for _ in range(repeats):
        marks = [cp.cuda.Event() for _ in range(4)]
        marks[0].record(context.stream)
        context.stage_inputs(bucket, pinned)
        marks[1].record(context.stream)
        context.execute(bucket)
        marks[2].record(context.stream)
        for device_array, host_array in zip(outputs, host_out):
            device_array.get(stream=context.stream, out=host_array)
        marks[3].record(context.stream)
        marks[3].synchronize()
        for key, (a, b) in zip(parts, zip(marks, marks[1:])):
            parts[key].append(cp.cuda.get_elapsed_time(a, b))
    return {k: float(np.median(v)) for k, v in parts.items()}


def _pinned_copy(array: np.ndarray) -> np.ndarray:
    import cupy as cp

    memory = cp.cuda.alloc_pinned_memory(array.nbytes)
    pinned = np.frombuffer(memory, array.dtype, array.size).reshape(array.shape)
    pinned[...] = array
    return pinned


def bench_cpu(engine, batches: list[int], iterations: int, warmup: int) -> dict:
    context = engine.create_context()
    rows = []
    for batch in batches:
        feeds = _input_feeds(engine, batch)
        for _ in range(warmup):
            context.run(feeds)
        ms = []
        for _ in range(iterations):
            start = time.perf_counter()
            context.run(feeds)
            ms.append((time.perf_counter() - start) * 1e3)
        rows.append({"batch": batch, "images_per_s": batch / (np.median(ms) / 1e3), "latency_ms": _percentiles(ms)})
    return {"rows": rows}


class _NoSampler:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _sampler_factory():
    try:
        from scoring.report import average_watts, nvml_power_sampler
    except ImportError:
        return _NoSampler

    class Sampler:
        def __enter__(self):
            self.inner = nvml_power_sampler(interval_s=0.1)
            self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def mean_watts(self):
            return average_watts(self.inner)

    return Sampler


def run_bench(target: str, batches: list[int], precision: str, iterations: int, warmup: int,
              json_path: str | None, plot_path: str | None, device: str) -> dict:
    import engine as eng_mod
    from engine.plan import read_plan

    if target.endswith(".onnx"):
        from engine.builder import BuildConfig

        plan = eng_mod.build(target, BuildConfig(device=device, precision=precision, max_batch=max(batches)))
    else:
        plan = read_plan(target)
    engine = eng_mod.engine_for(plan, target)
    on_gpu = plan.header.get("device", {}).get("kind") == "cuda"
    too_big = [b for b in batches if engine.max_batch and b > engine.max_batch]
    if too_big:
        raise eng_mod.InputError(f"batch {too_big} exceeds the plan's max batch {engine.max_batch}")
    result = bench_gpu(engine, batches, iterations, warmup, _sampler_factory()) if on_gpu else \
        bench_cpu(engine, batches, max(3, iterations // 20), 1)
    result.update({
        "model": plan.header.get("model_name"), "device": plan.header.get("device"),
        "precision": plan.header.get("precision") if not on_gpu else _precision(plan),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "layers": len(plan.layers),
    })
    for row in result["rows"]:
        lat = row["latency_ms"]
        print(f"  batch {row['batch']:>4}: {row['images_per_s']:>10.1f} images/s   latency median {lat['median']:.3f} ms "
              f"p90 {lat['p90']:.3f} p99 {lat['p99']:.3f}" + (f"   {row['watts']:.0f} W, {row['images_per_s_per_w']:.1f} images/s/W"
                                                               if row.get("watts") else ""))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2, default=float) + "\n")
    if plot_path:
        _plot(result, plot_path)
    return result


def _precision(plan) -> str:
    values = plan.header.get("values", {})
    return "fp16" if any(v["dtype"] == "float16" for v in values.values()) else "fp32"


def _plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = [r["batch"] for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(batches, [r["images_per_s"] for r in result["rows"]], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch")
    ax.set_ylabel("images/s")
    ax.set_title(f"{result['model']} ({result['precision']})")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
