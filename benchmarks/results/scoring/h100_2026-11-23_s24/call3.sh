# Issue #5, session 24, call 3: the start of a run. In call 2 the first 0.25 s after the first
# finished batch ran at 18,900-19,900 images/s and the rest at 27,400-29,400: the decoders' first
# calls take 40-77 ms against 15 at the median later (call 1's probe). Trials (trial_patch.py, on
# the device's copy only): TRIAL_WARMUP=1, each decoder thread decodes its first batch twice, the
# first time only to warm up; TRIAL_SLOTS=8, the deeper ring of call 2. Alternating end to end,
# then the worker probe with and without the warm-up (its first decoder calls).
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
python3 benchmarks/results/scoring/h100_2026-11-23_s24/trial_patch.py > /tmp/r/trial_patch.txt 2>&1 || { cat /tmp/r/trial_patch.txt; exit 1; }
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py > /tmp/r/sha1.txt
e2e() {  # name, then env assignments
  local name=$1; shift
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
for r in 1 2 3 4; do
  [ $(( $(date +%s)-t0 )) -lt 360 ] && e2e main_$r TRIAL_SLOTS=4
  [ $(( $(date +%s)-t0 )) -lt 380 ] && e2e warm_$r TRIAL_SLOTS=4 TRIAL_WARMUP=1
  [ $(( $(date +%s)-t0 )) -lt 400 ] && e2e slots8_$r TRIAL_SLOTS=8
  [ $(( $(date +%s)-t0 )) -lt 420 ] && e2e slots8warm_$r TRIAL_SLOTS=8 TRIAL_WARMUP=1
done
PLAN=/tmp/e/plan/resnet50.fp16.b256.plan
probe() {  # name, then env assignments
  local name=$1; shift
  env "$@" timeout 60 python3 benchmarks/device/worker_phase_probe.py $PLAN /tmp/e/data /tmp/wp_$name > /tmp/r/probe_$name.json 2> /tmp/r/probe_$name.err
  echo "probe $name rc=$? $(( $(date +%s)-t0 ))s"; rm -rf /tmp/wp_$name
}
[ $(( $(date +%s)-t0 )) -lt 500 ] && probe main TRIAL_SLOTS=4
[ $(( $(date +%s)-t0 )) -lt 515 ] && probe warm TRIAL_SLOTS=4 TRIAL_WARMUP=1
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]; st = e["stages"]; alone = b["engine_only"]["images_per_s"]
    try:
        rep = json.load(open(f.replace("/e2e_", "/report_")))
        (series,) = rep["series"]["workers"].values()
        pts = [(t, n) for t, n in series if n > 0]
        (ta, na), (tb, nb) = pts[1], pts[-2]
        mid = f"{(nb - na) / (tb - ta) / alone:.3f}"
        first = f"{(pts[1][1] - pts[0][1]) / (pts[1][0] - pts[0][0]):.0f}"
        startup = f"{rep['workers'][0]['startup_s']:.2f}"
    except Exception as exc:
        mid = first = startup = f"n/a ({exc})"
    print(f"{os.path.basename(f)}: alone {alone:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} mid {mid} first_interval/s {first} startup_s {startup} busy {e['busy_fraction']:.3f} compute {st['compute']['seconds']:.3f} decode {st['decode']['seconds']:.2f} {str(e.get('error', ''))[:200]}")
for f in sorted(glob.glob("/tmp/r/probe_*.json")):
    try:
        d = json.load(open(f))
    except Exception as exc:
        print(f, "unreadable", exc); continue
    c = d["idle_causes"]
    print(f"{os.path.basename(f)[6:-5]:>10} steady {d['steady_images_per_s']} busy {d.get('busy_fraction')} behind {c['decoders_behind_ms']} caller {c['calling_thread_ms']} ticks {d['ticks']}")
    print("            first decode calls", d["first_decode_calls_ms"], "all", d["waits"]["decode_call_ms"])
PY
tar czf $OUT/results.tgz -C /tmp r
