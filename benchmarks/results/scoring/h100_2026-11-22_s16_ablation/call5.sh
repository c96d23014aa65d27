# Issue #5: GpuRunner lag 2 with a submit that does not wait (working tree) against HEAD 2e1e56c
# (.scratch/base), alternating; then the scoring benchmark twice and the GPU scoring tests.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
mkdir -p /tmp/r
t0=$(date +%s)
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_new1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_new1.json 2>/dev/null
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
probe() { # name, tree
  local name=$1 tree=$2
  (cd $tree && PYTHONPATH=/tmp/site:$PWD timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err)
  echo "$name rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$name
}
for r in 1 2 3; do
  probe new$r $PWD
  probe old$r $PWD/.scratch/base
done
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_new2.log 2>&1; echo "e2e2 rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_new2.json 2>/dev/null
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for n in ("new1", "new2"):
    base = json.load(open(f"/tmp/r/e2e_{n}.json"))
    eng = base["engine_only"]["images_per_s"]
    print(f"e2e_{n}: engine alone {eng:.0f}  steady {base['end_to_end']['steady_images_per_s']:.0f} ratio {base['ratio_steady_over_engine']:.3f} busy {base['end_to_end']['busy_fraction']:.3f}")
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
    except Exception as e:
        print(os.path.basename(f), "no json"); continue
    s = d["steady_images_per_s"]
    print(f"{os.path.basename(f)[6:-5]:>6} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} ms/batch {d.get('compute_ms_per_batch')} submit_s {d['phases_s'].get('runner.submit')} wait_slot_s {d['phases_s'].get('wait_free_slot')} caller_wait_s {d['waits']['caller_wait_s']}")
PY
timeout 240 python3 -m pytest -q -m gpu tests/scoring tests/gpu/test_gpu_scoring.py -n 4 -p no:cacheprovider > /tmp/r/gpu_tests.txt 2>&1; echo "tests rc=$?"; tail -3 /tmp/r/gpu_tests.txt
cp -r /tmp/bscache /tmp/r/cache
tar czf $OUT/results.tgz -C /tmp r
