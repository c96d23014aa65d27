# Issue #5, session 17: batches filled across shard boundaries (this tree) against 426448b (decoded
# order + closes off the calling thread, "mid") and 4c7d05f (session 16's main, "old"), alternating.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
mkdir -p /tmp/r
t0=$(date +%s)
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_new1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_new1.json 2>/dev/null
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
probe() {  # name, tree, then probe options
  local name=$1 tree=$2; shift 2
  PYTHONPATH=/tmp/site:$(cd $tree && pwd) timeout 60 python3 $tree/benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name "$@" > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err
  echo "$name rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$name
}
for r in 1 2 3; do probe new$r . ; probe mid$r .scratch/mid; probe old$r .scratch/old; done
(cd .scratch/old && PYTHONPATH=/tmp/site:$PWD python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_old1.log 2>&1; echo "e2e old rc=$? $(( $(date +%s)-t0 ))s"; cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_old1.json)
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_new2.log 2>&1; echo "e2e2 rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_new2.json 2>/dev/null
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    print(f"{os.path.basename(f)}: engine alone {b['engine_only']['images_per_s']:.0f}  steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f}")
eng = json.load(open("/tmp/r/e2e_new1.json"))["engine_only"]["images_per_s"]
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
    except Exception as exc:
        print(f, "unreadable", exc); continue
    s = d["steady_images_per_s"]; g = d["gpu_gaps"]; t = d["ticks"]
    print(f"{os.path.basename(f)[6:-5]:>5} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} ms/b {d['compute_ms_per_batch']} "
          f"launches {d['calls'].get('context.execute')} gaps {g['total_ms']}ms >1ms {g['over_1ms']} top {g['largest_ms'][:3]} from_batch_10 {t.get('from_batch_10_per_s')} write {d['worker_stages_s'].get('write')}")
PY
timeout 200 python3 -m pytest -q -m gpu tests/scoring tests/gpu/test_gpu_scoring.py tests/test_worker_phase_probe.py -n 4 -p no:cacheprovider > /tmp/r/gpu_tests.txt 2>&1; echo "tests rc=$? $(( $(date +%s)-t0 ))s"; tail -3 /tmp/r/gpu_tests.txt
tar czf $OUT/results.tgz -C /tmp r
