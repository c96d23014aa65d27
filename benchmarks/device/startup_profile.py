"""Where a worker's start-up goes: load the plan, make the GpuRunner, make a GPU decoder (profiled).

    python3 benchmarks/device/startup_profile.py PLAN     (on the GPU machine; prints, writes nothing)

Prints one line of seconds per step, then cProfile's 30 most expensive calls by cumulative time.
Its output on an H100 on 2026-11-22, before and after kernels.cuda.import_cudnn kept the cuDNN
frontend from importing torch, is in benchmarks/results/gpu/startup_profile_h100_2026-11-22_*.txt
(PLAN: ResNet-50 FP16, max batch 256). Text, not JSON: the profile is the evidence.
"""
import cProfile, pstats, sys, time
t0 = time.perf_counter()
import cupy as cp
cp.cuda.runtime.getDeviceCount(); cp.zeros(1)
t1 = time.perf_counter()
import engine as engine_api
from scoring.decode import Preprocess
from scoring.gpu_runner import GpuRunner
t2 = time.perf_counter()
prof = cProfile.Profile(); prof.enable()
a = time.perf_counter(); eng = engine_api.load(sys.argv[1]); b = time.perf_counter()
runner = GpuRunner(eng, 256, Preprocess()); c = time.perf_counter()
try:
    from scoring.gpu_decode import GpuDecoder
    dec = GpuDecoder(Preprocess(), 4)
except Exception as e:
    print("decoder:", type(e).__name__, e)
d = time.perf_counter()
prof.disable()
print(f"cuda init {t1-t0:.2f}s imports {t2-t1:.2f}s plan load {b-a:.2f}s GpuRunner {c-b:.2f}s decoder {d-c:.2f}s")
pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
