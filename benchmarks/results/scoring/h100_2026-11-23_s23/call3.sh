# Issue #5, session 23, call 3 (trial): nvJPEG's streams at the greatest priority (the preloaded shim)
# crossed with two batches queued on the GPU (BATCHSCORE_GPU_LAG=2, trial code in the working tree),
# end to end, the four variants in turn.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/device/nvjpeg_stream_priority.c > /tmp/r/sha1.txt
gcc -O2 -Wall -shared -fPIC benchmarks/device/nvjpeg_stream_priority.c -o /tmp/nsp.so -ldl || exit 1
SHIM="LD_PRELOAD=/tmp/nsp.so"
e2e() {  # name, then env assignments
  local name=$1; shift
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
}
for r in 1 2 3 4 5 6; do
  [ $(( $(date +%s)-t0 )) -lt 470 ] && e2e high_lag2_$r $SHIM BATCHSCORE_GPU_LAG=2
  [ $(( $(date +%s)-t0 )) -lt 490 ] && e2e high_lag1_$r $SHIM BATCHSCORE_GPU_LAG=1
  [ $(( $(date +%s)-t0 )) -lt 510 ] && e2e base_lag2_$r BATCHSCORE_GPU_LAG=2
  [ $(( $(date +%s)-t0 )) -lt 530 ] && e2e base_lag1_$r BATCHSCORE_GPU_LAG=1
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]; st = e["stages"]
    print(f"{os.path.basename(f)}: alone {b['engine_only']['images_per_s']:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f} compute {st['compute']['seconds']:.3f} decode {st['decode']['seconds']:.2f} {str(e.get('error', ''))[:200]}")
PY
tar czf $OUT/results.tgz -C /tmp r
