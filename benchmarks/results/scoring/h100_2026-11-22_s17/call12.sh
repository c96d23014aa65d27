# Issue #5, session 17: main at ba35e4c: the GPU tests and the scoring benchmark once.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
mkdir -p /tmp/r
t0=$(date +%s)
timeout 300 python3 -m pytest -q -m gpu tests/scoring tests/gpu/test_gpu_scoring.py tests/test_worker_phase_probe.py -n 4 -p no:cacheprovider > /tmp/r/gpu_tests.txt 2>&1; echo "tests rc=$? $(( $(date +%s)-t0 ))s"; tail -2 /tmp/r/gpu_tests.txt
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/scoring_gpu_e2e_h100_2026-11-22_s17_final.json
python3 -c "
import json; b = json.load(open('/tmp/r/scoring_gpu_e2e_h100_2026-11-22_s17_final.json')); e = b['end_to_end']
print(f\"engine alone {b['engine_only']['images_per_s']:.0f}  steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f}\")" | tee /tmp/r/summary.txt
tar czf $OUT/results.tgz -C /tmp r
