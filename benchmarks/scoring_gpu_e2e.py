"""End-to-end scoring on one GPU against the engine alone, and the CPU decode path, in one call.

    python benchmarks/scoring_gpu_e2e.py OUTDIR [--rows 100000] [--batch 256] [--model resnet50]
                                                [--precision fp16] [--cpu-rows 5000] [--decode gpu]
                                                [--short-side 256] [--noise 5 --jpeg-quality 90-98]

On the GPU machine, in order:
1. a JPEG Parquet dataset of --rows synthetic photo-like images in OUTDIR/data (make_dataset on every
   core; several files, row groups of about 1024 rows), reused while OUTDIR/data.json matches;
   photo-sized (long side 400-500, as ImageNet's validation set), or with --short-side N stored
   pre-resized (shorter side N, longer up to 4N/3), as datasets kept for scoring often are;
   with --noise and --jpeg-quality, heavier files (make_dataset's: about 30 KB by default, lighter
   than real photos of that size) in OUTDIR/data-detailed;
2. the zoo model's plan for this GPU in OUTDIR/plan/, reused while it was built for the same GPU;
3. engine-only throughput at --batch (device-resident input, CUDA graph: `batchscore bench`'s code);
4. the dataset scored end to end by the local launcher: one worker, [run] decode = "gpu",
   device "cuda", shard_rows 4096;
5. the CPU decode path on --cpu-rows rows (decode = "cpu", decode_threads = every core).

It writes OUTDIR/scoring_gpu_e2e.json (date, device, versions, host cores, the command and every
figure) and prints a table. Targets: end to end >= 90% of the engine alone, GPU busy >= 95% in steady
state. "job" figures are the report's (the launch to the end, start-up included); "steady" ones count
the middle of each worker's rows (scoring.steady_state: from 20% done to 90% done), which is what
the targets are about; "first_batch_to_end" is the steady figure before session 24 (from each
worker's first finished batch to its end), kept beside it.

Without a GPU it exits with status 2 and says why, before writing anything.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from host_cpu import cpu_shares, cpu_times  # noqa: E402
from launchers.make_data_cli import parse_noise, parse_quality  # noqa: E402
from scoring.report import steady_images_per_s  # noqa: E402
from scoring.steady_state import first_batch_to_end_rate  # noqa: E402

from kernels.cuda import gpu_unavailable  # noqa: E402

EXIT_NO_GPU = 2
SHARD_ROWS = 4096
GROUP_ROWS = 1024  # rows per Parquet row group
TARGET_RATIO = 0.90
TARGET_BUSY = 0.95


# ---------------------------------------------------------------------------------------------
# Shared with scaling_gpu.py: the GPU check, the dataset, the plan, the machine's description
# ---------------------------------------------------------------------------------------------


def no_gpu_message(script: str) -> str | None:
    """None on a machine with a usable GPU; else the sentence to print before exiting."""
    reason = gpu_unavailable()
    if reason is None:
        return None
    return (f"{script}: this benchmark needs a CUDA GPU with CuPy and the cuDNN frontend, and here {reason}. "
            f"Run it on the GPU machine (see ../shared/device/README.md for the wheels to carry); nothing was written.")


def host_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def dataset_layout(rows: int) -> tuple[int, int]:
    """(files, row groups per file) for `rows` rows: several files of about 8k rows, ~1024-row groups."""
    files = max(1, min(16, round(rows / 8192)))
    return files, max(1, round(rows / files / GROUP_ROWS))


def image_size_rule(short_side: int | None):
    """make_dataset's image_size: None (photo-like, long side 400-500) or, for a dataset stored
    pre-resized, a shorter side of `short_side` and a longer one up to 4/3 of it."""
    return None if short_side is None else ((short_side, short_side), (short_side, round(short_side * 4 / 3)))


def data_detail(noise: float, jpeg_quality: tuple[int, int]) -> dict:
    """The marker's record of the images' detail; empty for the defaults, so that markers written
    before these settings existed still match."""
    return {} if (noise, tuple(jpeg_quality)) == (1.0, (75, 95)) else {"noise": noise, "jpeg_quality": list(jpeg_quality)}


def data_dir_name(noise: float, jpeg_quality: tuple[int, int]) -> str:
    """OUTDIR's folder for the dataset: "data", or "data-detailed" for heavier files than the defaults."""
    return "data-detailed" if data_detail(noise, jpeg_quality) else "data"


