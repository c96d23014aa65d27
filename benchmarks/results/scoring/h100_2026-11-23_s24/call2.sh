# Issue #5, session 24, call 2: a deeper ring (trial). In call 1's probe the decoders waited 1.7 s a
# run for a free slot, yet the engine idled 95 ms with all three decoders inside nvJPEG calls: the
# calls come in bursts (p50 15 ms, p90 37 ms). More slots let the decoders run further ahead between
# bursts. GPU_DECODE_SLOTS (4: 6 slots with 3 decoders) is read from $TRIAL_SLOTS in this call only
# (a sed on the device's copy), alternating 4, 8 and 12 end to end. The summary adds each run's rate
# between its second and next-to-last throughput samples (0.25 s apart), a steady rate less
# sensitive to how full the ring was when the first batch finished.
set -u
source .scratch/env.sh
[ -d .scratch/cache ] && cp -r .scratch/cache /tmp/bscache
rm -rf /tmp/r; mkdir -p /tmp/r
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/device.txt
sed -i 's/^GPU_DECODE_SLOTS = 4 /GPU_DECODE_SLOTS = int(os.environ.get("TRIAL_SLOTS", "4")) /' scoring/worker.py
grep -n "^GPU_DECODE_SLOTS" scoring/worker.py > /tmp/r/trial_line.txt
sha1sum scoring/*.py engine/gpu_runtime.py benchmarks/scoring_gpu_e2e.py > /tmp/r/sha1.txt
e2e() {  # name, then env assignments
  local name=$1; shift
  env "$@" python3 benchmarks/scoring_gpu_e2e.py /tmp/e --rows 100000 --cpu-rows 0 > /tmp/r/e2e_$name.log 2>&1; echo "e2e $name rc=$? $(( $(date +%s)-t0 ))s"
  cp /tmp/e/scoring_gpu_e2e.json /tmp/r/e2e_$name.json
  cp /tmp/e/runs/decode-gpu/report.json /tmp/r/report_$name.json 2>/dev/null
}
for r in 1 2 3 4; do
  [ $(( $(date +%s)-t0 )) -lt 380 ] && e2e slots4_$r TRIAL_SLOTS=4
  [ $(( $(date +%s)-t0 )) -lt 400 ] && e2e slots8_$r TRIAL_SLOTS=8
  [ $(( $(date +%s)-t0 )) -lt 420 ] && e2e slots12_$r TRIAL_SLOTS=12
done
python3 - <<'PY' | tee /tmp/r/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/r/e2e_*.json")):
    b = json.load(open(f)); e = b["end_to_end"]; st = e["stages"]
    mid = None
    try:
        rep = json.load(open(f.replace("/e2e_", "/report_")))
        (series,) = rep["series"]["workers"].values()
        pts = [(t, n) for t, n in series if n > 0]
        (ta, na), (tb, nb) = pts[1], pts[-2]
        mid = (nb - na) / (tb - ta) / b["engine_only"]["images_per_s"]
    except Exception as exc:
        mid = f"n/a ({exc})"
    print(f"{os.path.basename(f)}: alone {b['engine_only']['images_per_s']:.0f} steady {e['steady_images_per_s']:.0f} ratio {b['ratio_steady_over_engine']:.3f} mid {mid if isinstance(mid, str) else round(mid, 3)} busy {e['busy_fraction']:.3f} compute {st['compute']['seconds']:.3f} decode {st['decode']['seconds']:.2f} {str(e.get('error', ''))[:200]}")
PY
tar czf $OUT/results.tgz -C /tmp r
