source .scratch/env.sh
timeout 60 python3 benchmarks/results/scoring/h100_2026-11-23_s23/diag_after_call4/diag2.py 2>&1 | grep -v "nvjpeg2k\|nvtiff\|nvTIFF" | tail -30
gcc -O2 -shared -fPIC benchmarks/results/scoring/h100_2026-11-23_s23/diag_after_call4/dlspy.c -o /tmp/dlspy.so -ldl
echo "== spy"; BATCHSCORE_NVJPEG_STREAM_PRIORITY=default LD_PRELOAD=/tmp/dlspy.so timeout 60 python3 benchmarks/results/scoring/h100_2026-11-23_s23/diag_after_call4/diag.py 2>&1 | grep "libnvjpeg.so" | head -20
