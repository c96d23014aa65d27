# Issue #5, session 19, call 7: CUDA's own waits asleep (BATCHSCORE_CUDA_SCHEDULE=blocking: every primary context
# made with CU_CTX_SCHED_BLOCKING_SYNC, nvJPEG's waits inside its calls among them) against CUDA's default (spin), alternating.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_auto1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_auto1.json

PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
probe() {  # name, then probe options
  local name=$1; shift
  timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name "$@" > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err
  echo "$name rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$name
}
for r in 1 2 3; do probe auto$r; BATCHSCORE_CUDA_SCHEDULE=blocking probe block$r; done
for r in 1 2; do
  BATCHSCORE_CUDA_SCHEDULE=blocking python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_block$r.log 2>&1; echo "e2e block $r rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_block$r.json
  python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_auto$((r+1)).log 2>&1; echo "e2e auto $((r+1)) rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_auto$((r+1)).json
  [ $(( $(date +%s)-t0 )) -gt 480 ] && break
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    print(f"{os.path.basename(f)}: engine alone {b['engine_only']['images_per_s']:.0f}  steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f}")
eng = json.load(open("/tmp/r/e2e_auto1.json"))["engine_only"]["images_per_s"]
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
    except Exception as exc:
        print(f, "unreadable", exc); continue
    s = d["steady_images_per_s"]; g = d["gpu_gaps"]; c = d["idle_causes"]
    print(f"{os.path.basename(f)[6:-5]:>8} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} ms/b {d['compute_ms_per_batch']} gaps {g['total_ms']}ms/{g['over_1ms']} behind {c['decoders_behind_ms']} caller {c['calling_thread_ms']} cpu_s {d["cpu_s"]}")
PY
tar czf $OUT/results.tgz -C /tmp r
