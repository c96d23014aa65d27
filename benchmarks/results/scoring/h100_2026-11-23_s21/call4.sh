# Issue #5, session 21, call 4: with the second tiled kernel (as committed): the worker probe's idle causes;
# 3 decoders against 4, alternating, end to end; the kernel alone with __launch_bounds__(256, 5) (a copy).
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
rm -rf /tmp/lb; mkdir -p /tmp/lb; cp -r $(ls -d */ | grep -v -e scratch -e tests) /tmp/lb/ 2>/dev/null
sed -i 's/extern "C" __global__ void {name}(/extern "C" __global__ void __launch_bounds__(256, 5) {name}(/' /tmp/lb/scoring/resize_tiles.py
echo "launch bounds in copy: $(grep -c __launch_bounds__ /tmp/lb/scoring/resize_tiles.py)"
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_d3_1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_d3_1.json
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
for r in 1 2; do
  timeout 60 python3 benchmarks/device/resize_load_probe.py $PLAN --rates 26000 --seconds 2 > /tmp/r/resize_new_$r.jsonl 2> /tmp/r/resize_new_$r.err; echo "resize new rc=$? $(( $(date +%s)-t0 ))s"
  (cd /tmp/lb && PYTHONPATH=/tmp/site:/tmp/lb timeout 60 python3 benchmarks/device/resize_load_probe.py $PLAN --rates 26000 --seconds 2 > /tmp/r/resize_lb_$r.jsonl 2> /tmp/r/resize_lb_$r.err); echo "resize lb rc=$? $(( $(date +%s)-t0 ))s"
done
cat /tmp/r/resize_*.jsonl
probe() {  # name, then env assignments
  local name=$1; shift
  env "$@" timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err
  echo "probe $name rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$name
}
probe d3_1 X=1; probe d4_1 BATCHSCORE_GPU_DECODERS=4; probe d3_2 X=1
e2e() {  # name, then env assignments
  local name=$1; shift
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
}
for r in 1 2 3; do
  [ $(( $(date +%s)-t0 )) -lt 440 ] && e2e d4_$r BATCHSCORE_GPU_DECODERS=4
  [ $(( $(date +%s)-t0 )) -lt 460 ] && e2e d3_$((r+1)) X=1
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    st = e.get("stages", {})
    print(f"{os.path.basename(f)}: engine alone {b['engine_only']['images_per_s']:.0f}  steady {e.get('steady_images_per_s')} ratio {b.get('ratio_steady_over_engine')} busy {e.get('busy_fraction')} input_s {st.get('input', {}).get('seconds')} compute_s {st.get('compute', {}).get('seconds')} decode_s {st.get('decode', {}).get('seconds')} {str(e.get('error', ''))[:300]}")
eng = json.load(open("/tmp/r/e2e_d3_1.json"))["engine_only"]["images_per_s"]
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
        s = d["steady_images_per_s"]; g = d["gpu_gaps"]; c = d["idle_causes"]
        print(f"{os.path.basename(f)[6:-5]:>10} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} ms/b {d['compute_ms_per_batch']} gaps {g['total_ms']}ms/{g['over_1ms']} behind {c['decoders_behind_ms']} caller {c['calling_thread_ms']} free-slot waits {d['phases_s'].get('wait_free_slot')} decode {d['waits'].get('decode_call_ms')}")
    except Exception as exc:
        print(f, "unreadable", exc)
PY
tar czf $OUT/results.tgz -C /tmp r
