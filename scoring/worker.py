"""One worker's loop over its shards: load the plan once, then per shard read -> decode -> run the
engine -> write a part file -> record it in the manifest, with the shards overlapping: the
background thread reads and decodes the next shard while this one's last batches are computed.

    metrics = score_shards(job, "model.plan", shards, worker_id=0)

`shards` may be any iterable, a list or a generator that asks a launcher for the next shard, so the
same loop serves the local launcher's dynamic queue, an MPI rank's requests and a Ray actor. A
shard already in the manifest is skipped, so a rerun of a killed job does only what is left. A
shard's part file appears (atomically) only when every one of its rows is written, and only then is
the shard recorded; a worker killed mid-shard leaves nothing of that shard behind.

On a GPU ("cuda" devices) the runner is scoring.gpu_runner.GpuRunner and, with [run] decode =
"gpu" (or "auto" where nvImageCodec is installed), images are decoded on the GPU straight into
device ring slots; NVML samples the GPU's power for the report.

Undecodable rows become error rows with null predictions; with [run] fail_fast the first one
stops the worker with a `BadRowError` (scoring.shard_writer) naming the row, its shard and file.
Rows go into part files through scoring.shard_writer.ShardWriter, on a thread of its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections import deque
from typing import Callable, Iterable


import engine as engine_api
from scoring import nvjpeg_streams
from scoring.dataset import ImageDataset, Shard, open_dataset
from scoring.decode import CpuDecoder, available_cores
from scoring.errors import ScoringError
from scoring.gpu_wait import spin_wait
from scoring.irq_cpus import cpus_text, leave_interrupt_cpus
from scoring.job import JobSpec
from scoring.manifest import Manifest
from scoring.pipeline import DEFAULT_SLOTS, Prefetcher
from scoring.report import Metrics, sum_counts
from scoring.runner import CpuRunner
from scoring.shard_writer import ShardWriter
from scoring.slow_cpus import NoWatch, SlowCpus, watch

log = logging.getLogger(__name__)

GPU_DECODE_SLOTS = 4  # device slots per GPU decoder beyond the first: decoding runs up to 3 batches ahead

# A GPU worker's threads (reader, decoders, compute and write) each hold the GIL briefly between
# native calls, and a thread that wants it back waits up to the interpreter's switch interval (5 ms)
# while another runs Python. With 0.5 ms, ResNet-50 FP16 on an H100 scored 24,500, 23,100 and
# 23,100 images/s steady against 24,000, 21,000 and 18,200 with the default, alternating in one
# call (benchmarks/results/scoring/scoring_gpu_e2e_h100_2026-11-22_s5_hw_*.json): mostly less
# spread, not more speed; later runs with this setting gave 17,700-22,500 (*_s5_final_*.json).
GPU_WORKER_SWITCH_INTERVAL_S = 0.0005


# The order batches reach the engine in (scoring.pipeline.Prefetcher): as they are decoded, so a
# slow decode call does not hold up the batches decoded behind it. In read order, on an H100 with
# three GPU decoders, nearly every wait of this loop for the next batch ended with 1-5 later batches
# decoded already (a decode call of 256 images took 17.5-19.3 ms at the median, 53-83 ms at the
# 99th percentile: benchmarks/results/scoring/h100_2026-11-22_s16_ablation/NOTES.md). Decode order
# then scored 0.800-0.826 of the engine alone against 0.798-0.828, alternating: no measurable gain
# there (benchmarks/results/scoring/h100_2026-11-22_s17/NOTES.md). The writer puts rows back in
# read order. "read" is there for comparison (benchmarks/device/worker_phase_probe.py --order).
BATCH_ORDER = "decoded"

# Three decoders: ResNet-50 FP16 on an H100 scored 25,306, 26,408 and 26,088 images/s steady with
# three against 24,717-25,927 with two in the same calls, 25,859 with four (2026-11-22, session 8:
# benchmarks/results/scoring/scoring_gpu_e2e_h100_2026-11-22_s8_{base,d3a,p2b,p3a,p3b,p4}.json;
# the p* runs staged the JPEG bytes in pinned memory, a trial that changed nothing and was dropped).
# On 4 x H200 a single GPU went from 30,121 to 30,858-31,450, while 4 GPUs did not gain
# (benchmarks/results/scaling/h200x4_2026-11-22_s8/NOTES.md).
DEFAULT_GPU_DECODERS = 3


def gpu_decoders(job: JobSpec) -> int:
    """GPU decoders per worker: [run] gpu_decoders; "auto" is $BATCHSCORE_GPU_DECODERS where set
    (for tuning on a new machine without editing the job), else DEFAULT_GPU_DECODERS."""
    if job.run.gpu_decoders != "auto":
        return int(job.run.gpu_decoders)
    value = os.environ.get("BATCHSCORE_GPU_DECODERS", str(DEFAULT_GPU_DECODERS))
    if not value.isdigit() or int(value) < 1:
        raise ScoringError(f"BATCHSCORE_GPU_DECODERS must be a positive integer, got {value!r}")
    return int(value)


def nvimgcodec_backends(job: JobSpec) -> str:
    """The GPU decoders' nvImageCodec backend preset (scoring.gpu_decode.backend_preset): [run]
    gpu_decode_backends; "auto" is $BATCHSCORE_NVIMGCODEC_BACKENDS where set, else "all"."""
    if job.run.gpu_decode_backends != "auto":
        return job.run.gpu_decode_backends
    return os.environ.get("BATCHSCORE_NVIMGCODEC_BACKENDS", "all")


def jpeg_hardware(job: JobSpec) -> bool | None:
    """[run] jpeg_hardware for GpuDecoder: False for "off"; None for "auto" (the hardware decoder
    where the GPU has one, unless $BATCHSCORE_NVJPEG_HARDWARE=0)."""
    return False if job.run.jpeg_hardware == "off" else None


def avoid_slow_cpus(job: JobSpec, on_gpu: bool) -> bool:
    """[run] avoid_slow_cpus (scoring.slow_cpus); "auto" is $BATCHSCORE_AVOID_SLOW_CPUS (1 or 0)
    where set, else on for a GPU worker only (measured there; the CPU backend's BLAS threads want
    every core)."""
    if job.run.avoid_slow_cpus != "auto":
        return job.run.avoid_slow_cpus == "on"
    value = os.environ.get("BATCHSCORE_AVOID_SLOW_CPUS", "").strip()
    if value not in ("", "0", "1"):
        raise ScoringError(f"BATCHSCORE_AVOID_SLOW_CPUS must be 1 or 0, got {value!r}")
    return on_gpu if value == "" else value == "1"


@contextlib.contextmanager
def gil_switch_interval(seconds: float):
    """The interpreter's thread switch interval set to `seconds` for the block, then restored."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def ring_slots(decode: str, decoders: int) -> int:
    """Ring slots for `decoders` decoders: on the GPU, GPU_DECODE_SLOTS beyond the first decoder's."""
    return decoders + GPU_DECODE_SLOTS - 1 if decode == "gpu" else DEFAULT_SLOTS


