"""The GPU engine against PyTorch on the same GPU, in one call.

    python benchmarks/gpu_vs_torch.py OUTDIR [--peer .whl/peer_torch.py] [--no-peer] [--no-compile]
                                             [--cases resnet50:fp16,googlenet:fp16]

Builds the zoo's ResNet-50 (fp16 and fp32), GoogLeNet and VGG-19 (fp16) for this GPU (224x224,
seeded weights), times engine-only throughput (device-resident input, CUDA-graph replay) at batch 256
and ResNet-50's latency at batch 1, then runs the PyTorch peer (eager, CUDA graph, torch.compile) in
the same call and writes OUTDIR/gpu_vs_torch.json with both sides and their ratios.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from engine import zoo  # noqa: E402
from engine.builder import BuildConfig  # noqa: E402
from launchers.bench import bench_gpu, _sampler_factory  # noqa: E402
from scoring_gpu_e2e import EXIT_NO_GPU, no_gpu_message  # noqa: E402  (this folder is on sys.path)

CASES = [  # (model, precision, batches)
    ("resnet50", "fp16", [1, 256]),
    ("resnet50", "fp32", [256]),
    ("googlenet", "fp16", [256]),
    ("vgg19", "fp16", [256]),
]


def ours(out: Path, cases: list[tuple]) -> list[dict]:
    rows = []
    for model, precision, batches in cases:
        started = time.perf_counter()
        plan = engine.build(zoo.get(model), BuildConfig(device="cuda", precision=precision, max_batch=max(batches)))
        build_s = time.perf_counter() - started
        eng = engine.engine_for(plan)
        result = bench_gpu(eng, batches, iterations=50, warmup=5, sampler_factory=_sampler_factory())
        for row in result["rows"]:
            rows.append({"model": model, "precision": precision, "batch": row["batch"],
                         "images_per_s": row["images_per_s"], "latency_ms": row["latency_ms"],
                         "watts": row.get("watts"), "cuda_graph": row["cuda_graph"], "build_s": round(build_s, 1),
                         "layers": len(plan.layers), "host_layers": plan.header["tuning"]["host_layers"],
                         "numpy_check_worst_error": plan.header["tuning"].get("numpy_check_worst_error")})
            print(f"batchscore {model} {precision} b{row['batch']}: {row['images_per_s']:.0f} images/s, "
                  f"median {row['latency_ms']['median']:.3f} ms, build {build_s:.1f} s", flush=True)
        top = sorted(result["layer_profile_ms"].items(), key=lambda kv: -kv[1])[:8]
        profile = {name: {"ms": ms, "tactic": result["layer_tactics"].get(name)}
                   for name, ms in result["layer_profile_ms"].items()}
        (out / f"profile_{model}_{precision}.json").write_text(json.dumps(profile, indent=1))
        print("  slowest layers:", ", ".join(f"{k} {v:.3f}ms" for k, v in top), flush=True)
    return rows


def peer(script: str, out: Path, compile_too: bool, models: list[str], results: dict, saved) -> None:
    """Run the PyTorch peer (then torch.compile) into `results`, calling `saved()` after each, so a
    call cut by the device's limit keeps what finished."""
    runs = [("peer_torch", [sys.executable, script, str(out), "--models", ",".join(models)])]
    if compile_too:
        runs.append(("peer_torch_compile", [sys.executable, script, str(out), "--compile"]))
    for name, cmd in runs:
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        print(proc.stdout[-3000:], proc.stderr[-1500:] if proc.returncode else "", flush=True)
        path = out / f"{name}.json"
        results[name] = json.loads(path.read_text()) if path.exists() else {"error": proc.stderr[-2000:]}
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
        saved()


def peer_fp32(out: Path) -> dict:
    """PyTorch FP32 with TF32 off (benchmarks/peer_fp32_no_tf32.py), the FP32 target's peer."""
    script = Path(__file__).resolve().parent / "peer_fp32_no_tf32.py"
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=600)
    print(proc.stdout[-2000:], proc.stderr[-1500:] if proc.returncode else "", flush=True)
    path = out / "peer_fp32_no_tf32.json"
    return json.loads(path.read_text()) if path.exists() else {"error": proc.stderr[-2000:]}


