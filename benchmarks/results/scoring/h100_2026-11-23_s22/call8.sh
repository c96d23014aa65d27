# Session 22, call 8: the GPU tests of scoring and of the input heads after the review mend (the runner asks the context which slots it reads in place).
set -u
source .scratch/env.sh
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
sha1sum engine/*.py scoring/*.py tests/gpu/*.py tests/scoring/*.py benchmarks/device/worker_phase_probe.py > /tmp/r/sha1.txt
timeout 200 python3 -m pytest -q -m gpu tests/scoring tests/gpu/test_gpu_scoring.py tests/gpu/test_gpu_input_heads.py tests/test_worker_phase_probe.py tests/test_resize_load_probe.py -n 4 -p no:cacheprovider > /tmp/r/gpu_tests_scoring.txt 2>&1; echo "scoring tests rc=$? $(( $(date +%s)-t0 ))s"; tail -4 /tmp/r/gpu_tests_scoring.txt
tar czf $OUT/results.tgz -C /tmp r
