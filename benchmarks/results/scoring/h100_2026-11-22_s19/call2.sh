# Issue #5, session 19, call 2: why the engine sits idle (the probe's idle_causes: each gap of over
# 1 ms set against the ready batches and what the decoder threads were doing), at main's settings,
# with 4 decoders, and with 8 ring slots beyond the first decoder's.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_main1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_main1.json
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
probe() {  # name, then probe options
  local name=$1; shift
  timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name "$@" > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err
  echo "$name rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$name
}
for r in 1 2; do probe main$r; BATCHSCORE_GPU_DECODERS=4 probe dec4_$r; probe slots8_$r --slots 8; done
probe main3
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    print(f"{os.path.basename(f)}: engine alone {b['engine_only']['images_per_s']:.0f}  steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f}")
eng = json.load(open("/tmp/r/e2e_main1.json"))["engine_only"]["images_per_s"]
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
    except Exception as exc:
        print(f, "unreadable", exc); continue
    s = d["steady_images_per_s"]; g = d["gpu_gaps"]
    print(f"{os.path.basename(f)[6:-5]:>8} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} ms/b {d['compute_ms_per_batch']} gaps {g['total_ms']}ms/{g['over_1ms']} dec p50/p90 {d['waits']['decode_call_ms']['p50']}/{d['waits']['decode_call_ms']['p90']}")
    print("         ", json.dumps(d["idle_causes"]))
PY
tar czf $OUT/results.tgz -C /tmp r
