#!/usr/bin/env bash
# One device call for the multi-GPU scaling run: install the carried wheels, score ROWS rows at each
# GPU count through mpirun and Ray, and copy the reports (not the data) under $OUT as scale.tgz
# (each set's scaling_gpu.json is in it, as rN-scaling_gpu.json).
#
#   run (kind nvidia-h200-x8, carry [".whl_all"]):
#       bash benchmarks/device/scaling_call.sh 1,2,4,8 300000
#   checked on nvidia-h200-x4 with 1,2,4 (2026-11-22, results in benchmarks/results/scaling/h200x4_2026-11-21_s3/,
#   and with 600000 rows in h200x4_2026-11-22_s4*/); a fourth argument passes more options, e.g.
#       bash benchmarks/device/scaling_call.sh 1,2,4 600000 560 "--pin-cpus"
#   and a fifth repeats the whole set of runs (sets r1, r2, ... on the same data and plan), since
#   single runs at 4 GPUs spread by several percent:
#       bash benchmarks/device/scaling_call.sh 1,2,4 600000 560 "" 2
#   $SETS_ENV, when set, gives each set an environment, in turn, for an A/B of a knob in one call
#   (BATCHSCORE_* and OMP/OPENBLAS/MKL_NUM_THREADS reach every mpi rank; each set's scaling_gpu.json
#   records them):
#       SETS_ENV="BATCHSCORE_MPI_SHARDS_AHEAD=0 BATCHSCORE_MPI_SHARDS_AHEAD=1" \
#           bash benchmarks/device/scaling_call.sh 1,8 300000 540 "--weak --launchers mpi" 4
#
# .whl_all is made on the development machine by benchmarks/device/slim_wheels.py. Each run is
# bounded (--run-timeout), and the reports found so far are copied out shortly before the call's
# own limit, so a hang costs one run, not the call's results.
set -u
COUNTS=${1:-1,2,4,8}
ROWS=${2:-300000}
LIMIT=${3:-540}   # seconds this script may take (the device allows 600 per call)
MORE=${4:-}       # more scaling_gpu.py options, e.g. "--decode-threads 16"
REPEATS=${5:-1}   # sets of runs, each in $WORK/scale/rN
WORK=${SCALING_WORK:-/tmp}  # where the wheels, the runs and the archive's contents go
read -ra SET_ENVS <<< "${SETS_ENV:-}"  # set rN runs with SET_ENVS[(N-1) % count], when given
: "${OUT:?run this through the device tool, which sets OUT}"

python3 -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" .whl_all/*.whl || exit 1
export PYTHONPATH="$WORK/site:$PWD" LD_LIBRARY_PATH="$WORK/site/nvidia/cu13/lib:${LD_LIBRARY_PATH:-}"
export PYTHONUNBUFFERED=1 PATH="$WORK/site/bin:$PATH"
# The slim wheels lose the executable bit of Ray's binaries on some unzip paths.
chmod +x "$WORK/site/ray/core/src/ray/gcs/gcs_server" "$WORK/site/ray/core/src/ray/raylet/raylet" 2>/dev/null
nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c

copy_out() {  # one archive: the device tool brings back a limited number of files
    rm -rf "$WORK/outscale" && mkdir -p "$WORK/outscale"
    for set in "$WORK"/scale/r*; do
        [ -d "$set" ] || continue
        name=$(basename "$set")
        cp "$set/scaling_gpu.json" "$WORK/outscale/$name-scaling_gpu.json" 2>/dev/null
        for launcher in mpi ray; do
            mkdir -p "$WORK/outscale/$name/$launcher"
            cp "$set"/$launcher/scaling.* "$WORK/outscale/$name/$launcher/" 2>/dev/null
            for report in "$set"/$launcher/workers-*/report.json; do
                [ -f "$report" ] || continue
                run=$(basename "$(dirname "$report")")
                cp "$report" "$WORK/outscale/$name/$launcher/$run-report.json"
            done
        done
    done
    # One archive only: the device tool brings back at most 8 files, and with 8 sets the archive
    # itself was left behind when each set's scaling_gpu.json was copied beside it (session 10).
    tar -czf "$OUT/scale.tgz" -C "$WORK/outscale" .
}
# A copy shortly before the limit, in case a set hangs; stopped (with its sleep) when the sets end.
(trap 'kill "$nap" 2>/dev/null; exit 0' TERM; sleep $((LIMIT - 15)) & nap=$!; wait "$nap" && copy_out) &
early_copy=$!
started=$(date +%s)
for r in $(seq 1 "$REPEATS"); do
    left=$((LIMIT - 20 - $(date +%s) + started))
    [ "$left" -gt 30 ] || { echo "no time left for set r$r"; break; }
    set_env=()
    if [ "${#SET_ENVS[@]}" -gt 0 ]; then
        set_env=("${SET_ENVS[$(( (r - 1) % ${#SET_ENVS[@]} ))]}")
        echo "=== set r$r: ${set_env[*]}"
    fi
    env "${set_env[@]}" timeout "$left" python3 benchmarks/scaling_gpu.py "$WORK/scale/r$r" --rows "$ROWS" \
        --counts "$COUNTS" --launchers mpi,ray --run-timeout 150 $MORE 2>&1 | grep -v Warn | tail -30
    # later sets take the first set's data and plan (scaling_gpu.py looks in OUTDIR/.. too)
    [ -e "$WORK/scale/data" ] || ln -s "$WORK/scale/r1/data" "$WORK/scale/data"
    [ -e "$WORK/scale/data.json" ] || ln -s "$WORK/scale/r1/data.json" "$WORK/scale/data.json"
    [ -e "$WORK/scale/plan" ] || ln -s "$WORK/scale/r1/plan" "$WORK/scale/plan"
done
kill "$early_copy" 2>/dev/null  # the sets ended in time: no copy from under the last one
copy_out
