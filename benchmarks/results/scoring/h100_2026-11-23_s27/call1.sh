# Issue #5, session 27, call 1: which threads hold the worker's GIL, and where. py-spy samples the
# end-to-end benchmark's processes (--subprocesses), only the thread holding the GIL (--gil), without
# pausing them (--nonblocking); a second run samples every thread that is not idle. A plain run
# first makes the data and plan, and one after the sampled runs shows what sampling cost.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,serial --format=csv,noheader > /tmp/r/device.txt
grep -m1 "model name" /proc/cpuinfo >> /tmp/r/device.txt; cat /proc/loadavg >> /tmp/r/device.txt
python3 --version >> /tmp/r/device.txt; py-spy --version >> /tmp/r/device.txt 2>&1
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py > /tmp/r/sha1.txt
steal() { awk '/^cpu /{print "user",$2,"system",$4,"idle",$5,"steal",$9}' /proc/stat; }
e2e() {  # name, then the command's prefix (py-spy's)
  local name=$1; shift
  echo "before $(steal)" > /tmp/r/steal_$name.txt
  "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  echo "after $(steal)" >> /tmp/r/steal_$name.txt
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
e2e plain_1 env
e2e gil_1 py-spy record --gil --subprocesses --nonblocking --threads --rate 500 --format raw -o /tmp/r/pyspy_gil_1.txt --
e2e active_1 py-spy record --subprocesses --nonblocking --threads --rate 500 --format raw -o /tmp/r/pyspy_active_1.txt --
e2e plain_2 env
[ $(( $(date +%s)-t0 )) -lt 330 ] && e2e gil_2 py-spy record --gil --subprocesses --nonblocking --threads --rate 500 --format raw -o /tmp/r/pyspy_gil_2.txt --
python3 benchmarks/device/e2e_summary.py /tmp/r | tee /tmp/r/summary.txt
tar czf $OUT/results.tgz -C /tmp r
