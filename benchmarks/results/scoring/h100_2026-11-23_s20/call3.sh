# Issue #5, session 20, call 3: the next batch copied into the input binding beside the previous one's
# later layers (early copy, the new default) against between batches (BATCHSCORE_EARLY_COPY=0), alternating.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
timeout 150 python3 -m pytest -q -m gpu tests/scoring/test_gpu_runner.py tests/gpu/test_gpu_backend.py -p no:cacheprovider > /tmp/r/gpu_tests_runner.txt 2>&1; echo "tests rc=$? $(( $(date +%s)-t0 ))s"; tail -3 /tmp/r/gpu_tests_runner.txt
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_early_1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_early_1.json
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
probe() {  # name, then probe options
  local name=$1; shift
  timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name "$@" > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err
  echo "$name rc=$? $(( $(date +%s)-t0 ))s"; grep -i "error" /tmp/r/probe_$name.err | grep -v nvtiff | grep -v nvjpeg2k | tail -2 | cut -c1-400; rm -rf /tmp/wp_$name
}
for r in 1 2 3; do BATCHSCORE_EARLY_COPY=0 probe late_$r; probe early_$r; done
e2e() {
  local name=$1
  python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
}
for r in 1 2 3; do
  [ $(( $(date +%s)-t0 )) -lt 500 ] && BATCHSCORE_EARLY_COPY=0 e2e late_$r
  [ $(( $(date +%s)-t0 )) -lt 520 ] && e2e early_$((r+1))
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    st = e.get("stages", {})
    print(f"{os.path.basename(f)}: engine alone {b['engine_only']['images_per_s']:.0f}  steady {e.get('steady_images_per_s')} ratio {b.get('ratio_steady_over_engine')} busy {e.get('busy_fraction')} input_s {st.get('input', {}).get('seconds')} compute_s {st.get('compute', {}).get('seconds')} {str(e.get('error', ''))[:300]}")
eng = json.load(open("/tmp/r/e2e_early_1.json"))["engine_only"]["images_per_s"]
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
        s = d["steady_images_per_s"]; g = d["gpu_gaps"]; c = d["idle_causes"]
        print(f"{os.path.basename(f)[6:-5]:>10} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} ms/b {d['compute_ms_per_batch']} gaps {g['total_ms']}ms/{g['over_1ms']} behind {c['decoders_behind_ms']} caller {c['calling_thread_ms']} free-slot waits {d['phases_s'].get('wait_free_slot')} decode {d['waits'].get('decode_call_ms')}")
    except Exception as exc:
        print(f, "unreadable", exc)
PY
tar czf $OUT/results.tgz -C /tmp r
