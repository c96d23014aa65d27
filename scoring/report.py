"""Run metrics and the report a scoring job leaves behind.

A worker fills one `Metrics` (images, errors, seconds per stage, throughput samples, GPU power);
the driver hands them all to `write_report`, which writes three files into the output directory:

    report.json     every number: totals, images/s, stage seconds, GPU busy, watts, stragglers,
                    and where GPU decoding sent the rows (decoded_by)
    report.md       a short summary table, then one row per worker, then the stages
    throughput.png  images/s over time, one line per worker plus the total

`render(out_dir)` rewrites report.md and throughput.png from report.json alone (`batchscore report
DIR`); `combine_scaling(run_dirs)` turns the reports of runs with different worker counts into a
scaling table and scaling.png. `Progress` is the terminal progress line of the driver, and
`nvml_power_sampler()` samples a GPU's power and utilisation in the background where NVML is found.

Only the standard library and numpy are imported here; matplotlib is imported when a plot is drawn,
pynvml when a sampler is asked for.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Callable, Iterator

import numpy as np

from scoring.decode import available_cores
from scoring.errors import ScoringError
from scoring.steady_state import steady_rate

log = logging.getLogger(__name__)

STAGES = ("read", "decode", "h2d", "input", "compute", "d2h", "write")
REPORT_FORMAT = 1
STRAGGLER_THRESHOLD = 0.10  # a worker more than 10% below the median steady images/s is a straggler
# A straggler's thread "got dear" when its CPU per image is this many times the other workers' median
# for the same thread (on 4 x H200: 1.5-3x, benchmarks/results/scaling/h200x4_2026-11-22_s10_threads/).
DEAR_THREAD_RATIO = 1.3
MAX_SERIES_POINTS = 600  # per worker, in report.json


class ReportError(ScoringError):
    """A report directory or report.json that cannot be read."""


# ---------------------------------------------------------------------------------------------
# Metrics: what one worker measured
# ---------------------------------------------------------------------------------------------


@dataclass
class Metrics:
    """One worker's measurements. Times are seconds; `samples`, `watts` and `gpu_util` hold
    (seconds since `started_at`, value) pairs. `images` counts every row handled, error rows
    included; `errors` counts the error rows among them. `busy_fraction` is the share of the wall
    time the device was computing (from CUDA events, say); when it is None and NVML utilisation
    was sampled, the report uses the mean utilisation instead. `energy_j` over `energy_s` seconds
    is the GPU energy counter's difference, where NVML offers one; it gives the average watts in
    preference to the power samples."""

    worker: int | str
    device: str = "cpu"
    host: str = ""
    started_at: float = field(default_factory=time.time)  # epoch seconds
    images: int = 0
    errors: int = 0
    wall_s: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    busy_fraction: float | None = None
    startup_s: float | None = None  # from the worker's start to its first finished batch
    samples: list[tuple[float, int]] = field(default_factory=list)  # (t, images done)
    watts: list[tuple[float, float]] = field(default_factory=list)  # (t, W)
    gpu_util: list[tuple[float, float]] = field(default_factory=list)  # (t, percent)
    energy_j: float | None = None
    energy_s: float | None = None
    batch_latency_s: list[float] = field(default_factory=list)  # optional, per batch end to end
    # CPU seconds of the worker's process (every thread; not decode child processes) from its start
    # to finish(), and the cores it could use: where each worker's stages slow alike as workers are
    # added, they tell whether the host's cores were what the workers shared.
    cpu_s: float | None = None
    host_cores: int | None = field(default_factory=available_cores)
    # CPU seconds of the scoring loop's own threads ("main", the pipeline's "read", "decode-0", ...,
    # the part files' "parts"; time.thread_time): which of them a slow worker spent more on per image than the others.
    thread_cpu_s: dict[str, float] = field(default_factory=dict)
    # GPU decoding: rows per decode path (scoring.gpu_decode.DECODE_PATHS); empty where not counted.
    decoded_by: dict[str, int] = field(default_factory=dict)
    # CPUs the worker's threads left because they ran its work slowly (scoring.slow_cpus.SlowCpu dicts)
    slow_cpus: list[dict] = field(default_factory=list)
    # How the engine took device ring slots: "in place", or "copied: <why>" (scoring.gpu_runner)
    slot_input: str | None = None
    # The priority of the streams nvJPEG made for the hardware decoders, or why it was left as
    # nvJPEG sets it (scoring.nvjpeg_streams.state); None where no row went to the hardware decoder
    nvjpeg_streams: str | None = None
    # The CPUs the worker left because the GPU's interrupts go there (scoring.irq_cpus), in words;
    # None where it left none
    interrupt_cpus: str | None = None

    _SAMPLE_EVERY_S = 0.25

    def __post_init__(self) -> None:
        self._cpu_clock_at_start = time.process_time()  # not a field: meaningless in another process

    # -- conveniences for the worker loop --------------------------------------------------
    def now(self) -> float:
        return time.time() - self.started_at

    def add_stage(self, name: str, seconds: float) -> None:
        self.stages[name] = self.stages.get(name, 0.0) + float(seconds)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """`with metrics.stage("decode"): ...` adds the block's wall time to that stage."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add_stage(name, time.perf_counter() - start)

    def tick(self, images: int, errors: int | None = None) -> None:
        """Record the running totals after a batch; samples are kept at most every 0.25 s."""
        t = self.now()
        if self.startup_s is None and images > 0:
            self.startup_s = t
        self.images = int(images)
        if errors is not None:
            self.errors = int(errors)
        if not self.samples or t - self.samples[-1][0] >= self._SAMPLE_EVERY_S:
            self.samples.append((t, self.images))

    def finish(self) -> None:
        """Set the wall time and close the throughput series with the final count."""
        self.wall_s = self.now()
        self.cpu_s = time.process_time() - self._cpu_clock_at_start
        if not self.samples or self.samples[-1] != (self.wall_s, self.images):
            self.samples.append((self.wall_s, self.images))

    # -- transport (MPI gather, Ray object, JSON) ------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Metrics":
        known = {f.name for f in fields(cls)}
        m = cls(**{k: v for k, v in data.items() if k in known})
        m.samples = [(float(t), int(n)) for t, n in m.samples]
        m.watts = [(float(t), float(w)) for t, w in m.watts]
        m.gpu_util = [(float(t), float(u)) for t, u in m.gpu_util]
        return m


