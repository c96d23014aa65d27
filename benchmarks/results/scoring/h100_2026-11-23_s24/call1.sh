# Issue #5, session 24, call 1: the priorities turned round now that nvJPEG's own streams can be set
# apart from ours. The engine at the greatest priority and nvJPEG's per-image colour conversions at
# the least, so that they take SMs only where the engine leaves some free (its kernels' tails, the
# gaps between batches); our resize kernel at the engine's priority, or above it. Alternating with
# the committed defaults on one machine, end to end, then in the worker probe.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py > /tmp/r/sha1.txt
python3 -c "import cupy; print('stream priority range (least, greatest):', cupy.cuda.runtime.deviceGetStreamPriorityRange())" > /tmp/r/priority_range.txt 2>&1
e2e() {  # name, then env assignments
  local name=$1; shift
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
}
BELOW="BATCHSCORE_ENGINE_STREAM_PRIORITY=-1000 BATCHSCORE_DECODE_STREAM_PRIORITY=-1000 BATCHSCORE_NVJPEG_STREAM_PRIORITY=0"
SPLIT="BATCHSCORE_ENGINE_STREAM_PRIORITY=-1 BATCHSCORE_DECODE_STREAM_PRIORITY=-1000 BATCHSCORE_NVJPEG_STREAM_PRIORITY=0"
for r in 1 2 3; do
  [ $(( $(date +%s)-t0 )) -lt 330 ] && e2e main_$r X=1
  [ $(( $(date +%s)-t0 )) -lt 350 ] && e2e below_$r $BELOW
  [ $(( $(date +%s)-t0 )) -lt 370 ] && e2e split_$r $SPLIT
  [ $(( $(date +%s)-t0 )) -lt 390 ] && e2e below4_$r $BELOW BATCHSCORE_GPU_DECODERS=4
done
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
probe() {  # name, then env assignments
  local name=$1; shift
  env "$@" timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err
  echo "probe $name rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$name
}
[ $(( $(date +%s)-t0 )) -lt 470 ] && probe main X=1
[ $(( $(date +%s)-t0 )) -lt 490 ] && probe below $BELOW
[ $(( $(date +%s)-t0 )) -lt 510 ] && probe split $SPLIT
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]; st = e["stages"]
    print(f"{os.path.basename(f)}: alone {b['engine_only']['images_per_s']:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f} compute {st['compute']['seconds']:.3f} decode {st['decode']['seconds']:.2f} nvjpeg_streams {e.get('nvjpeg_streams')!r} {str(e.get('error', ''))[:200]}")
eng = json.load(open("/tmp/r/e2e_main_1.json"))["engine_only"]["images_per_s"]
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
    except Exception as exc:
        print(f, "unreadable", exc); continue
    s = d["steady_images_per_s"]; g = d["gpu_gaps"]; c = d["idle_causes"]
    print(f"{os.path.basename(f)[6:-5]:>10} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} ms/b {d['compute_ms_per_batch']} gaps {g['total_ms']}ms/{g['over_1ms']} behind {c['decoders_behind_ms']} caller {c['calling_thread_ms']}")
    print("            decode calls", d["waits"]["decode_call_ms"])
PY
tar czf $OUT/results.tgz -C /tmp r
