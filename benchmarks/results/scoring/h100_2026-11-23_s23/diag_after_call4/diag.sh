set -u
source .scratch/env.sh
gcc -O2 -shared -fPIC benchmarks/results/scoring/h100_2026-11-23_s23/diag_after_call4/dlspy.c -o /tmp/dlspy.so -ldl
echo "== plain"; timeout 60 python3 benchmarks/results/scoring/h100_2026-11-23_s23/diag_after_call4/diag.py 2>&1 | tail -8
echo "== spy, left default"; BATCHSCORE_NVJPEG_STREAM_PRIORITY=default LD_PRELOAD=/tmp/dlspy.so timeout 60 python3 benchmarks/results/scoring/h100_2026-11-23_s23/diag_after_call4/diag.py 2>&1 | grep -v "from /usr\|python3\|site-packages/cupy\|/tmp/site/cupy" | head -40
echo "== gpu test"; timeout 120 python3 -m pytest -q -m gpu tests/gpu/test_gpu_nvjpeg_streams.py -p no:cacheprovider 2>&1 | tail -15