# ---------------------------------------------------------------------------------------------
# The report: numbers
# ---------------------------------------------------------------------------------------------


@dataclass
class Report:
    out_dir: Path
    data: dict
    json_path: Path
    md_path: Path
    png_path: Path | None  # None when matplotlib is not installed


def _mean(values) -> float | None:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else None


def _percentiles(values: list[float]) -> dict | None:
    if not values:
        return None
    p50, p90, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 90, 99])
    return {"p50_s": float(p50), "p90_s": float(p90), "p99_s": float(p99), "batches": len(values)}


def average_watts(source) -> float | None:
    """A GPU's average power over a window, from a Metrics or a stopped PowerSampler: the energy
    counter's difference where the GPU has one, else the mean of the power samples. NVML's power
    reading is itself averaged over about a second, so over a run of a second or two the samples
    lag far behind (an H100 replaying ResNet-50 at 687 W read 223 W that way in `bench`). A counter
    that did not advance (a window shorter than its update period: 20 ms of batch 1) is no reading."""
    if source.energy_j and source.energy_s:
        return source.energy_j / source.energy_s
    return _mean(w for _, w in source.watts)


def _busy(m: Metrics) -> tuple[float | None, str | None]:
    if m.busy_fraction is not None:
        return float(m.busy_fraction), "measured"
    util = _mean(u for _, u in m.gpu_util)
    if util is not None:
        return util / 100.0, "nvml"
    return None, None


def _downsample(samples: list[tuple[float, int]], limit: int = MAX_SERIES_POINTS) -> list[list[float]]:
    if len(samples) <= limit:
        picked = samples
    else:
        idx = np.unique(np.linspace(0, len(samples) - 1, limit).round().astype(int))
        picked = [samples[i] for i in idx]
    return [[round(float(t), 4), int(n)] for t, n in picked]


def _stage_table(stages: dict[str, float], wall_s: float) -> dict[str, dict]:
    names = [s for s in STAGES if s in stages] + sorted(s for s in stages if s not in STAGES)
    return {s: {"seconds": float(stages[s]), "fraction": (stages[s] / wall_s if wall_s > 0 else None)}
            for s in names}


def _launch_to_first_batch(launched, m: Metrics) -> float | None:
    """Seconds from the job's launch to this worker's first finished batch; None when either end
    is unknown (a report from before launches were timed, a worker that finished no batch)."""
    if launched is None or m.startup_s is None:
        return None
    return float(m.started_at) + float(m.startup_s) - float(launched)


