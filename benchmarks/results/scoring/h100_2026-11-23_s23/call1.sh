# Issue #5, session 23, call 1: the engine's batch as a lever. End to end at batch 256 (the
# benchmark's default) against 512 and 1024, alternating; each ratio is against the engine alone
# at the same plan and batch, measured in the same run.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py > /tmp/r/sha1.txt
e2e() {  # name, batch
  python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 --batch $2 > /tmp/r/e2e_$1.log 2>&1; echo "e2e $1 rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$1.json
}
e2e b256_1 256
e2e b512_1 512
for r in 2 3 4; do
  [ $(( $(date +%s)-t0 )) -lt 400 ] && e2e b256_$r 256
  [ $(( $(date +%s)-t0 )) -lt 420 ] && e2e b512_$r 512
done
[ $(( $(date +%s)-t0 )) -lt 440 ] && e2e b1024_1 1024
[ $(( $(date +%s)-t0 )) -lt 500 ] && e2e b1024_2 1024
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    st = e.get("stages", {})
    print(f"{os.path.basename(f)}: batch {b['batch']} alone {b['engine_only']['images_per_s']:.0f} steady {e.get('steady_images_per_s')} ratio {b.get('ratio_steady_over_engine')} busy {e.get('busy_fraction')} slot_input {e.get('slot_input')!r} compute_s {st.get('compute', {}).get('seconds')} build_s {b['plan'].get('build_s')} {str(e.get('error', ''))[:300]}")
PY
tar czf $OUT/results.tgz -C /tmp r
