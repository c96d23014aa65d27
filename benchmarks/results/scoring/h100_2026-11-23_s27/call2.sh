# Issue #5, session 27, call 2: Arrow asked for full batches after a shard's first one (this
# session's read_shard) against the code before it (trial_patch1.py, TRIAL_NO_RESIZE=1: later batches
# straddle two of Arrow's and are copied), alternating on one fresh machine after a warm run that makes
# the data and plan. Then the reader thread alone on this host (benchmarks/outputs_io.py over the
# same data), and the scoring GPU tests.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,serial --format=csv,noheader > /tmp/r/device.txt
grep -m1 "model name" /proc/cpuinfo >> /tmp/r/device.txt; cat /proc/loadavg >> /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py benchmarks/outputs_io.py > /tmp/r/sha1.txt
python3 benchmarks/results/scoring/h100_2026-11-23_s27/trial_patch1.py > /tmp/r/trial_patch.txt 2>&1 || { cat /tmp/r/trial_patch.txt; exit 1; }
steal() { awk '/^cpu /{print "user",$2,"system",$4,"idle",$5,"steal",$9}' /proc/stat; }
e2e() {  # name, then env assignments
  local name=$1; shift
  echo "before $(steal)" > /tmp/r/steal_$name.txt
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  echo "after $(steal)" >> /tmp/r/steal_$name.txt
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
e2e warm_1 TRIAL_NO_RESIZE=0
for r in 1 2 3 4 5 6 7; do
  [ $(( $(date +%s)-t0 )) -lt 270 ] && e2e resized_$r TRIAL_NO_RESIZE=0
  [ $(( $(date +%s)-t0 )) -lt 290 ] && e2e copied_$r TRIAL_NO_RESIZE=1
done
python3 benchmarks/outputs_io.py /tmp/e --rows 100000 > /tmp/r/outputs_io.log 2>&1; echo "outputs_io rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/outputs_io.json /tmp/r/ 2>/dev/null
timeout 150 python3 -m pytest -q -m gpu tests/scoring tests/gpu/test_gpu_scoring.py tests/gpu/test_gpu_input_heads.py tests/gpu/test_gpu_nvjpeg_streams.py tests/test_worker_phase_probe.py tests/test_resize_load_probe.py -n 4 -p no:cacheprovider > /tmp/r/gpu_tests.txt 2>&1; echo "gpu tests rc=$? $(( $(date +%s)-t0 ))s"; tail -3 /tmp/r/gpu_tests.txt
python3 benchmarks/device/e2e_summary.py /tmp/r | tee /tmp/r/summary.txt
tar czf $OUT/results.tgz -C /tmp r