PEER_MODES = ("eager", "cudagraph", "compile-default", "compile-reduce-overhead", "compile-max-autotune-no-cudagraphs")
FP32_PEER_MODE = "fastest of eager/cudagraph x NCHW/channels-last, TF32 off"


def _peer_ips(peer_results: dict, model: str, dtype: str, bs: int, mode: str) -> float | None:
    for key in ("peer_torch", "peer_torch_compile"):
        data = peer_results.get(key, [])
        for row in data if isinstance(data, list) else []:
            if row.get("model") == model and row.get("dtype") == dtype and row.get("bs") == bs and row.get("mode") == mode:
                return row.get("ips")
    return None


def ratios(ours_rows: list[dict], peer_results: dict) -> list[dict]:
    """Ours against every peer figure measured so far for the same model, dtype and batch; FP32 at
    batch 256 also against the fastest PyTorch run with TF32 off."""
    found = []

    def add(row, mode, theirs):
        found.append({"model": row["model"], "precision": row["precision"], "batch": row["batch"], "peer_mode": mode,
                      "peer_images_per_s": theirs, "ours": row["images_per_s"], "ratio": row["images_per_s"] / theirs})

    for row in ours_rows:
        dtype = {"fp16": "float16", "fp32": "float32"}[row["precision"]]
        for mode in PEER_MODES:
            theirs = _peer_ips(peer_results, row["model"], dtype, row["batch"], mode)
            if theirs:
                add(row, mode, theirs)
    fp32 = peer_results.get("peer_fp32_no_tf32", {})
    best = max((r["ips"] for r in fp32.get("rows", [])), default=None)
    for row in ours_rows:
        if best and row["precision"] == "fp32" and row["batch"] == 256:
            add(row, FP32_PEER_MODE, best)
    return found


def write_record(out: Path, record: dict) -> None:
    """OUTDIR/gpu_vs_torch.json, with the ratios of what has been measured so far."""
    if "peer" in record:
        record["ratios"] = ratios(record["batchscore"], record["peer"])
    (out / "gpu_vs_torch.json").write_text(json.dumps(record, indent=2, default=float) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--peer", default=".whl/peer_torch.py")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--cases", default=",".join(f"{m}:{p}" for m, p, _ in CASES),
                        help="model:precision pairs to run (default: all of CASES)")
    args = parser.parse_args()
    wanted = set(args.cases.split(","))
    cases = [case for case in CASES if f"{case[0]}:{case[1]}" in wanted]
    if len(cases) != len(wanted):
        parser.error(f"--cases: choose from {', '.join(f'{m}:{p}' for m, p, _ in CASES)}")
    models = list(dict.fromkeys(m for m, p, _ in cases if p == "fp16"))
    message = no_gpu_message("gpu_vs_torch")
    if message:
        print(message, file=sys.stderr)
        return EXIT_NO_GPU
    args.out.mkdir(parents=True, exist_ok=True)
    from kernels.cuda.device import describe_gpu

    record = {"benchmark": "gpu_vs_torch", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": describe_gpu(), "command": "python " + " ".join(sys.argv)}
    record["batchscore"] = ours(args.out, cases)
    write_record(args.out, record)  # the engine's side first: the peers may not finish in the device's time
    if not args.no_peer and os.path.exists(args.peer):
        record["peer"] = {}
        peer(args.peer, args.out, not args.no_compile, models, record["peer"], lambda: write_record(args.out, record))
        if any(p == "fp32" for _, p, _ in cases):
            record["peer"]["peer_fp32_no_tf32"] = peer_fp32(args.out)
        write_record(args.out, record)
        for r in record["ratios"]:
            print(f"{r['model']} {r['precision']} b{r['batch']} vs torch {r['peer_mode']}: {r['ratio']:.2f}x "
                  f"({r['ours']:.0f} vs {r['peer_images_per_s']:.0f} images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
