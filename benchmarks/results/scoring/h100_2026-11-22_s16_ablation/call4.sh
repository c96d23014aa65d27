# Issue #5: head-of-line waits (the caller waiting for batch n while later batches are decoded).
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
mkdir -p /tmp/r
t0=$(date +%s)
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_base.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_base.json 2>/dev/null
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
probe() { # name, env...
  local name=$1; shift
  env "$@" timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name ${ARGS:-} > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err
  echo "$name rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$name
}
for r in 1 2; do
  ARGS= probe base$r X=1
  ARGS="--skip resize,hardware" probe none$r X=1
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
base = json.load(open("/tmp/r/e2e_base.json"))
eng = base["engine_only"]["images_per_s"]
print(f"engine alone {eng:.0f}  e2e {base['end_to_end']['steady_images_per_s']:.0f} ratio {base['ratio_steady_over_engine']:.3f} busy {base['end_to_end']['busy_fraction']:.3f}")
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
    except Exception as e:
        print(os.path.basename(f), "no json"); continue
    s = d["steady_images_per_s"]
    print(f"{os.path.basename(f)[6:-5]:>8} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} ms/batch {d.get('compute_ms_per_batch')} wait_slot_s {d['phases_s'].get('wait_free_slot')} waits {d['waits']}")
PY
cp -r /tmp/bscache /tmp/r/cache
tar czf $OUT/results.tgz -C /tmp r
