# Issue #5, session 22, call 4: where the engine's idle time goes with slots read in place (the
# worker probe's idle_causes, 3 runs) beside the same with slots copied (2 runs); then more end-to-end
# runs of each, alternating.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
sha1sum engine/gpu_runtime.py scoring/gpu_runner.py engine/address_span.py > /tmp/r/sha1.txt
e2e() {  # name, then env assignments
  local name=$1; shift
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
}
e2e inplace_1 X=1
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
probe() {  # name, then env assignments
  local name=$1; shift
  env "$@" timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err
  echo "probe $name rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$name
}
for r in 1 2; do probe inplace_$r X=1; probe copied_$r BATCHSCORE_SLOT_INPUT=0; done
probe inplace_3 X=1
for r in 1 2 3; do
  [ $(( $(date +%s)-t0 )) -lt 420 ] && e2e copied_$r BATCHSCORE_SLOT_INPUT=0
  [ $(( $(date +%s)-t0 )) -lt 440 ] && e2e inplace_$((r+1)) X=1
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]; st = e["stages"]
    print(f"{os.path.basename(f)}: alone {b['engine_only']['images_per_s']:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f} slot_input {e.get('slot_input')!r} input+compute {st['input']['seconds'] + st['compute']['seconds']:.3f}")
eng = json.load(open("/tmp/r/e2e_inplace_1.json"))["engine_only"]["images_per_s"]
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
    except Exception as exc:
        print(f, "unreadable", exc); continue
    s = d["steady_images_per_s"]; g = d["gpu_gaps"]; c = d["idle_causes"]
    print(f"{os.path.basename(f)[6:-5]:>10} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} ms/b {d['compute_ms_per_batch']} gaps {g['total_ms']}ms/{g['over_1ms']} behind {c['decoders_behind_ms']} caller {c['calling_thread_ms']} (before submit {c['calling_thread_before_submit_ms']}, in {c['calling_thread_in_submit_ms']})")
    print("            canary", d["gil_canary_late_ms"])
PY
tar czf $OUT/results.tgz -C /tmp r
