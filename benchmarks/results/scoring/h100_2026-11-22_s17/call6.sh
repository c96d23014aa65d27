# Issue #5, session 17: the scoring benchmark at main (batches across shards, decoded order, closes off the calling thread).
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
mkdir -p /tmp/r
t0=$(date +%s)
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 5000 > /tmp/r/e2e_1.log 2>&1; echo "e2e1 rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/scoring_gpu_e2e_h100_2026-11-22_s17_1.json
for r in 2 3; do
  python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$r.log 2>&1; echo "e2e$r rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/scoring_gpu_e2e_h100_2026-11-22_s17_$r.json
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/scoring_gpu_e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]; c = b.get("cpu_decode") or {}
    print(f"{os.path.basename(f)}: engine alone {b['engine_only']['images_per_s']:.0f}  steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f} cpu {c.get('images_per_s')} {c.get('images_per_s_per_core')}")
PY
tar czf $OUT/results.tgz -C /tmp r
