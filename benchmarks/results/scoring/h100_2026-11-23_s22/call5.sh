# Issue #5, session 22, call 5: the worker probe after its fix (batches counted by execute and
# execute_from): one end-to-end run (it makes the data and the plan), then the probe, in place and copied.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
sha1sum engine/gpu_runtime.py scoring/gpu_runner.py benchmarks/device/worker_phase_probe.py > /tmp/r/sha1.txt
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_inplace_1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_inplace_1.json
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
probe() {  # name, then env assignments
  local name=$1; shift
  env "$@" timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err
  echo "probe $name rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$name
}
probe inplace_1 X=1; probe copied_1 BATCHSCORE_SLOT_INPUT=0
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
b = json.load(open("/tmp/r/e2e_inplace_1.json")); e = b["end_to_end"]
eng = b["engine_only"]["images_per_s"]
print(f"e2e_inplace_1: alone {eng:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f} slot_input {e.get('slot_input')!r}")
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    d = json.load(open(f)); s = d["steady_images_per_s"]; c = d["idle_causes"]
    print(f"{os.path.basename(f)[6:-5]:>10} steady {s} ratio {s/eng:.3f} busy {d['busy_fraction']} ms/b {d['compute_ms_per_batch']} calls execute {d['calls'].get('context.execute')} execute_from {d['calls'].get('context.execute_from')} late {d['late_launches']}")
PY
tar czf $OUT/results.tgz -C /tmp r
