"""Tactic timing on the target GPU, with a timing cache.

For each layer whose kernel offers several tactics (a cuDNN convolution's execution plans), time
every candidate on the bound buffers of the max-batch bucket (median of a few event-timed runs after
a warm-up), drop a candidate as soon as it is clearly slower than the best so far and one whose
output differs from the first candidate's, and keep the fastest whose output matches the layer's
numpy kernel on the first images of the batch (engine/tactic_check.py). Choices are cached by
(GPU, CUDA, cuDNN, layer signature), so a second build of the same model on the same GPU is fast.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from engine.errors import BuildError
from engine.ir import format_shape
from engine.plan import Plan
from engine.tactic_check import agreeing_tactic

log = logging.getLogger("batchscore.build")

DEFAULT_CACHE = Path(os.environ.get("BATCHSCORE_CACHE", Path.home() / ".cache" / "batchscore")) / "timing-cache.json"
WARMUP, RUNS, GIVE_UP = 2, 5, 3.0  # a candidate whose first run is 3x the best so far is dropped


class TimingCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.hits = self.misses = 0

    def get(self, key: str) -> str | None:
        found = self.entries.get(key)
        self.hits += found is not None
        self.misses += found is None
        return found

    def put(self, key: str, tactic: str) -> None:
        self.entries[key] = tactic

    def save(self) -> None:
        if str(self.path) == os.devnull:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries, indent=0, sort_keys=True))
        os.replace(tmp, self.path)


def _signature(device: dict, layer: dict, runner) -> str:
    arrays = [a for a in getattr(runner, "pack", {}).values()]
    shapes = [(tuple(a.shape), tuple(a.strides), str(a.dtype)) for a in arrays]
    text = json.dumps([device.get("name"), device.get("arch"), device.get("cudnn"), device.get("cuda_runtime"),
                       layer["kind"], layer.get("attrs", {}), shapes], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _time(runner, stream) -> float:
    import cupy as cp

    start, end = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for i in range(WARMUP + RUNS):
        start.record(stream)
        runner()
        end.record(stream)
        end.synchronize()
        if i >= WARMUP:
            times.append(cp.cuda.get_elapsed_time(start, end))
    return float(np.median(times))


def tune_plan(plan: Plan, cache_path: Path | None = DEFAULT_CACHE) -> dict:
    """Choose every layer's tactic in place (plan.layers[i]["tactic"]); returns a summary."""
    import cupy as cp

    from engine.gpu_runtime import GpuEngine

    started = time.perf_counter()
    cache = TimingCache(cache_path) if cache_path else TimingCache(Path(os.devnull))
    engine = GpuEngine(plan, f"<build of {plan.header.get('model_name')}>")
    context = engine.create_context(use_graphs=False)
    batch = plan.header.get("max_batch") or 1
    bucket = context.bucket(batch)
    rng = cp.random.default_rng(0)
    with context.stream:
        _fill_normal(bucket.arena.buffer, rng)  # realistic values, no NaN patterns
        for array in bucket.bound.values():
            if array.dtype.kind == "f" and array.size:
                array[...] = rng.standard_normal(array.shape, dtype=cp.float32).astype(array.dtype)
        by_name = {layer["name"]: layer for layer in plan.layers}
        tuned, worst_error = 0, 0.0
        for name, runner in bucket.runners:
            layer = by_name.get(name)
            if layer is None:  # a precision conversion before a layer (see _Bucket._cast_inputs)
                continue
            candidates = runner.candidates() if hasattr(runner, "candidates") else []
            if len(candidates) > 1:
                key = _signature(plan.header["device"], layer, runner)
                chosen = cache.get(key)
                if chosen is None or chosen not in candidates:
                    ranked = _pick(runner, candidates, context.stream, layer)
                    chosen, error = agreeing_tactic(runner, ranked, layer, bucket.io[name], engine.weights, batch,
                                                    bool(engine.header.get("tf32")), context.stream.synchronize,
                                                    cp.asnumpy)
                    worst_error = max(worst_error, error)
                    cache.put(key, chosen)
                    tuned += 1
                runner.select(tactic_index(chosen))
            layer["tactic"] = bucket.tactics.get(name) if not candidates else runner.tactic
    cache.save()
    summary = {"layers": len(bucket.runners), "tuned": tuned, "cache_hits": cache.hits,
               "numpy_check_worst_error": worst_error,
               "host_layers": bucket.host_layers, "seconds": round(time.perf_counter() - started, 1)}
    log.info("tactics: %d layers timed (each within %.1e of its numpy kernel), %d from the timing cache, %.1f s; "
             "on the host: %s", tuned, worst_error, cache.hits, summary["seconds"], ", ".join(bucket.host_layers) or "none")
    return summary


