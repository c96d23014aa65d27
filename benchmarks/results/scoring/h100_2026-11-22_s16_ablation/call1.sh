# Issue #5 ablation: what each part of the decoders' GPU work costs the worker beside the engine.
set -u
source .scratch/env.sh
nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
lscpu | grep -E "Model name|^CPU\(s\)|MHz" | tee $OUT/lscpu.txt
t0=$(date +%s)
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > $OUT/e2e_base.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json $OUT/e2e_base.json 2>/dev/null
tail -15 $OUT/e2e_base.log
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
probe() { # name, env..., -- args
  local name=$1; shift
  env "$@" timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name ${ARGS:-} > $OUT/probe_$name.json 2> $OUT/probe_$name.err
  echo "$name rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$name
}
for r in 1 2; do
  ARGS= probe base$r X=1
  ARGS="--skip resize" probe noresize$r X=1
  ARGS="--skip hardware" probe nohw$r X=1
  ARGS="--skip resize,hardware" probe none$r X=1
done
ARGS= probe swap5 BATCHSCORE_ENGINE_STREAM_PRIORITY=-1000 BATCHSCORE_DECODE_STREAM_PRIORITY=0 BATCHSCORE_GPU_DECODERS=5
ARGS= probe equal3 BATCHSCORE_DECODE_STREAM_PRIORITY=0
ARGS= probe base3 X=1
python3 - <<'PY'
import json, glob, os
out = os.environ["OUT"]
base = json.load(open(f"{out}/e2e_base.json"))
eng = base["engine_only"]["images_per_s"]
print(f"engine alone {eng:.0f}  e2e {base['end_to_end']['steady_images_per_s']:.0f} ratio {base['ratio_steady_over_engine']:.3f} busy {base['end_to_end']['busy_fraction']:.3f}")
for f in sorted(glob.glob(f"{out}/probe_*.json")):
    try:
        d = json.load(open(f))
    except Exception as e:
        print(os.path.basename(f), "no json"); continue
    s = d["steady_images_per_s"]
    print(f"{os.path.basename(f)[6:-5]:>12} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} ms/batch {d.get('compute_ms_per_batch')} decode_s {d['worker_stages_s'].get('decode')}")
PY
