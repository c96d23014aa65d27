# Issue #5, session 17: every part file call on the part thread (this tree, "new") against 89d89a5
# ("prev": adds on the calling thread, closes on a thread), top-k only and with raw outputs, alternating.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
mkdir -p /tmp/r
t0=$(date +%s)
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_new1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_new1.json
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
probe() {  # name, tree, then probe options
  local name=$1 tree=$2; shift 2
  PYTHONPATH=/tmp/site:$(cd $tree && pwd) timeout 60 python3 $tree/benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name "$@" > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err
  echo "$name rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$name
}
for r in 1 2 3; do probe new$r . ; probe prev$r .scratch/prev; probe rawnew$r . --raw; probe rawprev$r .scratch/prev --raw; done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
b = json.load(open("/tmp/r/e2e_new1.json")); e = b["end_to_end"]
eng = b["engine_only"]["images_per_s"]
print(f"e2e_new1: engine alone {eng:.0f}  steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f}")
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
    except Exception as exc:
        print(f, "unreadable", exc); continue
    s = d["steady_images_per_s"]; g = d["gpu_gaps"]; p = d["phases_s"]
    print(f"{os.path.basename(f)[6:-5]:>8} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} ms/b {d['compute_ms_per_batch']} "
          f"gaps {g['total_ms']}ms late {d['late_launches']} part.add {p.get('part.add')} part.close {p.get('part.close')} write {d['worker_stages_s'].get('write')}")
PY
tar czf $OUT/results.tgz -C /tmp r