def reusable_data(data_dir: Path, rows: int, seed: int = 0, short_side: int | None = None, noise: float = 1.0,
                  jpeg_quality: tuple[int, int] = (75, 95)) -> dict | None:
    """What data_dir's marker (data_dir + .json) records, when it says these rows, seed, image
    sizes and detail and the files it lists are all there; else None."""
    marker = data_dir.with_name(data_dir.name + ".json")
    files, groups = dataset_layout(rows)
    wanted = {"rows": rows, "seed": seed, "files": files, "row_groups_per_file": groups, "short_side": short_side,
              "noise": None, "jpeg_quality": None} | data_detail(noise, jpeg_quality)
    if not (marker.is_file() and data_dir.is_dir()):
        return None
    try:
        made = json.loads(marker.read_text())
    except ValueError:
        return None
    if {k: made.get(k) for k in wanted} != wanted or not all(Path(f).is_file() for f in made.get("paths", [])):
        return None
    return made


def prepare_data(data_dir: Path, rows: int, seed: int = 0, also_look_in: tuple[Path, ...] = (),
                 short_side: int | None = None, noise: float = 1.0, jpeg_quality: tuple[int, int] = (75, 95)) -> dict:
    """Make the JPEG dataset in data_dir, or reuse one (in data_dir, else in also_look_in) whose
    marker says it has these rows and seed. The same seed gives the same image for the same row,
    so a smaller dataset holds the first rows of a larger one. The result's "dir" is where it is."""
    from scoring.make_data import make_dataset

    for where in (data_dir, *also_look_in):
        made = reusable_data(where, rows, seed, short_side, noise, jpeg_quality)
        if made is not None:
            print(f"reusing the dataset in {where}: {rows:,} rows, {made.get('bytes', 0) / 1e9:.2f} GB", flush=True)
            return made | {"dir": str(where), "reused": True}
    marker = data_dir.with_name(data_dir.name + ".json")
    files, groups = dataset_layout(rows)
    shutil.rmtree(data_dir, ignore_errors=True)
    marker.unlink(missing_ok=True)
    print(f"making {rows:,} JPEG rows in {data_dir} on {host_cores()} cores ...", flush=True)
    made = make_dataset(data_dir, rows, row_groups=groups, files=files, seed=seed, workers=host_cores(),
                        image_size=image_size_rule(short_side), noise=noise, jpeg_quality=jpeg_quality)
    print(made.summary(), flush=True)
    record = {"rows": rows, "seed": seed, "files": files, "row_groups_per_file": groups, "short_side": short_side,
              **data_detail(noise, jpeg_quality), "paths": made.files,
              "bytes": made.bytes, "seconds": round(made.seconds, 1)}
    marker.write_text(json.dumps(record, indent=1) + "\n")
    return record | {"dir": str(data_dir), "reused": False}


def plan_name(model: str, precision: str, batch: int) -> str:
    return f"{model}.{precision}.b{batch}.plan"


