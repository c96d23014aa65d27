# Issue #5, session 24, call 10: the committed code on a fresh machine (call 9 ran on the machine
# of call 8, still warm). Six runs of the benchmark's 100,000 rows.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py > /tmp/r/sha1.txt
e2e() {  # name, out dir, rows
  local name=$1 dir=$2 rows=$3
  python3 benchmarks/scoring_gpu_e2e.py $dir --rows $rows --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp $dir/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp $dir/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
for r in 1 2 3 4 5 6; do
  [ $(( $(date +%s)-t0 )) -lt 230 ] && e2e rows100k_$r /tmp/e 100000
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    try:
        w = json.load(open(f.replace("/e2e_", "/report_")))["workers"][0]
        cpus = f"irq_left {w.get('interrupt_cpus_left')} slow {[(d['cpu'], d['thread']) for d in w.get('slow_cpus_left') or []]}"
    except Exception as exc:
        cpus = f"n/a ({exc})"
    print(f"{os.path.basename(f)}: images {e.get('images')} alone {b['engine_only']['images_per_s']:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} first_batch_to_end {b['ratio_first_batch_to_end_over_engine']:.3f} busy {e['busy_fraction']:.3f} {cpus} {str(e.get('error', ''))[:200]}")
PY
tar czf $OUT/results.tgz -C /tmp r
