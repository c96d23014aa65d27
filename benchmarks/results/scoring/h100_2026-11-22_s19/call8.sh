# Issue #5, session 19, call 8: the GPU tests at the session's last commit (product code as at 5d8ca36).
set -u
source .scratch/env.sh
mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
timeout 300 python3 -m pytest -q -m gpu tests/scoring tests/gpu/test_gpu_scoring.py tests/test_worker_phase_probe.py -n 4 -p no:cacheprovider > /tmp/r/gpu_tests.txt 2>&1; echo "tests rc=$? $(( $(date +%s)-t0 ))s"; tail -3 /tmp/r/gpu_tests.txt
tar czf $OUT/results.tgz -C /tmp r