def prepare_plan(plan_dir: Path, model: str, precision: str, batch: int, also_look_in: tuple[Path, ...] = ()) -> dict:
    """Build the zoo model's plan for this GPU into plan_dir, or reuse one (in plan_dir, else in
    also_look_in) built for the same GPU: tactics are timed per GPU. Returns its path, the GPU it
    was built for, and the build's seconds (None when reused)."""
    import engine
    from engine import zoo
    from kernels.cuda.device import describe_gpu

    gpu = describe_gpu()
    for where in (plan_dir, *also_look_in):
        path = where / plan_name(model, precision, batch)
        if not path.is_file():
            continue
        try:
            built_for = engine.read_plan(path).header.get("device", {})
        except Exception as exc:  # a damaged file: not reused
            print(f"{path} cannot be read ({exc}); not reusing it", flush=True)
            continue
        if (built_for.get("name"), built_for.get("arch")) == (gpu["name"], gpu["arch"]):
            print(f"reusing the plan {path} (built for {gpu['name']})", flush=True)
            return {"path": str(path), "device": built_for, "build_s": None, "reused": True}
    path = plan_dir / plan_name(model, precision, batch)
    plan_dir.mkdir(parents=True, exist_ok=True)
    print(f"building {model} {precision} max batch {batch} for {gpu['name']} ...", flush=True)
    started = time.perf_counter()
    plan = engine.build(zoo.get(model), engine.BuildConfig(device="cuda", precision=precision, max_batch=batch))
    build_s = time.perf_counter() - started
    tmp = path.with_name(f".{path.name}.tmp")
    plan.save(tmp)
    os.replace(tmp, path)
    print(f"built {path} in {build_s:.1f} s ({len(plan.layers)} layers)", flush=True)
    return {"path": str(path), "device": plan.header.get("device"), "build_s": round(build_s, 1), "reused": False}


def versions(*extra: str) -> dict:
    """Versions of what the numbers depend on; None for what is not installed."""
    found = {"python": platform.python_version()}

    def version_of(name: str, load):
        try:
            found[name] = str(load())
        except Exception:
            found[name] = None

    version_of("batchscore", lambda: __import__("engine.version", fromlist=["x"]).__version__)
    version_of("numpy", lambda: __import__("numpy").__version__)
    version_of("pyarrow", lambda: __import__("pyarrow").__version__)
    version_of("cupy", lambda: __import__("cupy").__version__)
    version_of("cuda_runtime", lambda: __import__("cupy").cuda.runtime.runtimeGetVersion())
    version_of("cudnn_frontend", lambda: __import__("cudnn").__version__)
    version_of("cudnn_backend", lambda: __import__("cudnn").backend_version())
    version_of("nvimgcodec", lambda: __import__("nvidia.nvimgcodec", fromlist=["x"]).__version__)
    for name in extra:
        version_of(name, lambda name=name: __import__(name).__version__)
    return found


def device_info() -> dict:
    from kernels.cuda.device import describe_gpu

    import cupy

    return describe_gpu() | {"count": int(cupy.cuda.runtime.getDeviceCount())}


def preprocess_for(precision: str) -> dict:
    """ImageNet preprocessing into the plan's input; an fp16 plan takes float16 rows (half the H2D
    bytes), as jobs/resnet50_fp16.toml does."""
    return {"resize_shorter": 256, "crop": 224, "layout": "NCHW",
            "dtype": "float16" if precision == "fp16" else "float32"}


def job_dict(plan: str, data: Path, out: Path, batch: int, precision: str, *, decode: str,
             decode_threads: int | str = "auto", workers: int | str = 1,
             decode_processes: int | str = "auto", pin_cpus: bool = False) -> dict:
    """A job spec (as parsed TOML) scoring `data` with `plan` on the GPU into `out`."""
    return {
        "model": {"plan": str(plan)},
        "data": {"source": str(data), "shard_rows": SHARD_ROWS},
        "preprocess": preprocess_for(precision),
        "output": {"dir": str(out), "top_k": 5},
        "run": {"batch": batch, "workers": workers, "device": "cuda", "decode": decode,
                "decode_threads": decode_threads, "decode_processes": decode_processes, "pin_cpus": pin_cpus},
    }


def free_gpu_memory() -> None:
    """Hand CuPy's cached blocks back, so this process does not hold memory a worker needs."""
    gc.collect()
    try:
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()
    except Exception:
        pass


