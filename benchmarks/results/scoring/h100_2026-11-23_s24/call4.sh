# Issue #5, session 24, call 4: the committed code, with the steady state measured over the middle of
# the run's rows (scoring/steady_state.py: images/s and GPU busy from 20% to 90% of the rows done;
# the JSON keeps the first-batch-to-end figure beside it). Six runs end to end, then scoring's GPU
# tests (the runner's busy accounting changed).
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py > /tmp/r/sha1.txt
e2e() {  # name
  local name=$1
  python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
for r in 1 2 3 4 5 6; do
  [ $(( $(date +%s)-t0 )) -lt 260 ] && e2e main_$r
done
timeout 240 python3 -m pytest -q -m gpu tests/scoring tests/gpu/test_gpu_scoring.py tests/gpu/test_gpu_input_heads.py tests/gpu/test_gpu_nvjpeg_streams.py tests/test_worker_phase_probe.py tests/test_resize_load_probe.py -n 4 -p no:cacheprovider > /tmp/r/gpu_tests_scoring.txt 2>&1; echo "gpu tests rc=$? $(( $(date +%s)-t0 ))s"; tail -3 /tmp/r/gpu_tests_scoring.txt
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]; st = e["stages"]
    print(f"{os.path.basename(f)}: alone {b['engine_only']['images_per_s']:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} first_batch_to_end {b['ratio_first_batch_to_end_over_engine']:.3f} busy {e['busy_fraction']:.3f} compute {st['compute']['seconds']:.3f} decode {st['decode']['seconds']:.2f} {str(e.get('error', ''))[:200]}")
PY
tar czf $OUT/results.tgz -C /tmp r
