# Issue #5, session 26, call 11: on call 10's machine (the slowest of the session, still warm: its
# data and plan in /tmp/e), the worker probe three times at the committed code, for where its idle
# time comes from (idle_causes: no decoded batch ready, and then what the decoder threads were
# doing; or a batch ready and the calling thread late).
set -u
source .scratch/env.sh
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,serial --format=csv,noheader > /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/device/worker_phase_probe.py > /tmp/r/sha1.txt
for r in 1 2 3; do
  timeout 90 python3 benchmarks/device/worker_phase_probe.py /tmp/e/plan/resnet50.fp16.b256.plan /tmp/e/data /tmp/wp_$r > /tmp/r/probe_$r.json 2> /tmp/r/probe_$r.err; echo "probe $r rc=$? $(( $(date +%s)-t0 ))s"
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
    except Exception as exc:
        print(f, "unreadable", exc); continue
    print(os.path.basename(f), "steady", round(d["steady_images_per_s"]), "busy", d["busy_fraction"], "idle", json.dumps(d["idle_causes"]), "gil", json.dumps(d.get("gil_canary_late_ms")), "waits", json.dumps(d.get("waits"))[:600])
PY
tar czf $OUT/results.tgz -C /tmp r
