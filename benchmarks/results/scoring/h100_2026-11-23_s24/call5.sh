# Issue #5, session 24, call 5: the committed code on another machine (more runs of the new steady
# state), alternating with a trial (trial_patch2.py, the device's copy only): nvJPEG's hardware
# decode writing each image's rows 256 bytes aligned (TRIAL_PITCH_ALIGN=256) rather than 3 x width
# apart, in case unaligned rows make its per-image conversion kernels longer.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
python3 benchmarks/results/scoring/h100_2026-11-23_s24/trial_patch2.py > /tmp/r/trial_patch.txt 2>&1 || { cat /tmp/r/trial_patch.txt; exit 1; }
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py > /tmp/r/sha1.txt
e2e() {  # name, then env assignments
  local name=$1; shift
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
for r in 1 2 3 4 5 6; do
  [ $(( $(date +%s)-t0 )) -lt 400 ] && e2e main_$r TRIAL_PITCH_ALIGN=1
  [ $(( $(date +%s)-t0 )) -lt 420 ] && e2e aligned_$r TRIAL_PITCH_ALIGN=256
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]; st = e["stages"]
    print(f"{os.path.basename(f)}: alone {b['engine_only']['images_per_s']:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} first_batch_to_end {b['ratio_first_batch_to_end_over_engine']:.3f} busy {e['busy_fraction']:.3f} compute {st['compute']['seconds']:.3f} decode {st['decode']['seconds']:.2f} {str(e.get('error', ''))[:200]}")
PY
tar czf $OUT/results.tgz -C /tmp r
