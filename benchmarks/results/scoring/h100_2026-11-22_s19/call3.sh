# Issue #5, session 19, call 3: does the hardware decoder decode only a region (nvjpegDecodeBatchedEx
# with a region per image: what the crop reads) faster, and cost the model less, than whole images?
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_main1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_main1.json
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
for r in 1 2; do
  CUDA_DEVICE_MAX_CONNECTIONS=32 timeout 200 python3 benchmarks/device/nvjpeg_batched_probe.py $PLAN /tmp/e/data hardware 3,2 roi,rgbi > /tmp/r/nvjpeg_roi$r.jsonl 2> /tmp/r/nvjpeg_roi$r.err
  echo "nvjpeg probe $r rc=$? $(( $(date +%s)-t0 ))s"; cat /tmp/r/nvjpeg_roi$r.jsonl; tail -3 /tmp/r/nvjpeg_roi$r.err
done
tar czf $OUT/results.tgz -C /tmp r
