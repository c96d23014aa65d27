# Issue #5, session 22, call 2: the GPU tests (tests/gpu whole, scoring's GPU tests), then device
# slots read in place against copied (BATCHSCORE_SLOT_INPUT=0), alternating, end to end.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
git ls-files -s >/dev/null 2>&1; sha1sum engine/gpu_runtime.py scoring/gpu_runner.py engine/address_span.py tests/gpu/*.py > /tmp/r/sha1.txt
timeout 200 python3 -m pytest -q -m gpu tests/scoring tests/gpu/test_gpu_scoring.py tests/gpu/test_gpu_input_heads.py tests/test_worker_phase_probe.py tests/test_resize_load_probe.py -n 4 -p no:cacheprovider > /tmp/r/gpu_tests_scoring.txt 2>&1; echo "scoring tests rc=$? $(( $(date +%s)-t0 ))s"; tail -4 /tmp/r/gpu_tests_scoring.txt
timeout 240 python3 -m pytest -q -m gpu tests/gpu/test_gpu_backend.py tests/gpu/test_fp32_nchw_kernels.py tests/gpu/test_gpu_light_models.py -n 4 -p no:cacheprovider > /tmp/r/gpu_tests_engine.txt 2>&1; echo "engine tests rc=$? $(( $(date +%s)-t0 ))s"; tail -4 /tmp/r/gpu_tests_engine.txt
e2e() {  # name, then env assignments
  local name=$1; shift
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
}
[ $(( $(date +%s)-t0 )) -lt 440 ] && e2e inplace_1 X=1
for r in 1 2 3 4 5; do
  [ $(( $(date +%s)-t0 )) -lt 530 ] && e2e copied_$r BATCHSCORE_SLOT_INPUT=0
  [ $(( $(date +%s)-t0 )) -lt 550 ] && e2e inplace_$((r+1)) X=1
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    st = e.get("stages", {})
    print(f"{os.path.basename(f)}: alone {b['engine_only']['images_per_s']:.0f} steady {e.get('steady_images_per_s')} ratio {b.get('ratio_steady_over_engine')} busy {e.get('busy_fraction')} slot_input {e.get('slot_input')!r} input_s {st.get('input', {}).get('seconds')} compute_s {st.get('compute', {}).get('seconds')} {str(e.get('error', ''))[:300]}")
PY
tar czf $OUT/results.tgz -C /tmp r
