# Issue #5, session 21, call 3: the tiled resize kernel, second version (byte permutes, funnel shifts, blocks of
# 32 rows in two passes of 16) against main's (437df85), alternating:
# the kernel alone and beside the model (resize_load_probe), ncu's counts, end to end; then the GPU tests.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
# main's kernel: a copy of the tree with 437df85's resize_tiles.py
rm -rf /tmp/old; mkdir -p /tmp/old; cp -r benchmarks scoring engine kernels /tmp/old/ 2>/dev/null; cp -r $(ls -d */ | grep -v -e scratch -e tests) /tmp/old/ 2>/dev/null
cp .scratch/s21/resize_tiles_old.py /tmp/old/scoring/resize_tiles.py
echo "old has load12: $(grep -c load12 /tmp/old/scoring/resize_tiles.py), new: $(grep -c load12 scoring/resize_tiles.py)"
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_new_1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_new_1.json
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
for r in 1; do
  (cd /tmp/old && PYTHONPATH=/tmp/site:/tmp/old timeout 60 python3 benchmarks/device/resize_load_probe.py $PLAN --rates 26000,max --seconds 2 > /tmp/r/resize_old_$r.jsonl 2> /tmp/r/resize_old_$r.err); echo "resize old rc=$? $(( $(date +%s)-t0 ))s"
done
for r in 1 2; do
  timeout 60 python3 benchmarks/device/resize_load_probe.py $PLAN --rates 26000,max --seconds 2 > /tmp/r/resize_new_$r.jsonl 2> /tmp/r/resize_new_$r.err; echo "resize new rc=$? $(( $(date +%s)-t0 ))s"
done
cat /tmp/r/resize_*.jsonl
timeout 90 ncu --clock-control none --kernel-name regex:preprocess_tiled --launch-skip 3 --launch-count 1 \
  --section SourceCounters --section InstructionStats --section ComputeWorkloadAnalysis --section LaunchStats \
  --section Occupancy --section SpeedOfLight --section WarpStateStats -o /tmp/r/tiled_new -f \
  python3 benchmarks/device/resize_load_probe.py $PLAN --rates max --seconds 0.2 > /tmp/r/ncu_run.log 2>&1; echo "ncu rc=$? $(( $(date +%s)-t0 ))s"
ncu -i /tmp/r/tiled_new.ncu-rep --page details > /tmp/r/tiled_new_details.txt 2>&1
ncu -i /tmp/r/tiled_new.ncu-rep --page source --csv --print-source sass 2>&1 | gzip > /tmp/r/tiled_new_sass.csv.gz
grep -E "Duration|Executed Instructions  |Registers Per|Theoretical Occ|Achieved Occ|Static Shared" /tmp/r/tiled_new_details.txt
e2e() {  # name, dir
  (cd $2 && PYTHONPATH=/tmp/site:$(pwd) python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$1.log 2>&1; cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$1.json); echo "e2e $1 rc=$? $(( $(date +%s)-t0 ))s"
}
for r in 1 2 3; do
  [ $(( $(date +%s)-t0 )) -lt 340 ] && e2e old_$r /tmp/old
  [ $(( $(date +%s)-t0 )) -lt 360 ] && e2e new_$((r+1)) .
done
timeout 150 python3 -m pytest -q -m gpu tests/scoring tests/gpu/test_gpu_scoring.py tests/test_worker_phase_probe.py tests/test_resize_load_probe.py -n 4 -p no:cacheprovider > /tmp/r/gpu_tests.txt 2>&1; echo "tests rc=$? $(( $(date +%s)-t0 ))s"; tail -3 /tmp/r/gpu_tests.txt
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    st = e.get("stages", {})
    print(f"{os.path.basename(f)}: engine alone {b['engine_only']['images_per_s']:.0f}  steady {e.get('steady_images_per_s')} ratio {b.get('ratio_steady_over_engine')} busy {e.get('busy_fraction')} input_s {st.get('input', {}).get('seconds')} compute_s {st.get('compute', {}).get('seconds')} decode_s {st.get('decode', {}).get('seconds')} {str(e.get('error', ''))[:300]}")
PY
tar czf $OUT/results.tgz -C /tmp r
