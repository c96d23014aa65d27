# Issue #5, session 27, call 6: the stream priorities swapped with today's code. Call 5 found the
# hardware decode costs the engine 0.48-0.49 ms a batch beside it (8.63-8.64 against 8.16 ms) and
# the resize kernel 0.17-0.19, with the host's work costing next to nothing. nvJPEG's per-image
# conversion kernels and our resize kernel run above the engine (scoring/stream_priority.py,
# nvjpeg_streams.py). Session 8 swapped them with far slower decoders and lost. Here, committed
# (decoders -1000, engine 0) against the engine at -1000 and the decoders' and nvJPEG's streams at 0
# (the existing $BATCHSCORE_*_STREAM_PRIORITY settings, no patch), alternating after a warm run.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,serial --format=csv,noheader > /tmp/r/device.txt
grep -m1 "model name" /proc/cpuinfo >> /tmp/r/device.txt; cat /proc/loadavg >> /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py > /tmp/r/sha1.txt
steal() { awk '/^cpu /{print "user",$2,"system",$4,"idle",$5,"steal",$9}' /proc/stat; }
e2e() {  # name, then env assignments
  local name=$1; shift
  echo "before $(steal)" > /tmp/r/steal_$name.txt
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  echo "after $(steal)" >> /tmp/r/steal_$name.txt
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
e2e warm_1 BATCHSCORE_GPU_DECODERS=3
for r in 1 2 3 4 5; do
  [ $(( $(date +%s)-t0 )) -lt 260 ] && e2e committed_$r BATCHSCORE_GPU_DECODERS=3
  [ $(( $(date +%s)-t0 )) -lt 280 ] && e2e engine_first_$r BATCHSCORE_ENGINE_STREAM_PRIORITY=-1000 BATCHSCORE_DECODE_STREAM_PRIORITY=0 BATCHSCORE_NVJPEG_STREAM_PRIORITY=0
done
python3 benchmarks/device/e2e_summary.py /tmp/r | tee /tmp/r/summary.txt
python3 - <<'PY' | tee -a /tmp/r/summary.txt
import glob, json, os
for f in sorted(glob.glob("/tmp/r/report_*.json")):
    w = json.load(open(f))["workers"][0]
    stages = w.get("stages_s") or w.get("stages") or {}
    print(os.path.basename(f), "stages", json.dumps(stages)[:300], "nvjpeg_streams", json.dumps(w.get("nvjpeg_streams"))[:200])
PY
tar czf $OUT/results.tgz -C /tmp r
