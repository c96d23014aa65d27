# Issue #5, session 20, call 4: the kernels nvJPEG's batched hardware decode launches per batch of 256,
# as the worker calls it (CREATE_FLAGS), listed by ncu.
set -u
source .scratch/env.sh
mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
timeout 400 ncu --clock-control none --metrics gpu__time_duration.sum --csv --log-file /tmp/r/ncu_kernels.csv \
  python3 benchmarks/device/nvjpeg_kernel_count.py --rows 256 --batches 3 > /tmp/r/run.json 2> /tmp/r/run.err
echo "ncu rc=$? $(( $(date +%s)-t0 ))s"; tail -5 /tmp/r/run.err; cat /tmp/r/run.json
python3 benchmarks/device/nvjpeg_kernel_count.py --batches 3 --summarize /tmp/r/ncu_kernels.csv | tee /tmp/r/summary.json
gzip -k /tmp/r/ncu_kernels.csv; rm /tmp/r/ncu_kernels.csv
tar czf $OUT/results.tgz -C /tmp r
