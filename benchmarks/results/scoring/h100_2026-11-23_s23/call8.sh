# Issue #5, session 23, call 8: the nvJPEG streams GPU test and scoring's GPU decode tests after the
# review's mend (dlsym's lookups go through the same swap as cuGetProcAddress's).
set -u
source .scratch/env.sh
rm -rf /tmp/r; mkdir -p /tmp/r
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
sha1sum scoring/*.py tests/gpu/*.py > /tmp/r/sha1.txt
timeout 200 python3 -m pytest -q -m gpu tests/gpu/test_gpu_nvjpeg_streams.py tests/scoring/test_gpu_decode.py tests/gpu/test_gpu_scoring.py -n 3 -p no:cacheprovider > /tmp/r/gpu_tests.txt 2>&1; echo "rc=$?"; tail -3 /tmp/r/gpu_tests.txt
tar czf $OUT/results.tgz -C /tmp r
