# Issue #5, session 23, call 2 (trial): nvJPEG's own streams at the greatest priority, through the
# preloaded shim benchmarks/device/nvjpeg_stream_priority.c, against nvJPEG's default (the engine's
# priority), alternating: end to end, then the worker probe's idle causes and decode-call spread.
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
e2e base_1 X=1
e2e high_1 $SHIM NVJPEG_STREAM_PRIORITY_LOG=1
grep -c "nvjpeg_stream_priority" /tmp/r/e2e_high_1.log; grep "nvjpeg_stream_priority" /tmp/r/e2e_high_1.log | sort | uniq -c | sort -rn | head -5
for r in 2 3 4 5; do
  [ $(( $(date +%s)-t0 )) -lt 300 ] && e2e base_$r X=1
  [ $(( $(date +%s)-t0 )) -lt 320 ] && e2e high_$r $SHIM
done
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
probe() {  # name, then env assignments
  local name=$1; shift
  env "$@" timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err
  echo "probe $name rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$name
}
for r in 1 2 3; do
  [ $(( $(date +%s)-t0 )) -lt 480 ] && probe base_$r X=1
  [ $(( $(date +%s)-t0 )) -lt 500 ] && probe high_$r $SHIM
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]; st = e["stages"]
    print(f"{os.path.basename(f)}: alone {b['engine_only']['images_per_s']:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f} compute {st['compute']['seconds']:.3f} decode {st['decode']['seconds']:.2f}")
eng = json.load(open("/tmp/r/e2e_base_1.json"))["engine_only"]["images_per_s"]
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