def finite(obj):
    """JSON has no NaN or infinity: such numbers become null (a figure lost, not the whole file)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def run_header(benchmark: str, device: dict, package_versions: dict) -> dict:
    """What every benchmark record starts with: which run, when, on what, by which command."""
    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device, "versions": package_versions, "host": platform.node(), "host_cores": host_cores(),
        "command": shlex.join([Path(sys.executable).name] + sys.argv),
        "env": knobs_in_effect(os.environ),
    }


# Native thread pools read these at load (OpenBLAS, Arrow's CPU pool): Ray caps them at 1 in its
# actors and mpirun leaves them alone, so a run records them beside our own knobs.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def knobs_in_effect(environ) -> dict:
    """The settings of this environment that change a run: BATCHSCORE_* and the thread-pool caps."""
    return {k: v for k, v in environ.items() if k.startswith("BATCHSCORE_") or k in THREAD_VARS}


def write_json(path: Path, record: dict) -> None:
    path.write_text(json.dumps(finite(record), indent=2, default=str, allow_nan=False) + "\n")


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


# ---------------------------------------------------------------------------------------------
# This benchmark
# ---------------------------------------------------------------------------------------------


def engine_only(plan_path: str, batch: int, iterations: int, warmup: int) -> dict:
    import engine
    from launchers.bench import _sampler_factory, bench_gpu

    eng = engine.load(plan_path)
    result = bench_gpu(eng, [batch], iterations, warmup, _sampler_factory())
    row = result["rows"][0]
    slowest = sorted(result["layer_profile_ms"].items(), key=lambda kv: -kv[1])[:10]
    del eng, result
    free_gpu_memory()
    return {"batch": batch, "images_per_s": row["images_per_s"], "latency_ms": row["latency_ms"],
            "host_ms": row["host_ms"], "watts": row["watts"], "images_per_s_per_watt": row["images_per_s_per_w"],
            "cuda_graph": row["cuda_graph"], "slowest_layers_ms": dict(slowest)}


def score(job: dict, base: Path) -> dict:
    """Run a job with the local launcher and one worker; the figures of its report."""
    from launchers.local import run_local
    from scoring.job import parse_job

    out = Path(job["output"]["dir"])
    shutil.rmtree(out, ignore_errors=True)  # a fresh run every time: no resume
    started, cpu_before = time.perf_counter(), cpu_times()
    report = run_local(parse_job(job, base_dir=base), workers=1, quiet=True)
    command_s, host_cpu = time.perf_counter() - started, cpu_shares(cpu_before, cpu_times())
    data = report.data
    s, (w,) = data["summary"], data["workers"]
    return {
        "output_dir": str(out), "report": str(report.md_path), "command_s": round(command_s, 2),
        "images": s["images"], "errors": s["errors"], "wall_s": s["wall_s"],
        "images_per_s": s["images_per_s"], "steady_images_per_s": steady_images_per_s(data),
        # the steady figure before session 24 (from the first finished batch to the end), to compare
        "first_batch_to_end_images_per_s": steady_images_per_s(data, rate=first_batch_to_end_rate),
        "busy_fraction": s["busy_fraction"], "busy_source": w.get("busy_source"),
        "avg_watts": s["avg_watts"], "images_per_s_per_watt": s["images_per_s_per_watt"],
        "startup_s": w["startup_s"], "launch_to_first_batch_s": s.get("launch_to_first_batch_s"),
        "decode_threads": data["job"].get("decode_threads"), "decode_processes": job["run"].get("decode_processes"),
        "bottleneck": s["bottleneck"], "slot_input": w.get("slot_input"),
        "nvjpeg_streams": w.get("nvjpeg_streams"),
        "latency": s["latency"], "stages": data["stages"],
        # the host's CPU over the whole job (start-up too): steal is what the VM's hypervisor took
        "host_cpu": host_cpu,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    parser.add_argument("--cpu-rows", type=int, default=5000, help="rows for the CPU decode path (0: skip it)")
    parser.add_argument("--decode", default="gpu", choices=["gpu", "cpu", "auto"],
                        help="[run] decode of the main end-to-end run (default gpu)")
    parser.add_argument("--short-side", type=int, default=None,
                        help="images stored pre-resized: this shorter side, the longer up to 4/3 of it "
                             "(default: photo-like, long side 400-500)")
    parser.add_argument("--noise", type=parse_noise, default=1.0,
                        help="the synthetic images' noise, a multiple of make_dataset's default (heavier files)")
    parser.add_argument("--jpeg-quality", type=parse_quality, default=(75, 95), metavar="LOW-HIGH",
                        help="the synthetic JPEGs' quality range (default 75-95); with --noise 5, 90-98 gives "
                             "files of about 120 KB, as real photos of that size")
    parser.add_argument("--iterations", type=int, default=50, help="engine-only timed iterations")
    parser.add_argument("--decode-processes", default="auto", type=_count_or_auto,
                        help="[run] decode_processes of the main run: auto (GPU decode: in the worker's threads) or a count")
    parser.add_argument("--decode-threads", default="auto", type=_count_or_auto,
                        help="[run] decode_threads of the main run: auto (the host's cores) or a count, shared by "
                             "the GPU decoders")
    parser.add_argument("--cpu-processes", type=int, default=None,
                        help="[run] decode_processes of the CPU decode path (default: one per core; 0: threads)")
    args = parser.parse_args(argv)
    message = no_gpu_message("scoring_gpu_e2e")
    if message:
        print(message, file=sys.stderr)
        return EXIT_NO_GPU
    for name in ("rows", "batch", "iterations"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cores = host_cores()
    started = time.perf_counter()

    data_name = data_dir_name(args.noise, args.jpeg_quality)
    data = prepare_data(out / data_name, args.rows, short_side=args.short_side, noise=args.noise,
                        jpeg_quality=args.jpeg_quality)
    plan = prepare_plan(out / "plan", args.model, args.precision, args.batch)
    print(f"engine alone at batch {args.batch} ...", flush=True)
    alone = engine_only(plan["path"], args.batch, args.iterations, warmup=5)
    print(f"engine alone: {alone['images_per_s']:,.0f} images/s", flush=True)

    print(f"end to end, decode {args.decode}, {args.rows:,} rows ...", flush=True)
    e2e = _try(lambda: score(job_dict(plan["path"], Path(data["dir"]), out / "runs" / f"decode-{args.decode}",
                                      args.batch, args.precision, decode=args.decode,
                                      decode_threads=args.decode_threads,
                                      decode_processes=args.decode_processes), out))
    cpu = None
    if args.cpu_rows > 0:
        cpu_data = prepare_data(out / (data_name + "-cpu"), args.cpu_rows, short_side=args.short_side,
                                noise=args.noise, jpeg_quality=args.jpeg_quality)
        cpu_processes = cores if args.cpu_processes is None else args.cpu_processes
        print(f"CPU decode path, {args.cpu_rows:,} rows on {cores} threads in {cpu_processes} processes ...", flush=True)
        cpu = _try(lambda: score(job_dict(plan["path"], Path(cpu_data["dir"]), out / "runs" / "cpu-path", args.batch,
                                          args.precision, decode="cpu", decode_threads=cores,
                                          decode_processes=cpu_processes), out))
        if "images_per_s" in cpu:
            cpu["images_per_s_per_core"] = cpu["images_per_s"] / cores
            cpu["steady_images_per_s_per_core"] = _ratio(cpu["steady_images_per_s"], cores)
            cpu["rows"] = args.cpu_rows

    record = {
        **run_header("scoring_gpu_e2e", device_info(), versions()),
        "model": args.model, "precision": args.precision, "batch": args.batch, "rows": args.rows,
        "shard_rows": SHARD_ROWS, "dataset": data, "plan": plan,
        "engine_only": alone,
        "end_to_end": e2e | {"decode": args.decode},
        "ratio_end_to_end_over_engine": _ratio(e2e.get("images_per_s"), alone["images_per_s"]),
        "ratio_steady_over_engine": _ratio(e2e.get("steady_images_per_s"), alone["images_per_s"]),
        "ratio_first_batch_to_end_over_engine": _ratio(e2e.get("first_batch_to_end_images_per_s"),
                                                       alone["images_per_s"]),
        "targets": {"ratio_steady_over_engine": TARGET_RATIO, "busy_fraction": TARGET_BUSY},
        "cpu_decode": cpu,
        "total_s": round(time.perf_counter() - started, 1),
    }
    path = out / "scoring_gpu_e2e.json"
    write_json(path, record)
    print_table(record)
    print(f"wrote {path}")
    return 0 if "error" not in e2e and (cpu is None or "error" not in cpu) else 1


def _count_or_auto(value: str) -> int | str:
    """argparse type: "auto" or a whole number (0 or more), so a typo fails before any work."""
    if value == "auto":
        return value
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected \"auto\" or a whole number, got {value!r}")
    return int(value)


def _try(run) -> dict:
    """A failed run is recorded (its message) rather than losing the figures already taken: device
    time is scarce, and the other half of the call may still work."""
    from engine.errors import BatchscoreError

    try:
        return run()
    except BatchscoreError as exc:
        print(f"failed: {exc}", file=sys.stderr, flush=True)
        return {"error": str(exc)}
    except Exception as exc:  # a bug: keep its traceback in the log, and go on
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc} (a bug; the traceback is in the output above)"}


def print_table(r: dict) -> None:
    d, alone, e2e, cpu = r["device"], r["engine_only"], r["end_to_end"], r["cpu_decode"]
    print()
    print(f"scoring_gpu_e2e: {r['model']} {r['precision']} batch {r['batch']}, {r['rows']:,} rows, "
          f"{d.get('name')} ({d.get('arch')}), {r['host_cores']} cores")
    print(f"{'':34} {'images/s':>10} {'vs engine':>9} {'GPU busy':>8} {'watts':>6} {'img/s/W':>8}")

    def line(label, ips, busy=None, watts=None, per_w=None):
        ratio = _ratio(ips, alone["images_per_s"])
        print(f"{label:34} {_rate(ips):>10} {_pct(ratio):>9} {_pct(busy):>8} "
              f"{'-' if not watts else f'{watts:.0f}':>6} {'-' if not per_w else f'{per_w:.1f}':>8}")

    line("engine alone", alone["images_per_s"], None, alone["watts"], alone["images_per_s_per_watt"])
    if "error" in e2e:
        print(f"{'end to end, decode ' + e2e['decode']:34} failed: {e2e['error']}")
    else:
        line(f"end to end, decode {e2e['decode']} (job)", e2e["images_per_s"], e2e["busy_fraction"],
             e2e["avg_watts"], e2e["images_per_s_per_watt"])
        line(f"end to end, decode {e2e['decode']} (steady)", e2e["steady_images_per_s"])
        stages = ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in e2e["stages"].items())
        print(f"  stages: {stages}")
        print(f"  launch to first batch {e2e['launch_to_first_batch_s'] or 0:.1f} s, worker start to first batch "
              f"{e2e['startup_s'] or 0:.1f} s, job {e2e['wall_s']:.1f} s")
        if e2e.get("host_cpu"):
            print(f"  host CPU during the job: {_pct(e2e['host_cpu']['busy'])} busy, "
                  f"{e2e['host_cpu']['steal']:.2%} stolen by the VM's hypervisor")
        steady = r["ratio_steady_over_engine"]
        busy = e2e["busy_fraction"]
        print(f"  targets: steady >= {_pct(TARGET_RATIO)} of the engine: {_pct(steady)} "
              f"{'met' if steady is not None and steady >= TARGET_RATIO else 'NOT met'}; GPU busy >= "
              f"{_pct(TARGET_BUSY)}: {_pct(busy)} {'met' if busy is not None and busy >= TARGET_BUSY else 'NOT met'}")
    if cpu is not None:
        if "error" in cpu:
            print(f"{'CPU decode':34} failed: {cpu['error']}")
        else:
            line(f"CPU decode, {cpu['rows']:,} rows (job)", cpu["images_per_s"], cpu["busy_fraction"])
            line("CPU decode (steady)", cpu["steady_images_per_s"])
            print(f"  CPU decode per core: {cpu['images_per_s_per_core']:,.1f} images/s (job), "
                  f"{cpu['steady_images_per_s_per_core'] or 0:,.1f} (steady), decode threads: {cpu['decode_threads']}")
    print(f"total {r['total_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