def build_report(job_info: dict, metrics: list[Metrics]) -> dict:
    """The contents of report.json, computed from the workers' metrics (pure; no files)."""
    if not metrics:
        raise ReportError("no worker metrics were given, so there is nothing to report: "
                          "did every worker fail before its first batch?")
    t0 = min(m.started_at for m in metrics)
    end = max(m.started_at + m.wall_s for m in metrics)
    wall_s = float(job_info.get("wall_s") or (end - t0))
    images = sum(int(m.images) for m in metrics)
    errors = sum(int(m.errors) for m in metrics)

    # The launchers record when the command started ("started_at", epoch seconds); a worker's first
    # batch is then counted from there, so process start, plan load and GPU setup are all included.
    launched = job_info.get("started_at")
    workers = []
    for m in metrics:
        busy, busy_source = _busy(m)
        watts = average_watts(m)
        ips = m.images / m.wall_s if m.wall_s > 0 else 0.0
        workers.append({
            "worker": m.worker,
            "device": m.device,
            "host": m.host,
            "images": int(m.images),
            "errors": int(m.errors),
            "wall_s": float(m.wall_s),
            "images_per_s": ips,
            "busy_fraction": busy,
            "busy_source": busy_source,
            "startup_s": m.startup_s,
            "launch_to_first_batch_s": _launch_to_first_batch(launched, m),
            "avg_watts": watts,
            "images_per_s_per_watt": (ips / watts if watts else None),
            "latency": _percentiles(m.batch_latency_s),
            "stages": _stage_table(m.stages, m.wall_s),
            "cpu_s": m.cpu_s,
            "cpu_cores_busy": (m.cpu_s / m.wall_s if m.cpu_s is not None and m.wall_s > 0 else None),
            "thread_cpu_us_per_image": ({name: 1e6 * s / m.images for name, s in sorted(m.thread_cpu_s.items())}
                                        if m.images else {}),
            "host_cores": m.host_cores,
            "decoded_by": dict(m.decoded_by) or None,
            "slot_input": m.slot_input,
            "nvjpeg_streams": m.nvjpeg_streams,
            "interrupt_cpus_left": m.interrupt_cpus,
            "slow_cpus_left": list(m.slow_cpus),
        })

    # A straggler is slow once it runs, not late to start: with shards handed out dynamically, a
    # worker that starts late scores fewer images over the job's wall time at full speed.
    steady = [steady_rate(m.samples) for m in metrics]
    use_steady = all(r is not None for r in steady)
    for w, r in zip(workers, steady):
        w["steady_images_per_s"] = r
    median = float(np.median([w["images_per_s"] for w in workers]))
    rates = [w["steady_images_per_s"] if use_steady else w["images_per_s"] for w in workers]
    typical = float(np.median(rates))
    stragglers = []
    for w, rate in zip(workers, rates):
        below = (1.0 - rate / typical) if typical > 0 else 0.0
        w["below_median"] = below
        w["straggler"] = len(workers) > 1 and below > STRAGGLER_THRESHOLD
        if w["straggler"]:
            stragglers.append(w["worker"])
            w["dear_thread"] = dear_thread(w, [o for o in workers if o is not w])

    total_worker_s = sum(m.wall_s for m in metrics)
    stage_sums: dict[str, float] = {}
    for m in metrics:
        for name, secs in m.stages.items():
            stage_sums[name] = stage_sums.get(name, 0.0) + float(secs)
    stages = _stage_table(stage_sums, total_worker_s)
    bottleneck = max(stages, key=lambda s: stages[s]["seconds"]) if stages else None

    # GPU busy: weighted by each worker's wall time, over the workers that measured it.
    busy_pairs = [(w["busy_fraction"], w["wall_s"]) for w in workers if w["busy_fraction"] is not None]
    busy_weight = sum(s for _, s in busy_pairs)
    busy = (sum(b * s for b, s in busy_pairs) / busy_weight if busy_weight > 0
            else _mean(b for b, _ in busy_pairs))

    powered = [w for w in workers if w["avg_watts"]]
    total_watts = sum(w["avg_watts"] for w in powered) if powered else None
    powered_ips = sum(w["images_per_s"] for w in powered)

    startups = [w["startup_s"] for w in workers if w["startup_s"] is not None]
    firsts = [w for w in workers if w["launch_to_first_batch_s"] is not None]
    slowest_start = max(firsts, key=lambda w: w["launch_to_first_batch_s"]) if firsts else None
    ips = images / wall_s if wall_s > 0 else 0.0
    timed_cpu = [m for m in metrics if m.cpu_s is not None]
    cpu_s = sum(m.cpu_s for m in timed_cpu) if len(timed_cpu) == len(metrics) else None
    hosts = {m.host: m.host_cores for m in metrics}
    host_cores = sum(hosts.values()) if None not in hosts.values() else None
    summary = {
        "workers": len(workers),
        "images": images,
        "errors": errors,
        "error_fraction": errors / images if images else 0.0,
        "wall_s": wall_s,
        "images_per_s": ips,
        "images_per_s_per_worker": ips / len(workers),
        "median_worker_images_per_s": median,
        "busy_fraction": busy,
        "avg_watts": total_watts,  # all sampled GPUs together
        "powered_workers": len(powered),
        "images_per_s_per_watt": (powered_ips / total_watts if total_watts else None),
        "startup_s": ({"min": min(startups), "median": float(np.median(startups)), "max": max(startups)}
                      if startups else None),
        # the last GPU to finish its first batch: when every GPU of the job was working
        "launch_to_first_batch_s": slowest_start["launch_to_first_batch_s"] if slowest_start else None,
        "launch_to_first_batch_worker": slowest_start["worker"] if slowest_start else None,
        "stragglers": stragglers,
        "bottleneck": bottleneck,
        "latency": _percentiles([x for m in metrics for x in m.batch_latency_s]),
        # the workers' CPU time: per image, and as cores kept busy on average out of their hosts' cores
        "cpu_us_per_image": (1e6 * cpu_s / images if cpu_s is not None and images else None),
        "cpu_cores_busy": (cpu_s / wall_s if cpu_s is not None and wall_s > 0 else None),
        "host_cores": host_cores,
        "decoded_by": sum_counts(m.decoded_by for m in metrics),
    }
    series = {str(m.worker): _downsample([(t + m.started_at - t0, n) for t, n in m.samples])
              for m in metrics}
    return {
        "format": REPORT_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "job": job_info,
        "summary": summary,
        "workers": workers,
        "stages": stages,
        "series": {"t0": t0, "workers": series},
    }


def sum_counts(counts) -> dict[str, int] | None:
    """Dicts of counts summed by key; None where none has any."""
    total: dict[str, int] = {}
    for one in counts:
        for key, n in one.items():
            total[key] = total.get(key, 0) + int(n)
    return total or None


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _finite(obj):
    """JSON has no NaN or infinity: such numbers become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


def write_report(out_dir, job_info: dict, metrics: list[Metrics]) -> Report:
    """Write report.json, report.md and throughput.png into out_dir; return what was written.
    job_info is free-form and JSON-able (name, model, source, launcher, ...); its "wall_s", when
    given, is the job's wall time, otherwise the span from the first worker's start to the last
    worker's end."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = _finite(build_report(dict(job_info or {}), metrics))
    text = json.dumps(data, indent=2, default=str, allow_nan=False) + "\n"
    _atomic_write(out / "report.json", text.encode())
    return _render(out, json.loads(text))


def load_report(out_dir) -> dict:
    path = Path(out_dir)
    path = path if path.name == "report.json" else path / "report.json"
    if not path.is_file():
        where = path.parent
        hint = "" if where.is_dir() else f" (the directory {where} does not exist either)"
        raise ReportError(f"no report.json in {where}{hint}: give the output directory of a finished "
                          f"`batchscore run`, which writes its report there.")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path} cannot be read as JSON ({exc}); rerun the job, or restore the file.") from None
    if not isinstance(data, dict) or "summary" not in data or "workers" not in data:
        raise ReportError(f"{path} is JSON but not a batchscore report (no 'summary' and 'workers').")
    if int(data.get("format", 0)) > REPORT_FORMAT:
        raise ReportError(f"{path} is report format {data.get('format')}, newer than this batchscore "
                          f"reads ({REPORT_FORMAT}); upgrade batchscore to render it.")
    return data


def render(out_dir) -> Report:
    """Rewrite report.md and throughput.png from the report.json in out_dir."""
    out = Path(out_dir)
    if out.name == "report.json":
        out = out.parent
    return _render(out, load_report(out))


