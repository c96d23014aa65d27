# Issue #5, session 20, call 2: green contexts with each thread current in its partition (the engine's
# and the decoders'): the probe, then worker probe and benchmark, BATCHSCORE_GREEN_DECODE_SMS=8/16 against main.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_base_1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_base_1.json
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
timeout 120 python3 benchmarks/device/green_context_probe.py $PLAN > /tmp/r/green_probe.json 2> /tmp/r/green_probe.err; echo "green probe rc=$? $(( $(date +%s)-t0 ))s"
grep -v Deprecation /tmp/r/green_probe.err | grep -v "^  " | cut -c1-400
probe() {  # name, then probe options
  local name=$1; shift
  timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name "$@" > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err
  echo "$name rc=$? $(( $(date +%s)-t0 ))s"; grep -i "error" /tmp/r/probe_$name.err | grep -v nvtiff | grep -v nvjpeg2k | tail -2 | cut -c1-400; rm -rf /tmp/wp_$name
}
BATCHSCORE_GREEN_DECODE_SMS=8 probe green8_1; probe base_1; BATCHSCORE_GREEN_DECODE_SMS=16 probe green16_1
BATCHSCORE_GREEN_DECODE_SMS=8 probe green8_2; probe base_2; BATCHSCORE_GREEN_DECODE_SMS=16 probe green16_2
e2e() {
  local name=$1
  python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
}
BATCHSCORE_GREEN_DECODE_SMS=8 e2e green8_1
[ $(( $(date +%s)-t0 )) -lt 440 ] && e2e base_2
[ $(( $(date +%s)-t0 )) -lt 470 ] && BATCHSCORE_GREEN_DECODE_SMS=8 e2e green8_2
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    print(f"{os.path.basename(f)}: engine alone {b['engine_only']['images_per_s']:.0f}  steady {e.get('steady_images_per_s')} ratio {b.get('ratio_steady_over_engine')} busy {e.get('busy_fraction')} {str(e.get('error', ''))[:300]}")
eng = json.load(open("/tmp/r/e2e_base_1.json"))["engine_only"]["images_per_s"]
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
        s = d["steady_images_per_s"]; g = d["gpu_gaps"]; c = d["idle_causes"]
        print(f"{os.path.basename(f)[6:-5]:>10} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} ms/b {d['compute_ms_per_batch']} gaps {g['total_ms']}ms/{g['over_1ms']} behind {c['decoders_behind_ms']} caller {c['calling_thread_ms']} free-slot waits {d['phases_s'].get('wait_free_slot')} decode {d['waits'].get('decode_call_ms')}")
    except Exception as exc:
        print(f, "unreadable", exc)
try:
    g = json.load(open("/tmp/r/green_probe.json"))
    for k, v in g.items():
        if isinstance(v, dict):
            print(k, {a: (round(b, 3) if isinstance(b, float) else b) for a, b in v.items() if a != "trace"})
except Exception as exc:
    print("green probe unreadable", exc)
PY
tar czf $OUT/results.tgz -C /tmp r
