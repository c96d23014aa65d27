# Issue #5: the caller's waits for the next batch in order, at HEAD: was it overtaken by later ones?
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
mkdir -p /tmp/r
t0=$(date +%s)
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_base.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_base.json 2>/dev/null
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
for r in 1 2 3; do
  timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$r > /tmp/r/probe_base$r.json 2> /tmp/r/probe_base$r.err
  echo "base$r rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$r
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
base = json.load(open("/tmp/r/e2e_base.json"))
eng = base["engine_only"]["images_per_s"]
print(f"engine alone {eng:.0f}  e2e steady {base['end_to_end']['steady_images_per_s']:.0f} ratio {base['ratio_steady_over_engine']:.3f} busy {base['end_to_end']['busy_fraction']:.3f}")
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    d = json.load(open(f)); s = d["steady_images_per_s"]
    print(f"{os.path.basename(f)[6:-5]:>6} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} wait_slot_s {d['phases_s'].get('wait_free_slot')} waits {d['waits']}")
PY
tar czf $OUT/results.tgz -C /tmp r
