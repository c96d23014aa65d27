# Issue #5, session 21, call 5: the committed code with the GPU waits spinning (BATCHSCORE_GPU_WAIT=spin)
# against asleep (the default), alternating, end to end.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_block_1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_block_1.json
e2e() {  # name, then env assignments
  local name=$1; shift
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
}
for r in 1 2 3 4; do
  [ $(( $(date +%s)-t0 )) -lt 400 ] && e2e spin_$r BATCHSCORE_GPU_WAIT=spin
  [ $(( $(date +%s)-t0 )) -lt 420 ] && e2e block_$((r+1)) X=1
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    st = e.get("stages", {})
    print(f"{os.path.basename(f)}: engine alone {b['engine_only']['images_per_s']:.0f}  steady {e.get('steady_images_per_s')} ratio {b.get('ratio_steady_over_engine')} busy {e.get('busy_fraction')} input_s {st.get('input', {}).get('seconds')} compute_s {st.get('compute', {}).get('seconds')} decode_s {st.get('decode', {}).get('seconds')} {str(e.get('error', ''))[:300]}")
PY
tar czf $OUT/results.tgz -C /tmp r
