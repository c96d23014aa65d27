# Issue #5, session 21, call 1: stream priorities and decoder counts with today's pipeline (env only),
# alternating with main's defaults; then ncu's per-instruction counts of the tiled resize kernel.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_base_1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_base_1.json
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
e2e() {  # name, then env assignments
  local name=$1; shift
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
}
HI="BATCHSCORE_ENGINE_STREAM_PRIORITY=-1000 BATCHSCORE_DECODE_STREAM_PRIORITY=0"
for r in 1 2; do
  [ $(( $(date +%s)-t0 )) -lt 420 ] && e2e enghi3_$r $HI
  [ $(( $(date +%s)-t0 )) -lt 420 ] && e2e enghi5_$r $HI BATCHSCORE_GPU_DECODERS=5
  [ $(( $(date +%s)-t0 )) -lt 420 ] && e2e bothhi4_$r BATCHSCORE_ENGINE_STREAM_PRIORITY=-1000 BATCHSCORE_DECODE_STREAM_PRIORITY=-1000 BATCHSCORE_GPU_DECODERS=4
  [ $(( $(date +%s)-t0 )) -lt 420 ] && e2e enghi4_$r $HI BATCHSCORE_GPU_DECODERS=4
  [ $(( $(date +%s)-t0 )) -lt 420 ] && e2e base_$((r+1)) X=1
done
timeout 90 ncu --clock-control none --kernel-name regex:preprocess_tiled --launch-skip 3 --launch-count 1 \
  --section SourceCounters --section InstructionStats --section ComputeWorkloadAnalysis --section LaunchStats \
  --section Occupancy --section SpeedOfLight --section WarpStateStats -o /tmp/r/tiled -f \
  python3 benchmarks/device/resize_load_probe.py $PLAN --rates max --seconds 0.2 > /tmp/r/ncu_run.log 2>&1; echo "ncu rc=$? $(( $(date +%s)-t0 ))s"
ncu -i /tmp/r/tiled.ncu-rep --page details > /tmp/r/tiled_details.txt 2>&1
ncu -i /tmp/r/tiled.ncu-rep --page source --csv --print-source sass > /tmp/r/tiled_sass.csv 2>&1; echo "sass rc=$?"
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    st = e.get("stages", {})
    print(f"{os.path.basename(f)}: engine alone {b['engine_only']['images_per_s']:.0f}  steady {e.get('steady_images_per_s')} ratio {b.get('ratio_steady_over_engine')} busy {e.get('busy_fraction')} input_s {st.get('input', {}).get('seconds')} compute_s {st.get('compute', {}).get('seconds')} decode_s {st.get('decode', {}).get('seconds')} {str(e.get('error', ''))[:300]}")
PY
gzip -f /tmp/r/tiled_sass.csv
tar czf $OUT/results.tgz -C /tmp r
