# Issue #5, session 27, call 5: what the decoders' GPU work costs the engine beside it, with today's
# code (session 16's ablation was of far older code): the worker probe in this process, with the
# resize kernel, the hardware decode, both or neither left out (--skip; the scores are meaningless,
# the rates are not), alternating, after a benchmark run that makes the data and plan. The probe's
# compute_ms_per_batch is the engine's graph time per batch beside the decoders.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,serial --format=csv,noheader > /tmp/r/device.txt
grep -m1 "model name" /proc/cpuinfo >> /tmp/r/device.txt; cat /proc/loadavg >> /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py benchmarks/device/worker_phase_probe.py > /tmp/r/sha1.txt
steal() { awk '/^cpu /{print "user",$2,"system",$4,"idle",$5,"steal",$9}' /proc/stat; }
echo "before $(steal)" > /tmp/r/steal_main_1.txt
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_main_1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
echo "after $(steal)" >> /tmp/r/steal_main_1.txt
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_main_1.json; cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_main_1.json
probe() {  # name, skip
  echo "before $(steal)" > /tmp/r/steal_probe_$1.txt
  timeout 90 python3 benchmarks/device/worker_phase_probe.py /tmp/e/plan/resnet50.fp16.b256.plan /tmp/e/data /tmp/wp_$1 --skip "$2" > /tmp/r/probe_$1.json 2> /tmp/r/probe_$1.err; echo "probe $1 rc=$? $(( $(date +%s)-t0 ))s"
  echo "after $(steal)" >> /tmp/r/steal_probe_$1.txt
  rm -rf /tmp/wp_$1
}
for r in 1 2; do
  [ $(( $(date +%s)-t0 )) -lt 400 ] && probe all_$r ""
  [ $(( $(date +%s)-t0 )) -lt 400 ] && probe noresize_$r resize
  [ $(( $(date +%s)-t0 )) -lt 400 ] && probe nohardware_$r hardware
  [ $(( $(date +%s)-t0 )) -lt 400 ] && probe neither_$r resize,hardware
done
python3 benchmarks/device/e2e_summary.py /tmp/r | tee /tmp/r/summary.txt
python3 - <<'PY' | tee -a /tmp/r/summary.txt
import glob, json, os
alone = json.load(open("/tmp/r/e2e_main_1.json"))["engine_only"]["images_per_s"]
print(f"engine alone {alone:,.0f} images/s = {256e3 / alone:.3f} ms a batch of 256")
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
    except Exception as exc:
        print(os.path.basename(f), "unreadable", exc); continue
    print(f"{os.path.basename(f)}: skip {d['skip']} steady {d['steady_images_per_s']:,.0f} ({d['steady_images_per_s'] / alone:.3f} of alone) "
          f"busy {d['busy_fraction']} engine {d['compute_ms_per_batch']} ms a batch ({256e3 / alone / d['compute_ms_per_batch']:.3f} of its speed alone)")
PY
tar czf $OUT/results.tgz -C /tmp r