def open_job_dataset(job: JobSpec) -> ImageDataset:
    return open_dataset(job.data.source, image_column=job.data.image_column, id_column=job.data.id_column)


def resolve_decode_threads(job: JobSpec, workers_on_host: int = 1) -> int:
    """[run] decode_threads, with "auto" = this host's cores shared among its workers."""
    if job.run.decode_threads != "auto":
        return int(job.run.decode_threads)
    return max(1, available_cores() // max(1, workers_on_host))


def resolve_decode(job: JobSpec, on_gpu: bool) -> str:
    """[run] decode, with "auto" = the GPU decoder when this worker has a GPU and nvImageCodec."""
    wanted = job.run.decode
    if wanted == "cpu" or (wanted == "auto" and not on_gpu):
        return "cpu"
    from scoring.gpu_decode import gpu_decode_unavailable

    why = gpu_decode_unavailable() if on_gpu else "this worker runs on the CPU"
    if why is None:
        return "gpu"
    if wanted == "gpu":
        raise ScoringError(f"[run] decode = \"gpu\", but {why}; set decode = \"cpu\" or \"auto\"")
    log.info("decoding on the CPU: %s", why)
    return "cpu"


def score_shards(job: JobSpec, plan_path, shards: Iterable[Shard], worker_id: int | str = 0, *,
                 dataset: ImageDataset | None = None, device: str = "cpu", decode_threads: int | None = None,
                 on_batch: Callable[[int, int], None] | None = None,
                 on_shard: Callable[[str, Shard, dict], None] | None = None) -> Metrics:
    """Score every shard of `shards` not yet in the job's manifest; return this worker's Metrics.

    `shards` is iterated on the background read/decode thread, which goes on into the next shard
    while the last batches of the current one are computed and written. on_batch(rows, errors) is
    called after each batch is written (progress); on_shard(event, shard, info) with event "start"
    when a shard's first batch reaches this thread and "done" (info: rows, errors) once the shard
    is recorded in the manifest. Both are called on the calling thread."""
    metrics = Metrics(worker=worker_id, device=device, host=socket.gethostname())
    start = time.perf_counter()
    on_gpu = device.startswith("cuda")
    if on_gpu:  # a Ray actor or a library caller may not have come through the CLI
        from kernels.cuda import prefer_more_hardware_queues

        prefer_more_hardware_queues()
    decode = resolve_decode(job, on_gpu)
    threads = decode_threads if decode_threads is not None else resolve_decode_threads(job)
    if on_gpu and job.run.pin_cpus:  # after counting threads (the host's share), before the decoders
        from scoring.affinity import pin_to_gpu  # start: their threads and processes inherit it

        pin_to_gpu()
    # after pinning: the CPUs it leaves are among those the process may use
    slow_cpus = SlowCpus.for_this_process() if avoid_slow_cpus(job, on_gpu) else None
    spin = on_gpu and spin_wait(job.run.gpu_wait)  # how the runner and GPU decoders wait (scoring.gpu_wait)
    with contextlib.ExitStack() as cleanup:
        if on_gpu:
            cleanup.enter_context(gil_switch_interval(GPU_WORKER_SWITCH_INTERVAL_S))
        # Decode processes start first: they import and set up their decoders while the plan loads.
        decoders = _process_decoders(job, decode, threads, on_gpu, spin)
        for decoder in decoders:
            cleanup.enter_context(decoder)
        eng = engine_api.load(plan_path)
        if on_gpu:
            from scoring.gpu_runner import GpuRunner

            runner = GpuRunner(eng, job.run.batch, job.preprocess, spin_wait=spin)
        else:
            runner = CpuRunner(eng, job.run.batch, job.preprocess)
        spec = job.output_spec(runner.num_classes)
        metrics.add_stage("load", time.perf_counter() - start)
        if dataset is None:
            dataset = open_job_dataset(job)
        if decoders:
            ring = _shared_ring(job, runner, decode, decoders, cleanup)
        else:
            decoders, ring = _thread_decoders(job, decode, threads, runner)
            for decoder in decoders:
                cleanup.enter_context(decoder)
        if on_gpu and slow_cpus is not None:  # the engine has run: the driver's interrupts have a CPU
            left = leave_interrupt_cpus()
            if left:
                metrics.interrupt_cpus = cpus_text(left)
                slow_cpus.leave(left)
        return _score(job, runner, spec, dataset, shards, decoders, ring, metrics, on_gpu, worker_id,
                      on_batch, on_shard, slow_cpus)


def resolve_decode_processes(job: JobSpec, decode: str, on_gpu: bool, threads: int) -> int:
    """[run] decode_processes, with "auto" = Pillow in one process per decode thread when the
    model runs on a GPU (on an H100, 204 images/s per core against 111 with threads, which share
    one GIL), and in threads otherwise (there the model needs the cores). GPU decoders stay in
    the worker's threads: in processes of their own (separate CUDA contexts, which the GPU
    time-slices instead of running side by side) an H100 scored 11,900 images/s end to end,
    against 13,500 with the decoders in threads."""
    wanted = job.run.decode_processes
    if wanted == "auto":
        return threads if decode == "cpu" and on_gpu and threads > 1 else 0
    return int(wanted)


def _process_decoders(job: JobSpec, decode: str, threads: int, on_gpu: bool, spin: bool) -> list:
    processes = resolve_decode_processes(job, decode, on_gpu, threads)
    if not processes:
        return []
    from scoring.decode_processes import DecoderRecipe, ProcessDecoder

    if decode == "gpu":
        import cupy

        recipe = DecoderRecipe("gpu", job.preprocess, max(1, threads // processes), nvimgcodec_backends(job),
                               cupy.cuda.Device().id, jpeg_hardware(job), spin)
        return [ProcessDecoder(recipe, 1, name=f"GPU decode process {k}") for k in range(processes)]
    recipe = DecoderRecipe("cpu", job.preprocess, max(1, threads // processes))
    return [ProcessDecoder(recipe, processes, name="CPU decode process")]


def _shared_ring(job: JobSpec, runner, decode: str, decoders: list, cleanup: contextlib.ExitStack):
    """The ring for decoders in child processes: its buffers are shared with them, and they are
    told where. The children exit before the buffers are freed."""
    from scoring.decode_processes import SharedBuffers

    shared = SharedBuffers.on_device() if decode == "gpu" else SharedBuffers.on_host()

    def close_all():
        for decoder in decoders:
            decoder.close()
        shared.close()

    cleanup.callback(close_all)
    # The children were made before the plan loaded: their rows are in the job's layout.
    ring = runner.make_ring(ring_slots(decode, len(decoders)), allocate=shared.allocate, layout=job.preprocess.layout)
    for decoder in decoders:
        decoder.attach(shared)
    return ring


def _thread_decoders(job: JobSpec, decode: str, threads: int, runner) -> tuple[list, object]:
    if decode == "gpu":
        from scoring.gpu_decode import GpuDecoder

        # Several decoders, each on its own stream with its share of the CPU threads: one batch's
        # host-side work (Huffman decoding, Python) overlaps another's GPU work.
        count, backends = gpu_decoders(job), nvimgcodec_backends(job)
        decoders = [GpuDecoder(runner.ring_preprocess, max(1, threads // count), nvimgcodec_backends=backends,
                               jpeg_hardware=jpeg_hardware(job), spin_wait=runner.spin_wait)
                    for _ in range(count)]
        return decoders, runner.make_ring(ring_slots(decode, count), on_device=True)
    # The decoders write rows in the ring's layout (the plan input's, on a GPU: see GpuRunner).
    return [CpuDecoder(runner.ring_preprocess, threads)], runner.make_ring(ring_slots(decode, 1))


def _score(job: JobSpec, runner, spec, dataset, shards, decoders, ring, metrics: Metrics, on_gpu: bool,
           worker_id, on_batch, on_shard, slow_cpus: SlowCpus | None = None) -> Metrics:
    manifest = Manifest(job.output.dir)
    done = manifest.done()

    def todo():
        for shard in shards:
            if shard.key in done:
                log.info("worker %s: %s already in the manifest, skipped", worker_id, shard.key)
                continue
            yield shard

    sampler = _power_sampler(on_gpu, metrics)
    writer = ShardWriter(job, spec, manifest, metrics, on_batch, on_shard)
    main_cpu_at_start = time.thread_time()
    # This thread's CPU per row measures its CPU only while its waits for the GPU sleep.
    main_watch = NoWatch() if runner.spin_wait else watch(slow_cpus, "main")
    try:
        with Prefetcher(dataset, todo(), decoders, ring, job.run.batch, slow_cpus=slow_cpus,
                        order=BATCH_ORDER) as batches:
            pending: deque = deque()
            slots = iter(batches)
            while True:
                # While the next batch is not there, write the batches whose scores are and record
                # the shards whose part files are in place: a launcher may hand out the next shard
                # only once this one is recorded (Ray), and a batch that arrives meanwhile is
                # submitted at once, not after the writing.
                while (pending or writer.tasks) and not batches.has_next(timeout=0.002):
                    if pending and _ready(pending[0][1]):
                        writer.finish(*pending.popleft())
                    writer.reap()
                slot = next(slots, None)
                if slot is None:
                    break
                failed = sum(e is not None for e in slot.errors)
                handle = runner.submit(slot) if failed < slot.rows else None
                pending.append((writer.begin(slot), handle))
                batches.release(slot)  # submit has consumed the buffer: it may be refilled now
                main_watch.note(slot.rows)
                while len(pending) > runner.lag:
                    writer.finish(*pending.popleft())
            while pending:
                writer.finish(*pending.popleft())
            writer.close()
            for name, seconds in batches.stages.items():
                metrics.add_stage(name, seconds)
        # after the with: the background threads have ended and noted their CPU time
        metrics.thread_cpu_s = {"main": time.thread_time() - main_cpu_at_start, **batches.thread_cpu_s,
                                "parts": writer.cpu_s}
    except BaseException:
        writer.abort()
        raise
    finally:
        runner.close()
        sampler.stop()
        sampler.record_into(metrics)
        manifest.close()  # the launcher folds the journal into manifest.json once every worker has ended
    for name, seconds in runner.stages.items():
        metrics.add_stage(name, seconds)
    metrics.thread_cpu_s.update(getattr(runner, "thread_cpu_s", {}))  # the CPU runner's engine thread
    metrics.slow_cpus = slow_cpus.report() if slow_cpus is not None else []
    metrics.busy_fraction = runner.busy_fraction
    metrics.slot_input = getattr(runner, "slot_input", None)
    # GPU decoders in this process count their rows per decode path
    metrics.decoded_by = sum_counts(getattr(decoder, "decoded_by", {}) for decoder in decoders) or {}
    if metrics.decoded_by.get("hardware"):  # this process's hardware decoders: their nvJPEG streams
        metrics.nvjpeg_streams = nvjpeg_streams.state()
    metrics.finish()
    return metrics


def _ready(handle) -> bool:
    """Whether a submitted batch's scores are there (None: a batch with no scored row)."""
    return handle is None or handle.done()


def _power_sampler(on_gpu: bool, metrics: Metrics):
    from scoring.report import PowerSampler, nvml_power_sampler

    if not on_gpu:
        return PowerSampler(t0=metrics.started_at)
    return nvml_power_sampler(0, t0=metrics.started_at).start()
