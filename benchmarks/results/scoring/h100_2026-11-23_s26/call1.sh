# Issue #5, session 26, call 1: scoring's GPU tests at the committed code (3cd81ce: the float16
# handover, the timeline accounting), then end to end alternating the committed code with the
# control TRIAL_F32=1 (trial_patch1.py, the device's copy only: result() converts to float32 on
# the main loop, as before 74443b4). Last, if time is left, the outputs benchmark on this host.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
git rev-parse HEAD > /tmp/r/head.txt 2>/dev/null
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py tests/gpu/test_gpu_scoring.py > /tmp/r/sha1.txt
e2e() {  # name, then env assignments
  local name=$1; shift
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
e2e f16_1 X=1   # makes the data and plan
timeout 200 python3 -m pytest -q -m gpu tests/scoring tests/gpu/test_gpu_scoring.py tests/gpu/test_gpu_input_heads.py tests/gpu/test_gpu_nvjpeg_streams.py tests/test_worker_phase_probe.py tests/test_resize_load_probe.py -n 4 -p no:cacheprovider > /tmp/r/gpu_tests_scoring.txt 2>&1; echo "gpu tests rc=$? $(( $(date +%s)-t0 ))s"; tail -3 /tmp/r/gpu_tests_scoring.txt
python3 benchmarks/results/scoring/h100_2026-11-23_s26/trial_patch1.py > /tmp/r/trial_patch.txt 2>&1 || { cat /tmp/r/trial_patch.txt; exit 1; }
for r in 1 2 3 4 5 6; do
  [ $(( $(date +%s)-t0 )) -lt 470 ] && e2e f32_$r TRIAL_F32=1
  [ $(( $(date +%s)-t0 )) -lt 490 ] && [ $r -gt 1 ] && e2e f16_$r X=1
done
[ $(( $(date +%s)-t0 )) -lt 520 ] && { timeout 60 python3 benchmarks/outputs_io.py /tmp/o > /tmp/r/outputs_io.log 2>&1; echo "outputs_io rc=$?"; cp /tmp/o/*.json /tmp/r/ 2>/dev/null; }
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    try:
        w = json.load(open(f.replace("/e2e_", "/report_")))["workers"][0]
        cpus = f"irq_left {w.get('interrupt_cpus_left')} slow {[(d['cpu'], d['thread']) for d in w.get('slow_cpus_left') or []]}"
    except Exception as exc:
        cpus = f"n/a ({exc})"
    print(f"{os.path.basename(f)}: alone {b['engine_only']['images_per_s']:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} first_batch_to_end {b['ratio_first_batch_to_end_over_engine']:.3f} busy {e['busy_fraction']:.3f} {cpus} {str(e.get('error', ''))[:200]}")
PY
tar czf $OUT/results.tgz -C /tmp r
