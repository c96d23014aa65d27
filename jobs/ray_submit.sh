#!/usr/bin/env bash
# Score a job on a Ray cluster as a Ray Job: the entrypoint `batchscore run JOB --launcher ray`
# runs on the cluster (one actor per GPU, CPU actors where there is none), with this checkout
# shipped as the job's working dir. Run from anywhere; paths are relative to the repository root.
#
#   jobs/ray_submit.sh                        # the tiny sample job of jobs/mpirun.sh, on a local cluster
#   jobs/ray_submit.sh jobs/example.toml      # a job file
#   RAY_ADDRESS=http://head:8265 jobs/ray_submit.sh jobs/resnet50_fp16.toml    # a running cluster
#
# With no RAY_ADDRESS a one-node cluster is started here for the job and stopped afterwards.
# The job file is passed by absolute path: its data and output directory must be visible at the
# same paths on the cluster's nodes (a shared filesystem, or one node). The nodes need Python with
# batchscore's dependencies (pip install 'batchscore[ray]'); ENTRY_PYTHON names the entrypoint's
# interpreter there (default: `python`; this checkout's venv for the local cluster).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=${PYTHON:-$VENV/bin/python}
RAY=${RAY:-$( [ -x "$VENV/bin/ray" ] && echo "$VENV/bin/ray" || command -v ray || true )}
if [ -z "$RAY" ]; then
    echo "jobs/ray_submit.sh: no ray command: pip install 'batchscore[ray]'" >&2
    exit 1
fi

JOB=${1:-}
if [ -z "$JOB" ]; then
    JOB=demo-out/launch-sample/job.toml
    [ -f "$JOB" ] || { echo "making the sample job with jobs/mpirun.sh's recipe"; \
        sed -n '/^    \[ -f "\$JOB" \] || "\$PY" - "\$SAMPLE" <<.PY.$/,/^PY$/p' jobs/mpirun.sh | sed '1d;$d' \
        | "$PY" - demo-out/launch-sample; }
fi
JOB=$(cd "$(dirname "$JOB")" && pwd)/$(basename "$JOB")

if [ -z "${RAY_ADDRESS:-}" ]; then
    export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}   # a private one-node cluster on 127.0.0.1
    "$RAY" start --head --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 --dashboard-port=8265 \
        --num-cpus="$(nproc)" --disable-usage-stats >/dev/null
    trap '"$RAY" stop --force >/dev/null 2>&1 || true' EXIT
    export RAY_ADDRESS=http://127.0.0.1:8265
    ENTRY_PYTHON=${ENTRY_PYTHON:-$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")}   # this checkout's venv
fi
set -x
"$RAY" job submit --working-dir . -- "${ENTRY_PYTHON:-python}" -m launchers.cli run "$JOB" --launcher ray
