# Issue #5, session 23, call 6: the nvJPEG streams GPU test, fixed (priorities read while the decoder
# lives); then the landed priority against BATCHSCORE_NVJPEG_STREAM_PRIORITY=default again, end to end
# and in the worker probe, alternating.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py tests/gpu/*.py > /tmp/r/sha1.txt
timeout 120 python3 -m pytest -q -m gpu tests/gpu/test_gpu_nvjpeg_streams.py -p no:cacheprovider > /tmp/r/gpu_test_streams.txt 2>&1; echo "streams test rc=$? $(( $(date +%s)-t0 ))s"; tail -3 /tmp/r/gpu_test_streams.txt
e2e() {  # name, then env assignments
  local name=$1; shift
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
}
for r in 1 2 3 4 5 6; do
  [ $(( $(date +%s)-t0 )) -lt 300 ] && e2e raised_$r X=1
  [ $(( $(date +%s)-t0 )) -lt 320 ] && e2e default_$r BATCHSCORE_NVJPEG_STREAM_PRIORITY=default
done
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
probe() {  # name, then env assignments
  local name=$1; shift
  env "$@" timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err
  echo "probe $name rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$name
}
for r in 1 2; do
  [ $(( $(date +%s)-t0 )) -lt 440 ] && probe raised_$r X=1
  [ $(( $(date +%s)-t0 )) -lt 460 ] && probe default_$r BATCHSCORE_NVJPEG_STREAM_PRIORITY=default
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]; st = e["stages"]
    print(f"{os.path.basename(f)}: alone {b['engine_only']['images_per_s']:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} busy {e['busy_fraction']:.3f} compute {st['compute']['seconds']:.3f} decode {st['decode']['seconds']:.2f} nvjpeg_streams {e.get('nvjpeg_streams')!r} {str(e.get('error', ''))[:200]}")
eng = json.load(open("/tmp/r/e2e_raised_1.json"))["engine_only"]["images_per_s"]
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
    except Exception as exc:
        print(f, "unreadable", exc); continue
    s = d["steady_images_per_s"]; g = d["gpu_gaps"]; c = d["idle_causes"]
    print(f"{os.path.basename(f)[6:-5]:>10} steady {s:6d} ratio {s/eng:.3f} busy {d.get('busy_fraction')} ms/b {d['compute_ms_per_batch']} gaps {g['total_ms']}ms/{g['over_1ms']} behind {c['decoders_behind_ms']} caller {c['calling_thread_ms']}")
    print("            decode calls", d["waits"]["decode_call_ms"])
PY
tar czf $OUT/results.tgz -C /tmp r
