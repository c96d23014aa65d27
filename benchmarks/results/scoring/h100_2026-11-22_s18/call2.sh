# Issue #5, session 18, call 2: the tiled kernel, second version (2-D grid, tap-major column weights,
# warp-per-row loops), against the per-pixel one; the A/B end to end only if it is faster alone.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
timeout 150 python3 -m pytest -q -m gpu tests/scoring/test_gpu_decode.py -p no:cacheprovider > /tmp/r/gpu_decode_tests.txt 2>&1; echo "decode tests rc=$? $(( $(date +%s)-t0 ))s"; tail -2 /tmp/r/gpu_decode_tests.txt
python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_tiled1.log 2>&1; echo "e2e rc=$? $(( $(date +%s)-t0 ))s"
cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_tiled1.json
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
for k in tiled pixel; do
  timeout 60 python3 benchmarks/device/resize_load_probe.py $PLAN --kernel $k --rates 26000,max --seconds 2 > /tmp/r/resize_$k.jsonl 2> /tmp/r/resize_$k.err
  echo "resize $k rc=$? $(( $(date +%s)-t0 ))s"; cat /tmp/r/resize_$k.jsonl
done
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
if [ -n "$NCU" ]; then
  timeout 90 $NCU --clock-control none --kernel-name regex:batchscore_preprocess_tiled --launch-skip 3 --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section InstructionStats \
    python3 benchmarks/device/resize_load_probe.py $PLAN --kernel tiled --rates 13000 --seconds 0.3 > /tmp/r/ncu_tiled.txt 2>&1
  echo "ncu rc=$? $(( $(date +%s)-t0 ))s"
fi
fast=$(python3 -c "import json; print(int(json.loads(open('/tmp/r/resize_tiled.jsonl').readline())['kernel_alone_ms_per_batch'] < 0.3))")
if [ "$fast" = 1 ]; then
probe() {  # name, then probe options
  local name=$1; shift
  timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name "$@" > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err
  echo "$name rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$name
}
for r in 1 2 3; do BATCHSCORE_RESIZE_TILES=0 probe pixel$r; probe tiled$r; done
for r in 1 2; do
  BATCHSCORE_RESIZE_TILES=0 python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_pixel$r.log 2>&1; echo "e2e pixel$r rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_pixel$r.json
  python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_tiled$((r+1)).log 2>&1; echo "e2e tiled$((r+1)) rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_tiled$((r+1)).json
  [ $(( $(date +%s)-t0 )) -gt 480 ] && break
done
fi
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]
    print(f"{os.path.basename(f)}: engine alone {b['engine_only']['images_per_s']:.0f}  steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f}")
eng = json.load(open("/tmp/r/e2e_tiled1.json"))["engine_only"]["images_per_s"]
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
    except Exception as exc:
        print(f, "unreadable", exc); continue
    s = d["steady_images_per_s"]; g = d["gpu_gaps"]
    print(f"{os.path.basename(f)[6:-5]:>7} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} ms/b {d['compute_ms_per_batch']} gaps {g['total_ms']}ms late {d['late_launches']}")
PY
grep -E "Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Compute \(SM\) Throughput|Memory Throughput|Executed Instructions  |Block Limit|Shared Memory Configuration|Dynamic Shared|Static Shared" /tmp/r/ncu_tiled.txt 2>/dev/null | head -20
tar czf $OUT/results.tgz -C /tmp r
