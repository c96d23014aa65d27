# Issue #5, session 26, call 12: the worker probe after its fix (call 11 found its GpuRunner._account
# wrapper one argument short since session 24, tests/test_worker_phase_probe.py now compares every
# wrapper's signature with its method's), on a fresh machine: one benchmark run makes the data and
# plan (and is a tenth machine's figure), then the probe three times.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,serial --format=csv,noheader > /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/device/worker_phase_probe.py > /tmp/r/sha1.txt
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_main_1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_main_1.json; cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_main_1.json
python3 -c "import json; b=json.load(open('/tmp/r/e2e_main_1.json')); print('e2e ratio', b['ratio_steady_over_engine'], 'busy', b['end_to_end']['busy_fraction'])"
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
