# Issue #5, session 24, call 7: why CPU 14 is slow. The workers' slow-CPU watch marked CPU 14 in most
# runs of calls 2-6, on every machine (threads 2-7x slower there), and the runs whose middle dipped
# to 18,000-19,000 images/s were among them. Per-CPU speed (benchmarks/device/cpu_speed_probe.py:
# the same pure-Python loop pinned to each CPU) and interrupt, softirq and steal ticks, idle and
# while a worker scores; /proc/interrupts before and after.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
lscpu > /tmp/r/lscpu.txt 2>&1; lscpu -e > /tmp/r/lscpu_e.txt 2>&1
cat /proc/interrupts > /tmp/r/interrupts_before.txt
python3 benchmarks/device/cpu_speed_probe.py --seconds 3 > /tmp/r/cpu_idle.json 2>&1; echo "idle probe $(( $(date +%s)-t0 ))s"
during() {  # name: an e2e run, the probe while its worker scores
  local name=$1
  python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1 &
  local pid=$!
  for i in $(seq 1 600); do grep -q "^end to end" /tmp/r/e2e_$name.log && break; sleep 0.2; done
  sleep 5  # the worker's start-up (about 5.5 s to its first batch)
  python3 benchmarks/device/cpu_speed_probe.py --seconds 2 --repeats 2 > /tmp/r/cpu_during_$name.json 2>&1
  wait $pid; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
during run1
during run2
cat /proc/interrupts > /tmp/r/interrupts_after.txt
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
def load(path):
    try:
        return json.load(open(path))
    except Exception as exc:
        return {"error": str(exc)}
for f in ["/tmp/r/cpu_idle.json"] + sorted(glob.glob("/tmp/r/cpu_during_*.json")):
    d = load(f)
    if "best_ms" not in d:
        print(f, d); continue
    best = d["best_ms"]; med = sorted(best.values())[len(best) // 2]
    print(os.path.basename(f), "sweeps", d["sweeps"], "median", med)
    print("   best/median", {c: round(v / med, 2) for c, v in best.items()})
    print("   worst/median", {c: round(v / med, 2) for c, v in d["worst_ms"].items()})
    print("   ticks irq+softirq+steal", {c: (t["irq"], t["softirq"], t["steal"]) for c, t in d["ticks"].items() if sum(t.values())})
for f in sorted(glob.glob("/tmp/r/report_*.json")):
    w = load(f)["workers"][0]
    print(os.path.basename(f), "slow", w.get("slow_cpus_left"))
# where the GPU's interrupts go: per-CPU counts of nvidia lines, after minus before
def irq(path):
    lines = open(path).read().splitlines()
    cpus = len(lines[0].split())
    rows = {}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) > cpus and not parts[0].rstrip(":").isalpha():
            rows[parts[0] + " " + " ".join(parts[cpus + 1:])] = [int(v) for v in parts[1:cpus + 1]]
    return rows
b, a = irq("/tmp/r/interrupts_before.txt"), irq("/tmp/r/interrupts_after.txt")
for name in a:
    delta = [x - y for x, y in zip(a[name], b.get(name, [0] * len(a[name])))]
    if sum(delta) > 1000:
        print("irq", name, "delta per CPU", delta)
PY
tar czf $OUT/results.tgz -C /tmp r
