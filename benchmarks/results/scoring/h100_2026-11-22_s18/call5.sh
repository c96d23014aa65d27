# Issue #5, session 18, call 5: the GPU tests of scoring at 88226e3 (the tiled kernel landed).
set -u
source .scratch/env.sh
mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
timeout 420 python3 -m pytest -q -m gpu tests/scoring tests/gpu/test_gpu_scoring.py tests/test_worker_phase_probe.py -n 4 -p no:cacheprovider > /tmp/r/gpu_tests.txt 2>&1; echo "tests rc=$? $(( $(date +%s)-t0 ))s"; tail -3 /tmp/r/gpu_tests.txt
tar czf $OUT/results.tgz -C /tmp r
