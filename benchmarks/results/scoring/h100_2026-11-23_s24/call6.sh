# Issue #5, session 24, call 6: the preprocessing kernel's loads and stores cache-streaming
# (trial_patch3.py, the device's copy only: TRIAL_STREAMING=1 swaps __ldg for __ldcs and the stores
# for __stcs). First the kernel beside the model at 26,000 images/s (resize_load_probe.py), then end
# to end, alternating with the committed kernel.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
python3 benchmarks/results/scoring/h100_2026-11-23_s24/trial_patch3.py > /tmp/r/trial_patch.txt 2>&1 || { cat /tmp/r/trial_patch.txt; exit 1; }
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py > /tmp/r/sha1.txt
e2e() {  # name, then env assignments
  local name=$1; shift
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
e2e main_1 TRIAL_STREAMING=0
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
for r in 1 2; do
  for v in 0 1; do
    TRIAL_STREAMING=$v timeout 90 python3 benchmarks/device/resize_load_probe.py $PLAN --rates 26000 --seconds 3 > /tmp/r/resize_probe_streaming${v}_$r.jsonl 2> /tmp/r/resize_probe_streaming${v}_$r.err
    echo "resize probe streaming=$v rc=$? $(( $(date +%s)-t0 ))s"
  done
done
for r in 1 2 3 4 5; do
  [ $(( $(date +%s)-t0 )) -lt 420 ] && e2e streaming_$r TRIAL_STREAMING=1
  [ $(( $(date +%s)-t0 )) -lt 440 ] && [ $r -gt 1 ] && e2e main_$r TRIAL_STREAMING=0
done
[ $(( $(date +%s)-t0 )) -lt 460 ] && e2e main_6 TRIAL_STREAMING=0
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/resize_probe_*.jsonl")):
    print(os.path.basename(f), open(f).read().strip().replace("\n", " | ")[:400])
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]; st = e["stages"]
    print(f"{os.path.basename(f)}: alone {b['engine_only']['images_per_s']:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} first_batch_to_end {b['ratio_first_batch_to_end_over_engine']:.3f} busy {e['busy_fraction']:.3f} compute {st['compute']['seconds']:.3f} decode {st['decode']['seconds']:.2f} {str(e.get('error', ''))[:200]}")
PY
tar czf $OUT/results.tgz -C /tmp r
