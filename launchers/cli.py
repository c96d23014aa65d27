"""`batchscore`: the command line.

Every command turns a BatchscoreError into one paragraph on stderr and a non-zero exit; a
traceback means a bug in batchscore, not in the user's input.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from engine.errors import BatchscoreError, InputError

EXIT_USER_ERROR = 1


def _parse_input_shape(text: str) -> tuple[str, tuple]:
    name, sep, dims = text.rpartition(":")
    if not sep or not name or not dims:
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME:DIMS, e.g. input:1x3x224x224")
    shape = []
    for dim in dims.split("x"):
        if dim.isdigit() and int(dim) > 0:
            shape.append(int(dim))
        elif dim.isidentifier():  # a symbolic dimension, e.g. N for the batch
            shape.append(dim)
        else:
            raise argparse.ArgumentTypeError(
                f"'{text}': each dimension must be a positive integer or a name, joined by 'x'")
    return name, tuple(shape)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_build(args: argparse.Namespace) -> int:
    import engine
    from engine.builder import BuildConfig

    config = BuildConfig(
        precision=args.precision,
        device=args.device,
        tf32=args.tf32,
        max_batch=args.max_batch,
        input_shapes=dict(args.input_shape or []) or None,
        optimize=not args.no_optimize,
        fp16_layer_bound=args.fp16_layer_bound,
    )
    start = time.perf_counter()
    plan = engine.build(args.model, config)
    output = Path(args.output or Path(args.model).with_suffix(".plan"))
    plan.save(output)
    elapsed = time.perf_counter() - start
    size_mb = output.stat().st_size / 1e6
    ins = ", ".join(f"{s['name']} {s['dtype']} {'x'.join(map(str, s['shape']))}" for s in plan.inputs)
    from engine.inspect import describe_plan

    totals = describe_plan(plan)["totals"]
    print(f"built {output} ({size_mb:.1f} MB, {totals['layers_running_kernels']} layers from {totals['source_nodes']} "
          f"nodes, max batch {plan.header['max_batch']}) in {elapsed:.1f} s; inputs: {ins}")
    return 0


def _load_feeds(items: list[str], engine) -> dict[str, np.ndarray]:
    names = [s.name for s in engine.inputs]
    feeds = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            if len(names) != 1:
                raise InputError(f"--input '{item}': the plan has inputs {names}; write NAME=FILE.npy")
            name, path = names[0], item
        file = Path(path)
        if not file.exists():
            raise InputError(f"--input {name}: no such file {file}")
        try:
            feeds[name] = np.load(file, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"--input {name}: {file} is not a readable .npy file ({exc})") from None
    return feeds


def cmd_infer(args: argparse.Namespace) -> int:
    import engine

    eng = engine.load(args.plan)
    feeds = _load_feeds(args.input, eng)
    start = time.perf_counter()
    outputs = eng.create_context().run(feeds)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    print(f"ran {eng.name} in {elapsed_ms:.1f} ms")
    for name, array in outputs.items():
        print(f"  {name}: {array.dtype} {'x'.join(map(str, array.shape)) or 'scalar'}")
        if array.ndim == 2 and array.dtype.kind == "f" and array.shape[1] > 1:
            for row in range(min(array.shape[0], 4)):
                top = np.argsort(-array[row])[:5]
                scores = ", ".join(f"{i}:{array[row, i]:.4f}" for i in top)
                print(f"    row {row} top-5: {scores}")
    if args.output:
        np.savez(args.output, **outputs)
        print(f"outputs saved to {args.output}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from engine.inspect import describe_plan, format_plan
    from engine.plan import read_plan

    info = describe_plan(read_plan(args.plan))
    print(json.dumps(info, indent=2) if args.json else format_plan(info))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from launchers.bench import run_bench

    try:
        batches = [int(b) for b in args.batch.split(",") if b]
    except ValueError:
        raise InputError(f"--batch '{args.batch}' is not a comma-separated list of integers") from None
    if not batches or min(batches) < 1:
        raise InputError(f"--batch '{args.batch}' must list positive batch sizes")
    device = args.device
    if device == "auto":
        from kernels.cuda import gpu_unavailable

        device = "cuda" if gpu_unavailable() is None else "cpu"
    precision = args.precision or ("fp16" if device == "cuda" else "fp32")
    run_bench(args.target, batches, precision, args.iterations, args.warmup, args.json, args.plot, device)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from launchers.demo import run_demo

    return run_demo(Path(args.workdir))


def cmd_run(args: argparse.Namespace) -> int:
    from scoring.job import load_job

    job = load_job(args.job)
    launcher = args.launcher or job.run.launcher
    if getattr(args, "address", None) and launcher != "ray":
        raise InputError(f"--address is the Ray cluster's address; it goes with --launcher ray, not {launcher}")
    if getattr(args, "scaling", None):
        return _run_scaling(job, launcher, args)
    report = _launch(job, launcher, args.workers, args)
    if report is not None and not args.quiet:
        s = report.data["summary"]
        print(f"scored {s['images']:,} rows ({s['errors']:,} errors) in {s['wall_s']:.1f} s, "
              f"{s['images_per_s']:,.1f} images/s with {s['workers']} worker{'s' * (s['workers'] != 1)}; "
              f"predictions in {job.output.dir / 'parts'}, report {report.md_path}")
    return 0


def _launch(job, launcher: str, workers, args: argparse.Namespace):
    if launcher == "mpi":
        from launchers.mpi import run_mpi

        return run_mpi(job, workers=workers, quiet=args.quiet)
    if launcher == "ray":
        from launchers.ray import run_ray

        return run_ray(job, workers=workers, quiet=args.quiet, address=getattr(args, "address", None))
    from launchers.local import run_local

    return run_local(job, workers=workers, quiet=args.quiet)


def _run_scaling(job, launcher: str, args: argparse.Namespace) -> int:
    """`batchscore run JOB --scaling 1,2,4`: the job once per worker count, each into
    [output] dir/scaling/workers-N, then a scaling table and plot in [output] dir/scaling."""
    import dataclasses

    from scoring.report import combine_scaling

    try:
        counts = [int(c) for c in args.scaling.split(",") if c.strip()]
    except ValueError:
        raise InputError(f"--scaling '{args.scaling}' is not a comma-separated list of worker counts") from None
    if not counts or min(counts) < 1:
        raise InputError(f"--scaling '{args.scaling}' must list positive worker counts, e.g. 1,2,4")
    if launcher == "mpi":
        raise InputError("--scaling cannot change the number of MPI ranks; run `mpirun -np N batchscore run JOB "
                         "--launcher mpi` once per count (each with its own [output] dir) and compare the runs' "
                         "report.json files")
    if args.workers is not None:
        raise InputError("--scaling sets the worker counts itself; leave out --workers")
    base = job.output.dir / "scaling"
    dirs = []
    for n in sorted(set(counts)):
        out = base / f"workers-{n}"
        run_job = dataclasses.replace(job, output=dataclasses.replace(job.output, dir=out))
        if not args.quiet:
            print(f"--- {n} worker{'s' * (n != 1)} -> {out}")
        report = _launch(run_job, launcher, n, args)
        if report is None and not (out / "report.json").is_file():
            raise InputError(f"{out} holds finished shards but no report.json; remove it to measure {n} workers")
        dirs.append(out)
    result = combine_scaling(dirs, out_dir=base)
    if not args.quiet:
        for r in result["runs"]:
            eff = "-" if r["efficiency"] is None else f"{100 * r['efficiency']:.0f}%"
            print(f"{r['workers']:>4} workers  {r['images_per_s']:>10,.1f} images/s  efficiency {eff}")
        print(f"scaling table {result['files']['md']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from scoring.report import render

    report = render(args.dir)
    print(f"wrote {report.md_path}" + (f" and {report.png_path}" if report.png_path else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchscore",
        description="Build an optimized inference plan from an ONNX image model once, then run it "
        "anywhere with no framework installed.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="log what happens (the build: layer counts after every pass); -vv for more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("build", parents=[common], help="build a plan file from an ONNX model",
                       description="Import an ONNX model, check every operator is supported, probe its "
                       "shapes and write a plan file (JSON header + raw weights, checksummed).")
    p.add_argument("model", help="the ONNX model file")
    p.add_argument("-o", "--output", help="plan file to write (default: MODEL with .plan suffix)")
    p.add_argument("--max-batch", type=_positive_int, help="largest batch the plan accepts (models with a "
                   "symbolic batch axis; default 256)")
    p.add_argument("--input-shape", type=_parse_input_shape, action="append", metavar="NAME:DIMS",
                   help="fix an input's shape, e.g. input:1x3x224x224 (repeat for several inputs)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="build for the numpy backend or for this machine's CUDA GPU (default cpu)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"], help="layer precision (fp16: GPU only)")
    p.add_argument("--tf32", action="store_true", help="let fp32 GPU layers use TF32 tensor cores")
    p.add_argument("--fp16-layer-bound", type=float, default=1e-2, metavar="ERROR",
                   help="fp16 builds: a layer whose own fp16 error (relative) is above this runs in fp32 "
                        "(default 1e-2; `batchscore inspect` lists them)")
    p.add_argument("--no-optimize", action="store_true", help="skip the optimization passes (one layer per node)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("bench", parents=[common], help="time a plan: throughput, latency, per-layer profile, power",
                       description="Time a plan (or an ONNX model, built first) at several batch sizes, in the "
                       "manner of trtexec: throughput, latency min/median/p90/p99, host latency split into "
                       "H2D/compute/D2H, NVML power and images/s/W, and a per-layer profile.")
    p.add_argument("target", help="a plan file, or an ONNX model to build first")
    p.add_argument("--batch", default="1,8,64,256", help="comma-separated batch sizes (default 1,8,64,256)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="for an ONNX model: where to build (default: the GPU if there is one)")
    p.add_argument("--precision", default=None, choices=["fp32", "fp16"],
                   help="for an ONNX model: precision (default fp16 on a GPU, fp32 on the CPU)")
    p.add_argument("--iterations", type=_positive_int, default=100)
    p.add_argument("--warmup", type=_positive_int, default=10)
    p.add_argument("--json", metavar="OUT.json", help="write every figure to this JSON file")
    p.add_argument("--plot", metavar="OUT.png", help="plot images/s against batch size")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("infer", parents=[common], help="run a plan on inputs from .npy files",
                       description="Load a plan (no onnx needed) and run it once on inputs read from .npy files.")
    p.add_argument("plan", help="the plan file")
    p.add_argument("--input", action="append", required=True, metavar="NAME=FILE.npy",
                   help="an input array (NAME= may be left out when the plan has one input)")
    p.add_argument("--output", metavar="OUT.npz", help="save all outputs to this .npz file")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("inspect", parents=[common], help="show a plan's layers, fusions, tactics, precisions and memory",
                       description="Print every layer of a plan with the source nodes it fuses, its kind, output "
                       "shape, precision, tactic and place in the activation arena, then totals.")
    p.add_argument("plan", help="the plan file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("run", parents=[common], help="score a dataset with a job spec (TOML): predictions and a report",
                       description="Score every image of a Parquet dataset with a plan (or an ONNX model, built "
                       "first) as the job file says; write one prediction row per image and a report. A rerun "
                       "resumes: shards already in the output's manifest are skipped.")
    p.add_argument("job", help="the job file (TOML), e.g. jobs/example.toml")
    p.add_argument("--launcher", choices=["local", "mpi", "ray"], help="how to start workers (default: [run] launcher)")
    p.add_argument("--workers", type=_positive_int, help="worker processes (default: [run] workers)")
    p.add_argument("--address", help="with --launcher ray: the Ray cluster to join (default: $RAY_ADDRESS, "
                   "else a running local cluster, else a new local one)")
    p.add_argument("--scaling", metavar="N,N,...", help="run the job once per worker count (e.g. 1,2,4), each "
                   "into [output] dir/scaling/workers-N, and write a scaling table and plot (local and ray)")
    p.add_argument("--quiet", action="store_true", help="no progress line or summary")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", parents=[common], help="re-render report.md and throughput.png from report.json",
                       description="Rewrite report.md and throughput.png from the report.json in DIR.")
    p.add_argument("dir", help="the output directory of a `batchscore run`")
    p.set_defaults(func=cmd_report)

    from launchers.make_data_cli import configure_make_data_parser

    p = sub.add_parser("make-data", parents=[common], help="write a Parquet image dataset for tests and benchmarks")
    configure_make_data_parser(p)

    p = sub.add_parser("demo", parents=[common], help="build and run a small image model end to end on this machine")
    p.add_argument("--workdir", default="demo-out", help="where the demo writes its files (default demo-out)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from kernels.cuda import prefer_more_hardware_queues

    prefer_more_hardware_queues()  # this process and the workers it starts (MPI ranks run this too)
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(message)s")
    try:
        return args.func(args)
    except BatchscoreError as exc:
        print(f"batchscore {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("batchscore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `batchscore inspect x.plan | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
