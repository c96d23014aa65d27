# Issue #5, session 27, call 4: does the GIL's load move the end-to-end share? A thread holding the
# GIL for 15% or 30% of each millisecond (trial_patch2.py, TRIAL_GIL_LOAD, the device's copy only)
# against none, alternating on one fresh machine after a warm run that makes the data and plan.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,serial --format=csv,noheader > /tmp/r/device.txt
grep -m1 "model name" /proc/cpuinfo >> /tmp/r/device.txt; cat /proc/loadavg >> /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py > /tmp/r/sha1.txt
python3 benchmarks/results/scoring/h100_2026-11-23_s27/trial_patch2.py > /tmp/r/trial_patch.txt 2>&1 || { cat /tmp/r/trial_patch.txt; exit 1; }
steal() { awk '/^cpu /{print "user",$2,"system",$4,"idle",$5,"steal",$9}' /proc/stat; }
e2e() {  # name, then the command's prefix (env assignments, py-spy)
  local name=$1; shift
  echo "before $(steal)" > /tmp/r/steal_$name.txt
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  echo "after $(steal)" >> /tmp/r/steal_$name.txt
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
e2e warm_1 TRIAL_GIL_LOAD=0
for r in 1 2 3 4; do
  [ $(( $(date +%s)-t0 )) -lt 280 ] && e2e load0_$r TRIAL_GIL_LOAD=0
  [ $(( $(date +%s)-t0 )) -lt 300 ] && e2e load15_$r TRIAL_GIL_LOAD=0.15
  [ $(( $(date +%s)-t0 )) -lt 320 ] && e2e load30_$r TRIAL_GIL_LOAD=0.30
done
python3 benchmarks/device/e2e_summary.py /tmp/r | tee /tmp/r/summary.txt
tar czf $OUT/results.tgz -C /tmp r