def _fill_normal(buffer, rng) -> None:
    import cupy as cp

    usable = buffer.size // 4 * 4
    if usable:
        halves = buffer[:usable].view(cp.float16)
        halves[...] = rng.standard_normal(halves.size, dtype=cp.float32).astype(cp.float16)


def tactic_index(tactic: str) -> int:
    """The plan index in a candidate tactic "LIBRARY:INDEX" or, as runners report it, "LIBRARY:INDEX:NAME"."""
    return int(tactic.split(":")[1])


def _pick(runner, candidates: list[str], stream, layer: dict) -> list[str]:
    """The candidates whose output matches the first working one's (relative L2 < 2e-2), fastest first."""
    import cupy as cp

    timed, best_ms, reference = [], float("inf"), None
    output = getattr(runner, "full", None)
    failures = []
    for tactic in candidates:
        try:
            runner.select(tactic_index(tactic))
            if tactic_index(runner.tactic) != tactic_index(tactic):  # it did not build; select() moved on
                failures.append(f"{tactic}: did not build: {getattr(runner, 'build_failure', None)}")
                log.debug("%s: %s", layer.get("name"), failures[-1])
                continue
            runner()
            stream.synchronize()
        except Exception as exc:
            failures.append(f"{tactic}: {type(exc).__name__}: {str(exc)[:200]}")
            log.debug("%s: tactic %s failed: %s", layer.get("name"), tactic, failures[-1])
            continue
        if output is not None:
            result = output.astype(cp.float32)
            if reference is None:
                reference = result
            else:
                error = float(cp.linalg.norm(result - reference) / (cp.linalg.norm(reference) + 1e-30))
                if not np.isfinite(error) or error > 2e-2:
                    log.debug("tactic %s rejected: output differs by %.2e", tactic, error)
                    continue
        first = _time_once(runner, stream)
        if first > GIVE_UP * best_ms:
            log.debug("%s: tactic %s dropped after one run of %.3f ms", layer.get("name"), tactic, first)
            continue
        ms = _time(runner, stream)
        log.debug("%s: tactic %s %.3f ms", layer.get("name"), tactic, ms)
        timed.append((ms, tactic))
        best_ms = min(best_ms, ms)
    if not timed:
        raise no_tactic_error(layer, getattr(runner, "pack", {}), failures)
    return [tactic for _, tactic in sorted(timed)]


# How the GPU libraries say they ran out of memory: CuPy's OutOfMemoryError, cuDNN's and cuBLAS's statuses,
# and cuDNN quoting the driver's CUDA_ERROR_OUT_OF_MEMORY (2) from a kernel launch ("err 2 != CUDA_SUCCESS",
# seen with five test processes on one H100, session 15).
_OUT_OF_MEMORY = ("outofmemory", "alloc_failed", "cudaerrormemoryallocation", "err2!=cuda_success")  # no spaces


def no_tactic_error(layer: dict, tensors: dict, failures: list[str]) -> BuildError:
    """Every tactic of `layer` failed while tuning: name the layer, its op and the tensors it was
    timed on, give every failure's reason once with the tactics it stopped, and say what to change
    when the GPU ran out of memory."""
    shapes = ", ".join(f"{_tensor_name(t)} {format_shape(a.shape)} {a.dtype}" for t, a in tensors.items()) or "not known"
    why = _grouped_reasons(failures) if failures else "no candidate could be set up"
    text = (f"layer '{layer.get('name')}' ({layer.get('kind')}) has no tactic that runs on this GPU; "
            f"tensors: {shapes}. {why}")
    if any(marker in f.lower().replace(" ", "") for f in failures for marker in _OUT_OF_MEMORY):
        text += (". The GPU ran out of memory while timing them: build with a smaller --max-batch, or on a GPU "
                 "that no other process is using (nvidia-smi lists them)")
    return BuildError(text)


def _grouped_reasons(failures: list[str]) -> str:
    """"cudnn:0, cudnn:1: REASON; cudnn:2: OTHER": failures are "TACTIC: REASON", and thirteen plans
    often fail for two reasons, which a list of the first few hid (session 15)."""
    by_reason: dict[str, list[str]] = {}
    for failure in failures:
        tactic, _, reason = failure.partition(": ")
        by_reason.setdefault(reason, []).append(tactic)
    return "; ".join(f"{', '.join(tactics)}: {reason}" for reason, tactics in by_reason.items())


def _tensor_name(tensor) -> str:
    """A cuDNN graph tensor by its name (its repr lists every attribute), anything else as itself."""
    get_name = getattr(tensor, "get_name", None)
    return str(get_name()) if callable(get_name) else str(tensor)


def _time_once(runner, stream) -> float:
    import cupy as cp

    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record(stream)
    runner()
    end.record(stream)
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end)
