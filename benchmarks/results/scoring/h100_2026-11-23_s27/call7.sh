# Issue #5, session 27, call 7: the committed code of this session (the reader's full batches, the
# benchmark's own steal reading) on a fresh machine: a warm run that makes the data and plan, then
# runs as long as the time allows. No steal files: e2e_summary reads each job's steal from the JSON.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,serial --format=csv,noheader > /tmp/r/device.txt
grep -m1 "model name" /proc/cpuinfo >> /tmp/r/device.txt; cat /proc/loadavg >> /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py benchmarks/host_cpu.py > /tmp/r/sha1.txt
e2e() {  # name
  python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$1.log 2>&1; echo "e2e $1 rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$1.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$1.json 2>/dev/null
}
e2e warm_1
for r in 1 2 3 4 5 6; do
  [ $(( $(date +%s)-t0 )) -lt 200 ] && e2e main_$r
done
python3 benchmarks/device/e2e_summary.py /tmp/r | tee /tmp/r/summary.txt
grep -h "host CPU" /tmp/r/e2e_*.log | head -3
tar czf $OUT/results.tgz -C /tmp r
