# Issue #5, session 27, call 8: JPEGs as heavy as real photos. make_dataset's default files average
# about 30 KB, where ImageNet's photos of the same size average about 110 KB; the reader and nvJPEG's
# hardware decode handle bytes, so the figure may depend on it. The default data (warm run, then
# runs) against --noise 5 --jpeg-quality 90-98, alternating on one fresh machine, this session's code.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,serial --format=csv,noheader > /tmp/r/device.txt
grep -m1 "model name" /proc/cpuinfo >> /tmp/r/device.txt; cat /proc/loadavg >> /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py benchmarks/host_cpu.py > /tmp/r/sha1.txt
e2e() {  # name, then extra arguments
  local name=$1; shift
  python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 "$@" > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
e2e warm_1
e2e heavy_1 --noise 5 --jpeg-quality 90-98
for r in 1 2 3; do
  [ $(( $(date +%s)-t0 )) -lt 330 ] && e2e default_$r
  [ $(( $(date +%s)-t0 )) -lt 350 ] && e2e heavy_$((r + 1)) --noise 5 --jpeg-quality 90-98
done
python3 benchmarks/device/e2e_summary.py /tmp/r | tee /tmp/r/summary.txt
python3 - <<'PY' | tee -a /tmp/r/summary.txt
import glob, json, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); d = b["dataset"]; e = b["end_to_end"]
    dec = (e.get("stages") or {}).get("decode", {}).get("seconds")
    print(f"{os.path.basename(f)}: {d['bytes'] / d['rows'] / 1e3:.1f} KB a row, {d['bytes'] / 1e9:.2f} GB, made in {d.get('seconds')} s; decode stage {dec} s")
PY
tar czf $OUT/results.tgz -C /tmp r
