# Issue #5, session 19, call 5: who holds the GIL when the calling thread is late? The probe's
# bystander thread names the threads whose CPU time grew while it waited, and where they were.
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
for r in 1 2 3; do probe main$r; done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
eng = json.load(open("/tmp/r/e2e_main1.json"))["engine_only"]["images_per_s"]
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    d = json.load(open(f))
    s = d["steady_images_per_s"]; g = d["gpu_gaps"]; c = d["idle_causes"]; k = d["gil_canary_late_ms"]
    print(f"{os.path.basename(f)[6:-5]:>8} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} gaps {g['total_ms']}ms behind {c['decoders_behind_ms']} caller {c['calling_thread_ms']}")
    print("   canary", {x: k[x] for x in k if x not in ("holders", "latest")})
    for h in k["holders"][:10]: print("     ", h)
    for h in k["latest"][:4]: print("    late", h)
PY
tar czf $OUT/results.tgz -C /tmp r
