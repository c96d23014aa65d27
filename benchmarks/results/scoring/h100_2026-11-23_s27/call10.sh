# Issue #5, session 27, call 10: the scoring GPU tests on this session's final code (the reader's row
# groups on threads, scoring/row_group_reads.py), once as committed and once with two read threads.
set -u
source .scratch/env.sh
rm -rf /tmp/r; mkdir -p /tmp/r
nvidia-smi --query-gpu=name,driver_version,serial --format=csv,noheader > /tmp/r/device.txt
sha1sum scoring/*.py > /tmp/r/sha1.txt
T="tests/scoring tests/gpu/test_gpu_scoring.py tests/gpu/test_gpu_input_heads.py tests/gpu/test_gpu_nvjpeg_streams.py tests/test_worker_phase_probe.py tests/test_resize_load_probe.py"
timeout 200 python3 -m pytest -q -m gpu $T -n 4 -p no:cacheprovider > /tmp/r/gpu_tests.txt 2>&1; echo "gpu tests rc=$?"; tail -2 /tmp/r/gpu_tests.txt
BATCHSCORE_READ_THREADS=2 timeout 200 python3 -m pytest -q -m gpu $T -n 4 -p no:cacheprovider > /tmp/r/gpu_tests_read2.txt 2>&1; echo "gpu tests read2 rc=$?"; tail -2 /tmp/r/gpu_tests_read2.txt
tar czf $OUT/results.tgz -C /tmp r
