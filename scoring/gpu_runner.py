"""The engine step on a GPU: copies, compute and the host's bookkeeping all overlap.

    runner = GpuRunner(engine, batch=256, preprocess=preprocess)
    ring = runner.make_ring(slots=4, on_device=True)    # device slots: the GPU decoder fills them
    pending = runner.submit(slot)                       # returns once the slot's buffer is consumed
    ...                                                 # (the caller submits the next batch here)
    scores = pending.result()                           # (rows, classes), the plan output's type

Per batch i, on the GPU:

    copy stream:     H2D slot i -> device input i % 2            (host slots only; pinned memory)
    compute stream:  wait for that copy, copy into the plan's input binding, replay the plan's CUDA
                     graph, copy the scores into pinned host buffer i % 2

A device slot (GPU decode) is not copied: the engine reads it in place. For each slot `make_ring`
has the engine capture the layers that read the input bound to that slot (the head, ResNet-50's
first conv) as a graph of their own, and the rest of the pass (the tail) as one graph all slots
share (engine.gpu_runtime: prepare_input). A batch is its slot's head graph, an event that frees
the slot, then the tail graph. That saves a 77 MB device-to-device copy a batch. For ResNet-50 FP16
at 256 on an H100, the copy took 0.10-0.13 ms and the graphs then ran 0.03 ms longer: 0-1% of a
batch's GPU time, and the split into two graphs cost nothing measurable
(benchmarks/results/scoring/h100_2026-11-23_s22/NOTES.md). $BATCHSCORE_SLOT_INPUT=0 copies every
slot into the binding as before (for A/B runs), and so does any slot the engine cannot read in
place (`slot_input` then says why).

The ring holds rows in the plan input's memory layout (`ring_preprocess`): an FP16 plan keeps its
NCHW input channels-last, so the decoders write NHWC rows and the compute stream's copy into the
binding is a straight copy, not a transpose of every batch.

Every batch runs at the full `capacity` (a short one too, the run's last or one whose next shard
was not there in time: its padding rows are left over from an earlier batch, or what the slot
held before where it is read in place, and their scores dropped; no layer mixes rows), so one
CUDA graph serves the whole job. The caller submits batch i+1 before it collects batch i (`lag` =
1): while the GPU computes batch i, the host copies batch i+1 in and writes batch i-1's rows out.
A slot filled by the GPU decoder is already on the device (its stream was synchronized by the
decode thread), so only the compute stream touches it.

The busy fraction comes from events on the compute stream: per batch, the time from its start to
its end, against the gap since the previous batch ended. Within it, the stage "input" is the copy
into the input binding (and any wait for the host to launch the graph after it), "compute" the
graph and the scores' copy out (a slot read in place has no "input" stage). A starved GPU
shows as gaps. The busy fraction is over the run's steady state, the middle of its rows
(scoring.steady_state), which leaves out the start (graph warm-up, the prefetcher filling up)
and the end.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from scoring.decode import Preprocess
from scoring.gpu_wait import wait_event
from scoring.pipeline import DEFAULT_SLOTS, HostRing, Slot
from scoring.runner import PlanBinding
from scoring.steady_state import steady_busy_fraction
from scoring.stream_priority import stream_priority

log = logging.getLogger(__name__)

STEADY_AFTER = 3  # batches left out of the busy fraction at the start


def slot_input_wanted(environ=os.environ) -> bool:
    """Whether the engine reads device slots in place (the default), not from a copy in its input
    binding: $BATCHSCORE_SLOT_INPUT=0 for the copy."""
    return environ.get("BATCHSCORE_SLOT_INPUT", "1").strip().lower() not in ("0", "false", "no", "off")


def ring_preprocess(preprocess: Preprocess, binding) -> Preprocess:
    """The job's preprocessing with its rows in `binding`'s memory layout: NHWC where the job asks
    for NCHW rows and the plan stores that input channels-last (an NCHW-shaped view of NHWC memory)."""
    channels_last = binding.ndim == 4 and binding.shape[1] > 1 and binding.strides[1] == binding.itemsize
    if preprocess.layout == "NCHW" and channels_last:
        return dataclasses.replace(preprocess, layout="NHWC")
    return preprocess


def _dense(array) -> bool:
    """Whether the array's elements fill its memory without gaps, in some order of its axes."""
    expected = array.itemsize
    for size, stride in sorted(zip(array.shape, array.strides), key=lambda axis: axis[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


class GpuPending:
    """One submitted batch: result() waits for its scores and returns a copy in the plan output's
    type. An FP16 plan's stay float16: the part thread ranks them as they are (scoring.top_k), and
    the main loop, which launches the batches, is spared a float32 conversion of each one: 0.42
    ms for 256 x 1000 scores against 0.012 for the copy, on the 2-core dev box with numpy 2.4
    (`python benchmarks/outputs_io.py OUT`, result_step_ms: benchmarks/results/
    outputs_io_cpu_2026-11-23_s25_float16_*.json). On an H100 the main loop's CPU fell from 4.7-6.0
    to 2.6-3.3 us an image (benchmarks/results/scoring/h100_2026-11-23_s26/NOTES.md, call 1)."""

    def __init__(self, runner: "GpuRunner", events: dict, out: np.ndarray, rows: int):
        self.runner, self.events, self.out, self.rows = runner, events, out, rows

    def done(self) -> bool:
        return self.events["end"].done

    def result(self) -> np.ndarray:
        self.events["end"].synchronize()
        self.runner._account(self.events, self.rows)
        scores = self.out[: self.rows].reshape(self.rows, -1)
        return np.array(scores)  # a copy: the pinned buffer is reused two batches on


class GpuRunner(PlanBinding):
    lag = 1

    def __init__(self, engine, batch: int, preprocess: Preprocess, spin_wait: bool = False):
        import cupy as cp
        import cupyx

        super().__init__(engine, batch, preprocess)
        self.cp = cp
        self.spin_wait = spin_wait  # how submit() and result() wait for the GPU (scoring.gpu_wait)
        # The engine's stream at stream_priority("engine"): the least by default, below the decoders'.
        self.context = engine.create_context(cp.cuda.Stream(non_blocking=True, priority=stream_priority("engine")))
        self.stream = self.context.stream
        self.copy_stream = cp.cuda.Stream(non_blocking=True)
        self.bucket = self.context.bucket(self.capacity)
        self.input_binding = self.bucket.bound[self.input.name]
        self.preprocess = preprocess
        self.ring_preprocess = ring_preprocess(preprocess, self.input_binding)
        self.ring_layout = self.ring_preprocess.layout  # what make_ring's slots hold
        output = self.bucket.bound[self.output.name]
        depth = self.lag + 1
        self.device_inputs: list | None = None  # H2D targets, made for the first host slot only
        self.consumed = [None] * depth  # event: compute has copied device input k into the binding
        self.outputs = [cupyx.empty_pinned(output.shape, dtype=output.dtype) for _ in range(depth)]
        self.submitted = 0
        self.slot_input: str | None = None  # "in place", or why device slots are copied
        self.stages: dict[str, float] = {"h2d": 0.0, "input": 0.0, "compute": 0.0}
        self._previous_end = None
        # after each batch: (rows done, busy ms, idle ms) so far, for the steady state's busy share
        self._timeline: list[tuple[int, float, float]] = []
        self._warm_up()

    @property
    def busy_fraction(self) -> float | None:
        """The GPU's busy share over the run's steady state (scoring.steady_state)."""
        return steady_busy_fraction(self._timeline)

    def make_ring(self, slots: int = DEFAULT_SLOTS, on_device: bool = False, allocate=None,
                  layout: str | None = None) -> HostRing:
        """Ring slots in pinned host memory (CPU decode: H2D copies are truly asynchronous) or on
        the device (GPU decode); or from `allocate` (decoders in child processes share the ring:
        scoring.decode_processes.SharedBuffers). Rows in `ring_preprocess`'s layout, or in
        `layout` where the decoders were made before the plan was known (child processes)."""
        import cupyx

        self.ring_layout = layout or self.ring_preprocess.layout
        row_shape = dataclasses.replace(self.ring_preprocess, layout=self.ring_layout).output_shape
        cp = self.cp
        if allocate is None:
            allocate = (lambda shape, dtype: cp.empty(shape, dtype=dtype)) if on_device else cupyx.empty_pinned
        ring = HostRing(slots, self.capacity, row_shape, self.ring_dtype, allocate=allocate)
        if isinstance(ring.buffers[0], cp.ndarray):  # decoder threads', or decode processes' shared slots
            self._read_in_place(ring.buffers)
        return ring

    def _read_in_place(self, buffers: list) -> None:
        """Have the engine read these device slots in place (see the module doc), where it can."""
        if not slot_input_wanted():
            self.slot_input = "copied: BATCHSCORE_SLOT_INPUT=0"
            return
        for buffer in buffers:
            why = self.context.prepare_input(self.bucket, self.input.name, self._as_input(buffer))
            if why is not None:  # then every slot is copied
                self.slot_input = f"copied: {why}"
                log.info("device slots are copied into the engine's input: %s", why)
                return
        self.slot_input = "in place"

    def _warm_up(self) -> None:
        """One eager pass and the CUDA graph capture, before the first real batch is timed."""
        with self.stream:
            self.input_binding[...] = 0
            self.context.execute(self.bucket)  # eager, then captured
            self.context.execute(self.bucket)  # the graph
        self.stream.synchronize()

    def submit(self, slot: Slot) -> GpuPending:
        cp = self.cp
        k = self.submitted % len(self.outputs)
        self.submitted += 1
        events = {name: cp.cuda.Event() for name in ("start", "graph")}
        events["end"] = wait_event(cp, self.spin_wait, timing=True)  # result() waits on it
        on_device = isinstance(slot.buffer, cp.ndarray)
        if on_device:
            source = slot.buffer
        else:
            if self.device_inputs is None:
                self.device_inputs = [cp.empty(slot.buffer.shape, dtype=slot.buffer.dtype) for _ in self.outputs]
            source = self.device_inputs[k]
            if self.consumed[k] is not None:
                self.copy_stream.wait_event(self.consumed[k])  # batch i-2 has left this buffer
            events["h2d_start"], events["h2d_end"] = cp.cuda.Event(), wait_event(cp, self.spin_wait, timing=True)
            events["h2d_start"].record(self.copy_stream)
            source.set(slot.buffer, stream=self.copy_stream)
            events["h2d_end"].record(self.copy_stream)
            self.stream.wait_event(events["h2d_end"])
        events["start"].record(self.stream)
        consumed = wait_event(cp, self.spin_wait)
        with self.stream:
            rows = self._as_input(source)
            if on_device and self.slot_input == "in place" and \
                    self.context.reads_in_place(self.bucket, self.input.name, rows):
                events["graph"] = events["start"]  # no "input" stage: nothing is copied
                self.context.execute_from(self.bucket, self.input.name, rows,
                                          between=lambda: consumed.record(self.stream))
            else:
                self._copy_in(rows)
                consumed.record(self.stream)
                events["graph"].record(self.stream)
                self.context.execute(self.bucket)
            output = self.bucket.bound[self.output.name]
            output.get(stream=self.stream, out=self.outputs[k], blocking=False)
        events["end"].record(self.stream)
        if not on_device:
            self.consumed[k] = consumed
        # The caller releases the slot when this returns: wait until nothing reads it any more.
        consumed.synchronize() if on_device else events["h2d_end"].synchronize()
        return GpuPending(self, events, self.outputs[k], slot.rows)

    def _copy_in(self, rows) -> None:
        """A slot's rows, as `_as_input` shapes them, into the input binding, on the compute stream:
        one device-to-device memcpy where the ring holds the binding's exact dtype and layout, else
        CuPy's converting copy. ResNet-50 FP16 at batch 256 on an H100, end to end: 0.26-0.28 ms a batch with CuPy's
        copy, NHWC or NCHW alike; 0.08-0.10 ms with the memcpy (benchmarks/results/scoring/
        *_s7_split_*.json against *_s7_final_*.json, stage "input")."""
        binding = self.input_binding
        same = (rows.shape, rows.strides, rows.dtype) == (binding.shape, binding.strides, binding.dtype)
        if same and _dense(binding):
            runtime = self.cp.cuda.runtime
            runtime.memcpyAsync(binding.data.ptr, rows.data.ptr, binding.nbytes, runtime.memcpyDeviceToDevice,
                                self.stream.ptr)
        else:
            self.cp.copyto(binding, rows)

    def _as_input(self, rows):
        """A slot's rows with the input binding's shape: NHWC rows as an NCHW view (no copy)."""
        if self.ring_layout != self.preprocess.layout:
            return rows.transpose(0, 3, 1, 2)
        return rows

    def _account(self, events: dict, rows: int) -> None:
        """Add one finished batch's event times to the stages and the busy fraction."""
        cp = self.cp
        compute = cp.cuda.get_elapsed_time(events["start"], events["end"])
        copy_in = cp.cuda.get_elapsed_time(events["start"], events["graph"])
        self.stages["input"] += copy_in / 1e3
        self.stages["compute"] += (compute - copy_in) / 1e3
        if "h2d_start" in events:
            self.stages["h2d"] += cp.cuda.get_elapsed_time(events["h2d_start"], events["h2d_end"]) / 1e3
        done, busy, idle = self._timeline[-1] if self._timeline else (0, 0.0, 0.0)
        if self._previous_end is not None and len(self._timeline) >= STEADY_AFTER:  # this is batch len + 1
            busy += compute
            idle += max(0.0, cp.cuda.get_elapsed_time(self._previous_end, events["start"]))
        self._previous_end = events["end"]
        self._timeline.append((done + rows, busy, idle))

    def close(self) -> None:
        self.stream.synchronize()
        self.copy_stream.synchronize()
