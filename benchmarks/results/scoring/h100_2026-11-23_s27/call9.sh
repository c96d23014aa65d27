# Issue #5, session 27, call 9: the heavy files of call 8 (119.6 KB a row) with a shard's row
# groups read on 2 threads at once (scoring/row_group_reads.py, BATCHSCORE_READ_THREADS=2) against
# one read on the reader thread (1, the committed default), alternating on one fresh machine after a
# warm run that makes the data and plan; then 2 read threads with a fourth decoder.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,serial --format=csv,noheader > /tmp/r/device.txt
grep -m1 "model name" /proc/cpuinfo >> /tmp/r/device.txt; cat /proc/loadavg >> /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py benchmarks/host_cpu.py > /tmp/r/sha1.txt
e2e() {  # name, then env assignments
  local name=$1; shift
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 --noise 5 --jpeg-quality 90-98 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
e2e warm_1 BATCHSCORE_READ_THREADS=1
for r in 1 2 3; do
  [ $(( $(date +%s)-t0 )) -lt 280 ] && e2e read2_$r BATCHSCORE_READ_THREADS=2
  [ $(( $(date +%s)-t0 )) -lt 300 ] && e2e read1_$r BATCHSCORE_READ_THREADS=1
done
[ $(( $(date +%s)-t0 )) -lt 320 ] && e2e read2dec4_1 BATCHSCORE_READ_THREADS=2 BATCHSCORE_GPU_DECODERS=4
[ $(( $(date +%s)-t0 )) -lt 340 ] && e2e read2dec4_2 BATCHSCORE_READ_THREADS=2 BATCHSCORE_GPU_DECODERS=4
python3 benchmarks/device/e2e_summary.py /tmp/r | tee /tmp/r/summary.txt
tar czf $OUT/results.tgz -C /tmp r
