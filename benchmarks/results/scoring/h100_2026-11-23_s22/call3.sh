# Issue #5, session 22, call 3: the GPU tests at the final code: scoring's (with the updated
# test_gpu_scoring), then the engine's whole (call 2 cut them off at 240 s).
set -u
source .scratch/env.sh
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
sha1sum engine/*.py scoring/*.py tests/gpu/*.py tests/scoring/test_gpu_runner.py > /tmp/r/sha1.txt
timeout 150 python3 -m pytest -q -m gpu tests/scoring tests/gpu/test_gpu_scoring.py tests/gpu/test_gpu_input_heads.py tests/test_worker_phase_probe.py tests/test_resize_load_probe.py -n 4 -p no:cacheprovider > /tmp/r/gpu_tests_scoring.txt 2>&1; echo "scoring tests rc=$? $(( $(date +%s)-t0 ))s"; tail -4 /tmp/r/gpu_tests_scoring.txt
timeout 420 python3 -m pytest -q -m gpu tests/gpu/test_gpu_backend.py tests/gpu/test_fp32_nchw_kernels.py tests/gpu/test_gpu_light_models.py -n 6 -p no:cacheprovider --durations=15 > /tmp/r/gpu_tests_engine.txt 2>&1; echo "engine tests rc=$? $(( $(date +%s)-t0 ))s"; tail -25 /tmp/r/gpu_tests_engine.txt
tar czf $OUT/results.tgz -C /tmp r
