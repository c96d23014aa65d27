# Issue #5, session 22, call 6: what the split into a head and a tail graph costs. Four variants by
# the worker probe (ms a batch from the worker's stages), alternating, with a trial patch
# (trial_split.diff, not landed): in place with split graphs (main); in place with one whole graph
# per slot (BATCHSCORE_TRIAL_FULL=1: the slot is freed only at the batch's end); copied with one
# graph (BATCHSCORE_SLOT_INPUT=0); copied, then the split graphs (BATCHSCORE_TRIAL_SPLIT_COPY=1).
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
for r in 1 2 3 4; do
  [ $(( $(date +%s)-t0 )) -lt 400 ] || break
  probe split_$r X=1; probe full_$r BATCHSCORE_TRIAL_FULL=1
  probe copied_$r BATCHSCORE_SLOT_INPUT=0; probe copysplit_$r BATCHSCORE_SLOT_INPUT=0 BATCHSCORE_TRIAL_SPLIT_COPY=1
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
b = json.load(open("/tmp/r/e2e_inplace_1.json")); e = b["end_to_end"]
eng = b["engine_only"]["images_per_s"]
print(f"e2e_inplace_1: alone {eng:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f} slot_input {e.get('slot_input')!r}")
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
    except Exception as exc:
        print(f, "unreadable", exc); continue
    s = d["steady_images_per_s"]; st = d["worker_stages_s"]; c = d["calls"]
    batches = c.get("context.execute", 0) - 2 + c.get("context.execute_from", 0)
    print(f"{os.path.basename(f)[6:-5]:>12} steady {s} ratio {s/eng:.3f} busy {d['busy_fraction']} graphs ms/b {d['compute_ms_per_batch']} input ms/b {1e3 * st.get('input', 0) / batches:.3f} batches {batches} gaps {d['gpu_gaps']['total_ms']}")
PY
tar czf $OUT/results.tgz -C /tmp r
