# Issue #5, session 23, call 7: scoring's GPU tests (with the new nvJPEG streams test) at the final code.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py tests/gpu/*.py > /tmp/r/sha1.txt
timeout 300 python3 -m pytest -q -m gpu tests/scoring tests/gpu/test_gpu_scoring.py tests/gpu/test_gpu_input_heads.py tests/gpu/test_gpu_nvjpeg_streams.py tests/test_worker_phase_probe.py tests/test_resize_load_probe.py -n 4 -p no:cacheprovider > /tmp/r/gpu_tests_scoring.txt 2>&1; echo "scoring tests rc=$?"; tail -4 /tmp/r/gpu_tests_scoring.txt
tar czf $OUT/results.tgz -C /tmp r
