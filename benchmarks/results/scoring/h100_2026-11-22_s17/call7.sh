# Issue #5, session 17: the scoring benchmark, main (new) against 4c7d05f (old, session 16's main), alternating.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
mkdir -p /tmp/r
t0=$(date +%s)
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_new1.log 2>&1; echo "new1 rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_new1.json
for r in 1 2 3; do
  (cd .scratch/old && PYTHONPATH=/tmp/site:$PWD python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_old$r.log 2>&1; echo "old$r rc=$? $(( $(date +%s)-t0 ))s"; cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_old$r.json)
  if [ $r -lt 3 ]; then
    python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_new$((r+1)).log 2>&1; echo "new$((r+1)) rc=$? $(( $(date +%s)-t0 ))s"
    cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_new$((r+1)).json
  fi
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    print(f"{os.path.basename(f)}: engine alone {b['engine_only']['images_per_s']:.0f}  steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f}")
PY
tar czf $OUT/results.tgz -C /tmp r
