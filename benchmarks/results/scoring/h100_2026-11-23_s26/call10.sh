# Issue #5, session 26, call 10 (call 9 again): a deeper ring of decoded batches, GPU_DECODE_SLOTS 12 (14 slots with
# 3 decoders: up to 11 batches decoded ahead, about 100 ms of the engine's work) against the
# committed 4 (6 slots), alternating on one fresh machine (trial_patch3.py, the device's copy only).
# On the slower machines the throughput dipped for a quarter second at a time; a deeper ring would
# ride out a decoder's stall of that length, where 3 batches ahead (about 27 ms) do not.
# Call 10: a first run that makes the data and plan (warm_1, committed value) before the pairs, so
# that neither variant's first run follows the data's writing, and the pairs start with 12.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,serial --format=csv,noheader > /tmp/r/device.txt
grep -m1 "model name" /proc/cpuinfo >> /tmp/r/device.txt; cat /proc/loadavg >> /tmp/r/device.txt
git rev-parse HEAD > /tmp/r/head.txt 2>/dev/null
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py > /tmp/r/sha1.txt
steal() { awk '/^cpu /{print "user",$2,"system",$4,"idle",$5,"steal",$9}' /proc/stat; }
e2e() {  # name, then env assignments
  local name=$1; shift
  echo "before $(steal)" > /tmp/r/steal_$name.txt
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  echo "after $(steal)" >> /tmp/r/steal_$name.txt
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
python3 benchmarks/results/scoring/h100_2026-11-23_s26/trial_patch3.py > /tmp/r/trial_patch.txt 2>&1 || { cat /tmp/r/trial_patch.txt; exit 1; }; grep -n "^GPU_DECODE_SLOTS" scoring/worker.py >> /tmp/r/trial_patch.txt
e2e warm_1 TRIAL_SLOTS=4
for r in 1 2 3 4 5 6 7; do
  [ $(( $(date +%s)-t0 )) -lt 330 ] && e2e slots12_$r TRIAL_SLOTS=12
  [ $(( $(date +%s)-t0 )) -lt 350 ] && e2e slots4_$r TRIAL_SLOTS=4
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    s = {}
    for line in open(f.replace("/e2e_", "/steal_").replace(".json", ".txt")):
        w = line.split(); s[w[0]] = dict(zip(w[1::2], map(int, w[2::2])))
    d = {k: s["after"][k] - s["before"][k] for k in s["after"]}
    steal = d["steal"] / max(1, sum(d.values()))
    try:
        w = json.load(open(f.replace("/e2e_", "/report_")))["workers"][0]
        cpus = f"main {w['thread_cpu_us_per_image'].get('main')} read {w['thread_cpu_us_per_image'].get('read')} slow {[(d['cpu'], d['thread']) for d in w.get('slow_cpus_left') or []]}"
    except Exception as exc:
        cpus = f"n/a ({exc})"
    print(f"{os.path.basename(f)}: alone {b['engine_only']['images_per_s']:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} first_batch_to_end {b['ratio_first_batch_to_end_over_engine']:.3f} busy {e['busy_fraction']:.3f} steal {steal:.4f} {cpus} {str(e.get('error', ''))[:200]}")
PY
tar czf $OUT/results.tgz -C /tmp r
