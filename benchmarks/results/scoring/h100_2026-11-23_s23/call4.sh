# Issue #5, session 23, call 4: nvJPEG's streams at the decoders' priority as landed
# (scoring/nvjpeg_streams.py, through libnvjpeg's GOT), against BATCHSCORE_NVJPEG_STREAM_PRIORITY=default,
# alternating end to end; then scoring's GPU tests with the new one.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py tests/gpu/*.py > /tmp/r/sha1.txt
timeout 120 python3 -m pytest -q -m gpu tests/gpu/test_gpu_nvjpeg_streams.py -p no:cacheprovider > /tmp/r/gpu_test_streams.txt 2>&1; echo "streams test rc=$? $(( $(date +%s)-t0 ))s"; tail -3 /tmp/r/gpu_test_streams.txt
e2e() {  # name, then env assignments
  local name=$1; shift
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
}
for r in 1 2 3 4 5; do
  [ $(( $(date +%s)-t0 )) -lt 330 ] && e2e raised_$r X=1
  [ $(( $(date +%s)-t0 )) -lt 350 ] && e2e default_$r BATCHSCORE_NVJPEG_STREAM_PRIORITY=default
done
timeout 200 python3 -m pytest -q -m gpu tests/scoring tests/gpu/test_gpu_scoring.py tests/gpu/test_gpu_input_heads.py tests/gpu/test_gpu_nvjpeg_streams.py tests/test_worker_phase_probe.py tests/test_resize_load_probe.py -n 4 -p no:cacheprovider > /tmp/r/gpu_tests_scoring.txt 2>&1; echo "scoring tests rc=$? $(( $(date +%s)-t0 ))s"; tail -4 /tmp/r/gpu_tests_scoring.txt
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]; st = e["stages"]
    print(f"{os.path.basename(f)}: alone {b['engine_only']['images_per_s']:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f} compute {st['compute']['seconds']:.3f} decode {st['decode']['seconds']:.2f} nvjpeg_streams {e.get('nvjpeg_streams')!r} {str(e.get('error', ''))[:200]}")
PY
tar czf $OUT/results.tgz -C /tmp r