def _render(out: Path, data: dict) -> Report:
    md_path = out / "report.md"
    _atomic_write(md_path, render_markdown(data).encode())
    png_path = out / "throughput.png"
    if not plot_throughput(data, png_path):
        png_path = None
    return Report(out, data, out / "report.json", md_path, png_path)


# ---------------------------------------------------------------------------------------------
# The report: Markdown
# ---------------------------------------------------------------------------------------------


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s" if s >= 0.1 or s == 0 else f"{s * 1000:.0f} ms"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _fmt_rate(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:,.0f}" if r >= 100 else f"{r:,.1f}" if r >= 1 else f"{r:.3g}"


def _fmt_pct(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    sep = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"] + [
        "| " + " | ".join(r) + " |" for r in rows]


def _job_value(key: str, value) -> str:
    if key == "started_at" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(value))  # an epoch means nothing to a reader
    return f"`{value}`" if isinstance(value, str) else str(value)


DECODE_PATH_NAMES = {"hardware": "the GPU's hardware JPEG decoder", "nvimgcodec": "nvImageCodec",
                     "tensor": "none (decoded tensors)", "cpu": "Pillow on the CPU"}


def _ways_text(workers: list[dict], key: str) -> str | None:
    """What the workers say under `key` (how the engine took its device ring slots, the priority
    of nvJPEG's streams): each way, with the workers that took it where they differ; None where
    no worker says."""
    by_way: dict[str, list] = {}
    for w in workers:
        if w.get(key):
            by_way.setdefault(w[key], []).append(w["worker"])
    if not by_way:
        return None
    if len(by_way) == 1 and len(next(iter(by_way.values()))) == len(workers):
        return next(iter(by_way))
    return "; ".join(f"{way} (workers {', '.join(map(str, ids))})" for way, ids in by_way.items())


def _decoded_by_text(counts: dict[str, int]) -> str:
    """Where the rows were decoded, largest share first: "the GPU's hardware JPEG decoder 99.9%, ..."."""
    total = sum(counts.values())
    if not total:
        return "-"
    shares = sorted(((n, key) for key, n in counts.items() if n), reverse=True)
    return ", ".join(f"{DECODE_PATH_NAMES.get(key, key)} {_fmt_pct(n / total, 1)} ({n:,})" for n, key in shares)


def render_markdown(data: dict) -> str:
    s, workers, job = data["summary"], data["workers"], data.get("job") or {}
    title = job.get("name") or "batch scoring"
    lines = [f"# Report: {title}", ""]

    err = f"{s['errors']:,} errors ({_fmt_pct(s['error_fraction'], 2)})" if s["errors"] else "no errors"
    rows = [
        ["Images", f"{s['images']:,}, {err}"],
        ["Wall time", fmt_seconds(s["wall_s"])],
        ["Throughput", f"{_fmt_rate(s['images_per_s'])} images/s on {s['workers']} worker"
                       f"{'s' if s['workers'] != 1 else ''} ({_fmt_rate(s['images_per_s_per_worker'])} per worker)"],
        ["GPU busy", _fmt_pct(s["busy_fraction"])],
    ]
    if s.get("avg_watts"):
        n = s.get("powered_workers", 0)
        rows.append(["Power", f"{s['avg_watts']:,.0f} W average over {n} GPU{'s' if n != 1 else ''}, "
                              f"{s['images_per_s_per_watt']:.3g} images/s per W"])
    if s.get("latency"):
        lat = s["latency"]
        rows.append(["Batch latency", f"p50 {fmt_seconds(lat['p50_s'])}, p90 {fmt_seconds(lat['p90_s'])}, "
                                      f"p99 {fmt_seconds(lat['p99_s'])}"])
    if s.get("startup_s"):
        st = s["startup_s"]
        spread = f" ({fmt_seconds(st['min'])} to {fmt_seconds(st['max'])})" if s["workers"] > 1 else ""
        rows.append(["Start to first batch", f"{fmt_seconds(st['median'])} median{spread}"
                     if s["workers"] > 1 else fmt_seconds(st["median"])])
    if s.get("launch_to_first_batch_s") is not None:
        first = fmt_seconds(s["launch_to_first_batch_s"])
        if s["workers"] > 1:
            first += f" until every worker had a batch done (the last: worker {s['launch_to_first_batch_worker']})"
        rows.append(["Launch to first batch", first])
    by_id = {str(w["worker"]): w for w in workers}
    if s["stragglers"]:
        rows.append(["Stragglers", "; ".join(_straggler_text(by_id[str(k)]) for k in s["stragglers"])])
    elif s["workers"] > 1:
        rows.append(["Stragglers", "none (all within 10% of the median)"])
    if s.get("cpu_us_per_image") is not None:
        of = f" of {s['host_cores']}" if s.get("host_cores") else ""
        rows.append(["Worker CPU", f"{s['cpu_us_per_image']:,.0f} µs per image; {s['cpu_cores_busy']:.1f} cores "
                                   f"busy on average{of}"])
    if s.get("decoded_by"):
        rows.append(["Decoded by", _decoded_by_text(s["decoded_by"])])
    for key, name in (("slot_input", "Engine input"), ("nvjpeg_streams", "nvJPEG streams"),
                      ("interrupt_cpus_left", "GPU interrupt CPUs left")):
        ways = _ways_text(workers, key)
        if ways:
            rows.append([name, ways])
    left = [w for w in workers if w.get("slow_cpus_left")]
    if left:
        rows.append(["Slow CPUs left", "; ".join(_slow_cpus_text(w, len(workers) > 1) for w in left)])
    if s.get("bottleneck"):
        b = s["bottleneck"]
        rows.append(["Busiest stage", f"{b} ({_fmt_pct(data['stages'][b]['fraction'])} of worker time)"])
    lines += _table(["Summary", ""], rows, "ll")

    lines += ["", "## Workers", ""]
    has_watts = any(w.get("avg_watts") for w in workers)
    has_launch = any(w.get("launch_to_first_batch_s") is not None for w in workers)
    header = ["Worker", "Device", "Images", "Errors", "images/s", "GPU busy", "Start"]
    header += ["From launch"] if has_launch else []
    header += ["Watts", "images/s/W"] if has_watts else []
    rows = []
    for w in workers:
        name = f"{w['worker']}" + (" (straggler)" if w.get("straggler") else "")
        device = w["device"] + (f" on {w['host']}" if w.get("host") else "")
        row = [name, device, f"{w['images']:,}", f"{w['errors']:,}", _fmt_rate(w["images_per_s"]),
               _fmt_pct(w["busy_fraction"]), fmt_seconds(w["startup_s"])]
        if has_launch:
            row.append(fmt_seconds(w.get("launch_to_first_batch_s")))
        if has_watts:
            row += [f"{w['avg_watts']:.0f}" if w.get("avg_watts") else "-",
                    f"{w['images_per_s_per_watt']:.3g}" if w.get("images_per_s_per_watt") else "-"]
        rows.append(row)
    lines += _table(header, rows, "llrrrrr" + "r" * has_launch + "rr" * has_watts)

    if data.get("stages"):
        lines += ["", "## Stages", "",
                  "Seconds summed over all workers; the share is of the workers' wall time. The stages "
                  "overlap in the pipeline, so the shares may add up to more than 100%.", ""]
        rows = [[name, f"{st['seconds']:,.1f}", _fmt_pct(st["fraction"])] for name, st in data["stages"].items()]
        lines += _table(["Stage", "Seconds", "Share"], rows, "lrr")

    scalars = {k: v for k, v in job.items() if k != "name" and isinstance(v, (str, int, float, bool))}
    if scalars:
        lines += ["", "## Job", ""]
        lines += _table(["", ""], [[k, _job_value(k, v)] for k, v in scalars.items()], "ll")
    lines += ["", "![images/s over time](throughput.png)", ""]
    return "\n".join(lines)


