# Issue #5, session 26, calls 2, 3, 4 and 7: the committed code (3cd81ce) on a fresh machine, six
# runs, with the host's CPU steal time (/proc/stat) and load read around each run, to tell a slow
# machine's cause (another tenant's load on the VM's host) from our own. From call 7 on, also the
# CPU topology the VM shows (whether its 16 CPUs are 8 cores with two threads each).
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,serial --format=csv,noheader > /tmp/r/device.txt
grep -m1 "model name" /proc/cpuinfo >> /tmp/r/device.txt; lscpu > /tmp/r/lscpu.txt 2>&1; lscpu -e > /tmp/r/lscpu_e.txt 2>&1
grep -H . /sys/devices/system/cpu/cpu*/topology/thread_siblings_list > /tmp/r/siblings.txt 2>&1; cat /proc/loadavg >> /tmp/r/device.txt
git rev-parse HEAD > /tmp/r/head.txt 2>/dev/null
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py > /tmp/r/sha1.txt
steal() { awk '/^cpu /{print "user",$2,"system",$4,"idle",$5,"steal",$9}' /proc/stat; }
e2e() {  # name
  local name=$1
  echo "before $(steal)" > /tmp/r/steal_$name.txt
  python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  echo "after $(steal)" >> /tmp/r/steal_$name.txt
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
for r in 1 2 3 4 5 6; do
  [ $(( $(date +%s)-t0 )) -lt 240 ] && e2e main_$r
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    s = {}
    for line in open(f.replace("/e2e_", "/steal_").replace(".json", ".txt")):
        w = line.split(); s[w[0]] = dict(zip(w[1::2], map(int, w[2::2])))
    d = {k: s["after"][k] - s["before"][k] for k in s["after"]}
    steal = d["steal"] / max(1, sum(d.values()))
    try:
        w = json.load(open(f.replace("/e2e_", "/report_")))["workers"][0]
        cpus = f"main {w['thread_cpu_us_per_image'].get('main')} read {w['thread_cpu_us_per_image'].get('read')} slow {[(d['cpu'], d['thread']) for d in w.get('slow_cpus_left') or []]}"
    except Exception as exc:
        cpus = f"n/a ({exc})"
    print(f"{os.path.basename(f)}: alone {b['engine_only']['images_per_s']:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} first_batch_to_end {b['ratio_first_batch_to_end_over_engine']:.3f} busy {e['busy_fraction']:.3f} steal {steal:.4f} {cpus} {str(e.get('error', ''))[:200]}")
PY
tar czf $OUT/results.tgz -C /tmp r
