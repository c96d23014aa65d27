#!/usr/bin/env bash
# One device call: GPU power, SM clock and throttle reasons every 200 ms (nvidia-smi) while
# `batchscore bench` runs ResNet-50 FP16 at batch 256 alone, then while scoring_gpu_e2e.py scores
# 100,000 JPEGs; then benchmarks/device/power_clock_summary.py writes $OUT/power_clocks.json.
#
#   run (kind nvidia-h100-x1, carry [".whl_all", ".scratch"]):
#       bash benchmarks/device/power_clock_call.sh
#
# .scratch/build_plan.py builds the zoo plan (.scratch is the dev box's scratch folder; any ResNet-50
# FP16 plan of max batch 256 at /tmp/r50.plan will do).
set -u
: "${OUT:?run this through the device tool, which sets OUT}"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl_all/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD LD_LIBRARY_PATH=/tmp/site/nvidia/cu13/lib:${LD_LIBRARY_PATH:-} PYTHONUNBUFFERED=1 PATH=/tmp/site/bin:$PATH
export BATCHSCORE_CACHE=$PWD/.scratch/cache
FIELDS=timestamp,power.draw,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu,clocks_throttle_reasons.active
nvidia-smi --query-gpu=$FIELDS --format=csv,noheader -lms 200 > "$OUT/smi.csv" 2>&1 &
nvidia-smi --query-gpu=power.limit,power.max_limit,clocks.max.sm --format=csv
timeout 60 python3 .scratch/build_plan.py resnet50 fp16 256 /tmp/r50.plan >/dev/null 2>&1
mark() { echo "$1 $(date +%Y/%m/%d\ %H:%M:%S.%3N)" >> "$OUT/marks.txt"; }
mark bench_start
timeout 60 python3 -m launchers.cli bench /tmp/r50.plan --batch 256 --iterations 600 --warmup 20 --json "$OUT/bench.json" >/dev/null 2>&1
mark bench_end
timeout 150 python3 benchmarks/scoring_gpu_e2e.py /tmp/e_w --rows 100000 --cpu-rows 0 > "$OUT/e2e.txt" 2>&1
mark e2e_end
cp /tmp/e_w/scoring_gpu_e2e.json "$OUT/"
pkill nvidia-smi; sleep 0.5
python3 benchmarks/device/power_clock_summary.py "$OUT"