def _slow_cpus_text(w: dict, name_worker: bool) -> str:
    """"worker 0: CPU 15 (read thread: 44 µs of CPU per row there, 15 on CPU 47)"."""
    from scoring.slow_cpus import describe

    cpus = ", ".join(describe(c) for c in w["slow_cpus_left"])
    return f"worker {w['worker']}: {cpus}" if name_worker else cpus


def _straggler_text(w: dict) -> str:
    text = f"worker {w['worker']} ({_fmt_pct(w['below_median'])} below median"
    dear = w.get("dear_thread")
    if dear:
        text += (f"; its {dear['thread']} thread used {dear['us_per_image']:,.0f} µs of CPU per image, the "
                 f"others' {dear['others_us_per_image']:,.0f}")
    return text + ")"


# ---------------------------------------------------------------------------------------------
# The report: plots
# ---------------------------------------------------------------------------------------------


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed, so no plot was drawn (pip install matplotlib)")
        return None
    return plt


def throughput_curves(series: dict[str, list], points: int = 200) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Images/s over time from cumulative (t, images done) samples: a common time grid, the rate
    of each worker on it, and their total. Rates are differences over a window of about 1/40 of
    the run (at least a second), so the lines show trends rather than batch-by-batch noise."""
    series = {k: np.asarray(v, dtype=np.float64).reshape(-1, 2) for k, v in series.items()}
    series = {k: v for k, v in series.items() if len(v)}
    if not series:
        return np.zeros(0), {}, np.zeros(0)
    end = max(float(v[:, 0].max()) for v in series.values())
    grid = np.linspace(0.0, end, points + 1) if end > 0 else np.zeros(1)
    window = max(end / 40.0, 1.0, 2 * (grid[1] - grid[0]) if len(grid) > 1 else 0)
    lag = grid - window

    def rate(t, n):
        # The first sample counts the images of the first batch, done before it; spread them back
        # at the rate of the next interval instead of a jump (a spike) at the first sample.
        begin = t[0]
        if len(t) > 1 and n[1] > n[0] > 0 and t[1] > t[0]:
            begin = max(t[0] - n[0] * (t[1] - t[0]) / (n[1] - n[0]), 0.0)
            t, n = np.concatenate([[begin], t]), np.concatenate([[0.0], n])
        done = np.interp(grid, t, n, left=0.0)
        before = np.interp(np.maximum(lag, 0.0), t, n, left=0.0)
        span = np.clip(grid - begin, 0.0, window)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(span > 0, (done - before) / span, 0.0)
        # no line before a worker's first images, nor after its last sample
        return np.where((grid >= begin) & (grid <= t[-1] + 1e-9), r, np.nan), done

    per_worker, total_done = {}, np.zeros_like(grid)
    for k, v in series.items():
        order = np.argsort(v[:, 0], kind="stable")
        t, n = v[order, 0], v[order, 1]
        per_worker[k], done = rate(t, n)
        total_done += done
    before = np.interp(np.maximum(lag, 0.0), grid, total_done)
    span = np.minimum(grid, window)
    with np.errstate(divide="ignore", invalid="ignore"):
        total = np.where(span > 0, (total_done - before) / span, 0.0)
    return grid, per_worker, total


def plot_throughput(data: dict, path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    grid, per_worker, total = throughput_curves(data.get("series", {}).get("workers", {}))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        many = len(per_worker) > 12
        for k, r in per_worker.items():
            ax.plot(grid, r, lw=0.8 if many else 1.2, alpha=0.5 if many else 0.9,
                    color="0.6" if many else None, label=None if many else f"worker {k}")
        if len(per_worker) > 1 or not per_worker:
            ax.plot(grid, total, color="black", lw=2, label="total")
        ax.set_xlabel("seconds since the first worker started")
        ax.set_ylabel("images/s")
        title = (data.get("job") or {}).get("name") or "throughput"
        ax.set_title(f"{title}: {_fmt_rate(data['summary']['images_per_s'])} images/s overall")
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        if per_worker:
            ax.legend(loc="best", fontsize="small", ncol=2 if len(per_worker) > 6 else 1)
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)
    return True


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, format="png", metadata={"Software": None})  # no version stamp: reproducible bytes
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Scaling across runs with different worker counts
# ---------------------------------------------------------------------------------------------


def dear_thread(worker: dict, others: list[dict]) -> dict | None:
    """The thread on which `worker` spent the most CPU per image against the median of the same
    thread in `others`, when at least DEAR_THREAD_RATIO times it: {"thread", "us_per_image",
    "others_us_per_image"}; None when none stands out or the threads were not measured."""
    best = None
    for name, mine in (worker.get("thread_cpu_us_per_image") or {}).items():
        theirs = [o["thread_cpu_us_per_image"][name] for o in others
                  if name in (o.get("thread_cpu_us_per_image") or {})]
        if not theirs or mine <= 0:
            continue
        typical = float(np.median(theirs))
        ratio = mine / typical if typical > 0 else float("inf")
        if ratio >= DEAR_THREAD_RATIO and (best is None or ratio > best[0]):
            best = (ratio, {"thread": name, "us_per_image": mine, "others_us_per_image": typical})
    return best[1] if best else None


def steady_images_per_s(report: dict, rate=steady_rate) -> float | None:
    """Images/s summed over the workers, each over its steady state (scoring.steady_state: the
    middle of its rows, start-up and the end's tail left out). `rate`: first_batch_to_end_rate for
    the figure from each worker's first finished batch to its end instead."""
    rates = [rate(series) for series in (report.get("series") or {}).get("workers", {}).values()]
    rates = [r for r in rates if r is not None]
    return sum(rates) if rates else None


def combine_scaling(run_dirs, out_dir=None) -> dict:
    """A scaling table from the reports of several runs (one per worker count): images/s,
    speedup and efficiency against the run with the fewest workers, images/s per worker, the
    stragglers of each run (workers more than 10% below its median); the
    same for the steady state (each worker over the middle of its rows: scoring.steady_state), which leaves out
    the start-up that dominates short runs; and each pipeline stage's seconds per image, summed
    over the workers, which says what got slower when every worker slows alike (a resource the
    workers share). Writes scaling.json, scaling.md and scaling.png into out_dir (default: the
    runs' common parent)."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ReportError("no run directories were given to compare")
    rows = []
    for d in run_dirs:
        report = load_report(d)
        s = report["summary"]
        rows.append({"run": str(d), "workers": int(s["workers"]), "images": int(s["images"]),
                     "wall_s": float(s["wall_s"]), "images_per_s": float(s["images_per_s"]),
                     "steady_images_per_s": steady_images_per_s(report),
                     "stragglers": list(s.get("stragglers") or []),
                     # a straggler's thread whose CPU per image grew (see dear_thread)
                     "dear_threads": {str(w["worker"]): w["dear_thread"]["thread"]
                                      for w in report.get("workers", []) if w.get("dear_thread")},
                     # CPUs each worker's threads left as slow (scoring.slow_cpus)
                     "slow_cpus_left": {str(w["worker"]): [c["cpu"] for c in w["slow_cpus_left"]]
                                        for w in report.get("workers", []) if w.get("slow_cpus_left")},
                     "stage_us_per_image": stage_us_per_image(report)})
    rows.sort(key=lambda r: (r["workers"], r["run"]))
    base_workers = rows[0]["workers"]
    base_ips = _mean(r["images_per_s"] for r in rows if r["workers"] == base_workers)
    steady_bases = [r["steady_images_per_s"] for r in rows if r["workers"] == base_workers]
    base_steady = _mean(steady_bases) if all(v is not None for v in steady_bases) else None
    for r in rows:
        ideal = r["workers"] / base_workers
        r["images_per_s_per_worker"] = r["images_per_s"] / r["workers"]
        r["speedup"] = r["images_per_s"] / base_ips if base_ips else None
        r["efficiency"] = r["speedup"] / ideal if r["speedup"] is not None else None
        steady = r["steady_images_per_s"]
        r["steady_efficiency"] = steady / base_steady / ideal if steady is not None and base_steady else None
    result = {"baseline_workers": base_workers, "baseline_images_per_s": base_ips,
              "baseline_steady_images_per_s": base_steady, "runs": rows}

    out = Path(out_dir) if out_dir is not None else Path(os.path.commonpath([str(d.resolve()) for d in run_dirs]))
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "scaling.json", (json.dumps(result, indent=2) + "\n").encode())
    _atomic_write(out / "scaling.md", render_scaling_markdown(result).encode())
    png = out / "scaling.png"
    result["files"] = {"json": str(out / "scaling.json"), "md": str(out / "scaling.md"),
                       "png": str(png) if plot_scaling(result, png) else None}
    return result


PER_IMAGE_STAGES = ("read", "decode", "h2d", "input", "compute", "write")  # "load" is once per worker


def stage_us_per_image(report: dict) -> dict[str, float]:
    """Each per-image stage's seconds, summed over the run's workers, per image scored, in µs; and
    "cpu", the workers' CPU time per image, where they measured it."""
    images = int(report["summary"]["images"])
    stages = report.get("stages") or {}
    result = {name: 1e6 * float(stages[name]["seconds"]) / images for name in PER_IMAGE_STAGES
              if name in stages and images > 0}
    cpu = report["summary"].get("cpu_us_per_image")
    if cpu is not None:
        result["cpu"] = float(cpu)
    return result


def render_scaling_markdown(result: dict) -> str:
    rows = [[str(r["workers"]), _fmt_rate(r["images_per_s"]), _fmt_rate(r["images_per_s_per_worker"]),
             "-" if r["speedup"] is None else f"{r['speedup']:.2f}x", _fmt_pct(r["efficiency"]),
             _steady_cell(r.get("steady_images_per_s"), r["workers"]), _fmt_pct(r.get("steady_efficiency")),
             _stragglers_cell(r), f"`{r['run']}`"] for r in result["runs"]]
    lines = ["# Scaling", "",
             f"Speedup and efficiency are against {result['baseline_workers']} worker"
             f"{'s' if result['baseline_workers'] != 1 else ''}; 100% efficiency is linear scaling. "
             "images/s counts from launch to the end (start-up included); steady counts each worker "
             "over the middle of its rows (from 20% done to 90% done).", ""]
    lines += _table(["Workers", "images/s", "per worker", "Speedup", "Efficiency", "Steady per worker",
                     "Steady efficiency", "Stragglers", "Run"], rows, "rrrrrrrll")
    lines += ["", "![images/s against workers](scaling.png)", ""]
    lines += _stage_cost_table(result["runs"])
    return "\n".join(lines)


def _stragglers_cell(run: dict) -> str:
    """Stragglers of a run, each with its dear thread when one stood out: "1 (read), 3"."""
    dear = run.get("dear_threads") or {}
    cells = [f"{k} ({dear[str(k)]})" if str(k) in dear else str(k) for k in run.get("stragglers") or []]
    return ", ".join(cells) or "none"


def _stage_cost_table(runs: list[dict]) -> list[str]:
    """µs per image of each stage, with its ratio to the baseline run's where it moved by 10% or more."""
    names = [n for n in PER_IMAGE_STAGES + ("cpu",) if any(n in r.get("stage_us_per_image", {}) for r in runs)]
    if not names:
        return []
    base = runs[0].get("stage_us_per_image", {})
    rows = []
    for r in runs:
        cells = [str(r["workers"])]
        for name in names:
            value, first = r.get("stage_us_per_image", {}).get(name), base.get(name)
            if value is None:
                cells.append("-")
                continue
            moved = first and abs(value / first - 1) >= 0.10
            cells.append(f"{value:,.0f}" + (f" ({value / first:.2f}x)" if moved else ""))
        rows.append(cells)
    return (["## Stage time per image", "",
             "Microseconds of each stage per image scored, summed over the workers (the stages overlap, "
             "so they do not add up to the wall time); in brackets, against the first run where it moved "
             "10% or more. A stage that grows with the worker count while each worker slows alike points "
             "at something the workers share. cpu is the workers' processes' CPU time (every thread) per "
             "image: where it stays flat while the stages grow, the work did not grow but waited.", ""]
            + _table(["Workers", *names], rows, "r" * (len(names) + 1)) + [""])


def _steady_cell(steady: float | None, workers: int) -> str:
    return "-" if steady is None else _fmt_rate(steady / workers)


def plot_scaling(result: dict, path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    rows = result["runs"]
    w = np.array([r["workers"] for r in rows], dtype=float)
    ips = np.array([r["images_per_s"] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    try:
        # Each measure against its own linear line: the steady rates leave start-up out, so they
        # lie above the launch-to-end line's linear scaling without being super-linear.
        xs = np.array([0.0, w.max()])
        if result["baseline_images_per_s"]:
            per = result["baseline_images_per_s"] / result["baseline_workers"]
            ax.plot(xs, per * xs, "--", color="C0", alpha=0.5, label="linear, launch to end")
        ax.plot(w, ips, "o-", color="C0", label="measured, launch to end")
        steady = [(r["workers"], r["steady_images_per_s"]) for r in rows if r.get("steady_images_per_s")]
        if len(steady) == len(rows):
            if result.get("baseline_steady_images_per_s"):
                per = result["baseline_steady_images_per_s"] / result["baseline_workers"]
                ax.plot(xs, per * xs, "--", color="C1", alpha=0.5, label="linear, steady state")
            ax.plot([x for x, _ in steady], [y for _, y in steady], "s-", color="C1",
                    label="measured, steady state")
        for r in rows:
            for key, rate, colour in (("efficiency", "images_per_s", "C0"),
                                      ("steady_efficiency", "steady_images_per_s", "C1")):
                if r.get(key) is not None and r.get(rate):
                    ax.annotate(f"{100 * r[key]:.0f}%", (r["workers"], r[rate]), color=colour,
                                textcoords="offset points", xytext=(4, -12), fontsize="small")
        ax.set_xlabel("workers")
        ax.set_ylabel("images/s")
        ax.set_title("throughput against worker count (labels: efficiency)")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.set_xticks(sorted(set(int(x) for x in w)))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------
# Progress: one line on a terminal, periodic lines in a log
# ---------------------------------------------------------------------------------------------


class Progress:
    """Images done out of total, images/s over the last few seconds, ETA and errors.

    On a terminal the line is redrawn in place at most `redraw_s` apart; when the stream is not a
    terminal (a log file, a CI job) a plain line is written every `log_every_s`; with quiet=True
    nothing is written. `update` adds to the counts, `set` replaces them (a driver summing the
    workers' totals); both are thread-safe. Use as a context manager or call `close()`.
    """

    def __init__(self, total: int | None, *, label: str = "scoring", quiet: bool = False,
                 stream: IO[str] | None = None, tty: bool | None = None, redraw_s: float = 0.25,
                 log_every_s: float = 10.0, window_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.label = label
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stdout
        self.tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = redraw_s if self.tty else log_every_s
        self.window_s = window_s
        self.clock = clock
        self.done = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._start = clock()
        self._last_draw: float | None = None
        self._history: deque[tuple[float, int]] = deque([(self._start, 0)])
        self._width = 0
        self._closed = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, images: int = 0, errors: int = 0) -> None:
        with self._lock:
            self.done += images
            self.errors += errors
            self._advance()

    def set(self, done: int, errors: int = 0) -> None:
        with self._lock:
            self.done, self.errors = done, errors
            self._advance()

    def _advance(self) -> None:
        now = self.clock()
        self._history.append((now, self.done))
        while len(self._history) > 2 and now - self._history[1][0] >= self.window_s:
            self._history.popleft()
        if self._last_draw is None or now - self._last_draw >= self.every:
            self._draw(now)

    def rate(self, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        t0, n0 = self._history[0]
        return (self.done - n0) / (now - t0) if now > t0 else 0.0

    def line(self, now: float | None = None, final: bool = False) -> str:
        now = self.clock() if now is None else now
        elapsed = now - self._start
        rate = self.done / elapsed if final and elapsed > 0 else self.rate(now)
        parts = [self.label]
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(20 * frac)
            parts.append(f"[{bar:.<20}] {self.done:,}/{self.total:,} ({100 * frac:.0f}%)")
        else:
            parts.append(f"{self.done:,} images")
        parts.append(f"{_fmt_rate(rate)} images/s")
        if final:
            parts.append(f"in {_clock(elapsed)}")
        elif self.total:
            left = self.total - self.done
            parts.append(f"ETA {_clock(left / rate) if rate > 0 else '?'}")
        parts.append(f"{self.errors:,} error{'s' if self.errors != 1 else ''}")
        return "  ".join(parts)

    def _draw(self, now: float, final: bool = False) -> None:
        self._last_draw = now
        if self.quiet:
            return
        text = self.line(now, final)
        if self.tty:
            cols = shutil.get_terminal_size((100, 20)).columns - 1
            text = text[:cols]
            pad = " " * max(self._width - len(text), 0)
            self._width = len(text)
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._draw(self.clock(), final=True)


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# ---------------------------------------------------------------------------------------------
# GPU power and utilisation through NVML
# ---------------------------------------------------------------------------------------------


class PowerSampler:
    """Samples one GPU's power (W) and utilisation (%) every `interval_s` on a daemon thread.

    `available` is False where pynvml is missing or finds no GPU: then start/stop do nothing and
    the lists stay empty. Times are seconds since `t0` (epoch seconds, e.g. Metrics.started_at).
    Where the GPU has an energy counter (Volta and later), `energy_j` is its difference between
    start and stop, a better average than the power samples."""

    def __init__(self, nvml=None, handle=None, interval_s: float = 0.5, t0: float | None = None):
        self._nvml, self._handle = nvml, handle
        self.available = handle is not None
        self.interval_s = interval_s
        self.t0 = time.time() if t0 is None else t0
        self.watts: list[tuple[float, float]] = []
        self.util: list[tuple[float, float]] = []
        self.energy_j: float | None = None
        self.energy_s: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy0: tuple[float, float] | None = None

    def __enter__(self) -> "PowerSampler":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _energy(self) -> tuple[float, float] | None:
        """(time, joules) from the GPU's energy counter, or None where it has none."""
        try:
            return time.time(), self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0  # mJ
        except Exception:
            return None

    def sample(self) -> None:
        t = time.time() - self.t0
        try:
            self.watts.append((t, self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0))  # mW
        except Exception:
            pass
        try:
            self.util.append((t, float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)))
        except Exception:
            pass

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> "PowerSampler":
        if self.available and self._thread is None:
            self._energy0 = self._energy()
            self.sample()
            self._thread = threading.Thread(target=self._loop, name="nvml-power", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        self.sample()
        e1, e0 = self._energy(), self._energy0
        if e0 is not None and e1 is not None and e1[1] >= e0[1] and e1[0] > e0[0]:
            self.energy_j, self.energy_s = e1[1] - e0[1], e1[0] - e0[0]
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass

    def record_into(self, metrics: Metrics) -> None:
        """Copy the samples into a worker's Metrics (nothing when NVML was not available)."""
        if self.available:
            shift = self.t0 - metrics.started_at
            metrics.watts = [(t + shift, w) for t, w in self.watts]
            metrics.gpu_util = [(t + shift, u) for t, u in self.util]
            metrics.energy_j, metrics.energy_s = self.energy_j, self.energy_s


def _nvml_handle(nvml, device: int):
    """The NVML handle of CUDA device `device` as this process sees it: NVML ignores
    CUDA_VISIBLE_DEVICES, so a worker pinned by it is mapped back to the physical GPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip():
        entries = [e.strip() for e in visible.split(",") if e.strip()]
        entry = entries[device]
        if entry.isdigit():
            return nvml.nvmlDeviceGetHandleByIndex(int(entry))
        return nvml.nvmlDeviceGetHandleByUUID(entry)  # GPU-... (MIG-... has no power reading)
    return nvml.nvmlDeviceGetHandleByIndex(device)


def nvml_power_sampler(device: int = 0, interval_s: float = 0.5, t0: float | None = None) -> PowerSampler:
    """A PowerSampler for CUDA device `device`, or a no-op one where NVML cannot be used."""
    try:
        import pynvml as nvml  # from the nvidia-ml-py distribution
    except ImportError:
        return PowerSampler(interval_s=interval_s, t0=t0)
    try:
        nvml.nvmlInit()
    except Exception:
        return PowerSampler(interval_s=interval_s, t0=t0)
    try:
        handle = _nvml_handle(nvml, device)
        probe = PowerSampler(nvml, handle, interval_s=interval_s, t0=t0)
        probe.sample()  # some GPUs (and MIG slices) have no power reading; keep what works
        if not (probe.watts or probe.util):
            raise RuntimeError("neither power nor utilisation can be read")
    except Exception as exc:
        log.debug("NVML gives no power or utilisation for device %s: %s", device, exc)
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass
        return PowerSampler(interval_s=interval_s, t0=t0)
    return PowerSampler(nvml, handle, interval_s=interval_s, t0=t0)
