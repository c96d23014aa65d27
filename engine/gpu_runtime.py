"""The runtime on a CUDA GPU: a GpuEngine is a loaded GPU plan; a GpuContext runs it.

Per batch size the context keeps a *bucket*: the activation arena on the device (4-D tensors
channels-last, except in FP32 plans without TF32: see uses_channels_last), every layer bound to
its buffers by its kernel factory, input and output staging, and a CUDA graph of the whole forward
pass once it has run eagerly. Inputs arrive as host numpy arrays (copied for you) or CuPy arrays
(used in place); outputs come back as numpy arrays in the plan's output dtype. A layer whose kernel
cannot run on the GPU runs its numpy kernel on the host, and the bucket then runs without a CUDA
graph; `host_layers` lists such layers.

A bucket can also read an input in place from another array of the input binding's shape, strides
and dtype (a scoring ring slot), instead of having it copied into the binding first: `prepare_input`
rebinds the layers that read that input's memory (the *head*: every layer up to the last such
reader) to the array and captures them as a graph of their own; `execute_from` launches that head
graph, then one graph of the remaining layers (the *tail*), which every such array shares. Between
the two the caller may mark the array as read (an event), so it can be refilled while the tail runs.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from engine.address_span import address_span, inside, overlap
from engine.arena import Arena
from engine.errors import LayerError, PlanFormatError
from engine.memory import VIEW_OPS
from engine.plan import Plan
from engine.runtime import RUNTIME_ATTRS, _spec, check_feeds, decode_attrs
from kernels.cpu import CPU_OPS
from kernels.cuda.spec import LayerSpec, Unsupported

log = logging.getLogger("batchscore.gpu")


class GpuEngine:
    def __init__(self, plan: Plan, source: str = "<plan>"):
        from kernels.cuda import gpu_unavailable, load_kernels
        from kernels.cuda.device import describe_gpu

        header = plan.header
        missing = gpu_unavailable()
        if missing:
            raise PlanFormatError(f"{source}: the plan was built for a CUDA GPU, but {missing}")
        here, built = describe_gpu(), header.get("device", {})
        if built.get("arch") and built["arch"] != here["arch"]:
            raise PlanFormatError(
                f"{source}: the plan was built for {built.get('name', '?')} ({built['arch']}); this GPU is "
                f"{here['name']} ({here['arch']}): rebuild the plan on this GPU type")
        self.gpu_ops = load_kernels()
        self.source, self.header, self.plan = source, header, plan
        self.name = header.get("model_name", "model")
        self.max_batch = header.get("max_batch")
        self.inputs = [_spec(e) for e in header["inputs"]]
        self.outputs = [_spec(e) for e in header["outputs"]]
        self.weights = {name: plan.tensors[name] for name in header.get("weights", [])}
        self.layers = header["layers"]

    def create_context(self, stream=None, use_graphs: bool = True) -> "GpuContext":
        return GpuContext(self, stream, use_graphs)

    def batch_of(self, feeds: Mapping[str, Any]) -> int:
        for spec in self.inputs:
            if spec.shape and isinstance(spec.shape[0], str):
                return int(feeds[spec.name].shape[0])
        return int(self.max_batch or 1)


class _Bucket:
    """Everything bound for one batch size."""

    def __init__(self, engine: GpuEngine, batch: int, device):
        import cupy as cp

        self.batch = batch
        header = engine.header
        external = {s.name for s in engine.inputs} | {s.name for s in engine.outputs}
        self.channels_last = uses_channels_last(header)
        self.arena = Arena(header["layers"], header["values"], external, batch, xp=cp,
                           channels_last=self.channels_last, fresh_per_run=False)
        shapes = self.arena.shapes
        self.bound: dict[str, Any] = {}
        self.staging = {}
        for spec in engine.inputs:  # user data lands in `staging`, then converts into the bound input
            shape, dtype = shapes[spec.name]
            self.staging[spec.name] = cp.empty(shape, dtype=spec.dtype)
            self.bound[spec.name] = self.arena.allocate(shape, dtype)
        self.runners: list = []
        # per runner, at its index: (the arrays it reads, positionally, None for a weight; the
        # arrays it writes; a function that makes the same runner over other input arrays)
        self.runner_io: list[tuple[list, list, Any]] = []
        self.host_layers: list[str] = []
        self.tactics: dict[str, str] = {}
        self.io: dict[str, tuple] = {}  # layer -> (attrs, input arrays as read, output arrays): for tuning's check
        for entry in engine.layers:
            self._bind(engine, entry, shapes, device)
        self.graph = None
        self.tail: tuple[int, Any] | None = None  # (runners in the head, the tail's graph)
        self.heads: dict[tuple, tuple[Any, list]] = {}  # input array's key -> (head graph, its runners)

    def _add_runner(self, name: str, runner, reads: list, writes: list, remake) -> None:
        self.runners.append((name, runner))
        self.runner_io.append((reads, writes, remake))

    def _bind(self, engine: GpuEngine, entry: dict, shapes: dict, device) -> None:
        import cupy as cp

        name, kind = entry["name"], entry["kind"]
        outputs = [o for o in entry["outputs"]]
        if kind in VIEW_OPS and "batchscore" not in entry["kernel"]:
            source = self.bound[entry["inputs"][0]]
            target_shape, dtype = shapes[outputs[0]]
            view = source.reshape(target_shape)
            if _shares_memory(view, source):
                self.bound[outputs[0]] = view
            else:  # a channels-last tensor flattened: copy into logical (NCHW) order
                buffer = cp.empty(target_shape, dtype=dtype)
                self.bound[outputs[0]] = buffer

                def flatten(arrays, b=buffer):
                    return lambda s=arrays[0]: cp.copyto(b.reshape(s.shape), s)

                self._add_runner(name, flatten([source]), [source], [buffer], flatten)
            return
        attrs = decode_attrs(entry.get("attrs", {}), engine.plan.tensors)
        elided = bool(attrs.get("elided"))
        for key in RUNTIME_ATTRS:
            attrs.pop(key, None)
        out_arrays = []
        buffers = {}
        splits = list(attrs.get("output_splits") or [])
        if splits and all(outputs):
            # A horizontally fused conv writes one buffer; its outputs are channel slices of it, so
            # readers take them in place (cuDNN reads strided channels-last views) and nothing is
            # copied, except into an elided concat's slice, which must be that concat's memory.
            shape, dtype = shapes[outputs[0]]
            full = self.arena.allocate((shape[0], sum(splits)) + tuple(shape[2:]), dtype)
            buffers["split_buffer"] = full
            start = 0
            for out, size in zip(outputs, splits):
                in_concat = out in self.arena.plan.slices
                self.bound[out] = self.arena.target(out) if in_concat else full[:, start:start + size]
                out_arrays.append(self.bound[out])
                start += size
        for out in outputs if not out_arrays else []:
            if not out:
                out_arrays.append(None)
                continue
            target = self.arena.target(out)
            if target is None:
                shape, dtype = shapes[out]
                target = self.arena.allocate(shape, dtype)
            self.bound[out] = target
            out_arrays.append(target)
        if elided:
            return  # its producers wrote into place
        consts = {i: engine.weights[n] for i, n in enumerate(entry["inputs"]) if n in engine.weights}
        in_arrays = [None if (not n or n in engine.weights) else self.bound[n] for n in entry["inputs"]]
        in_arrays = self._cast_inputs(engine, entry, in_arrays)
        self.io[name] = (attrs, in_arrays, out_arrays)
        spec = LayerSpec(name, kind, attrs, consts, tactic=entry.get("tactic"),
                         allow_tf32=bool(engine.header.get("tf32")), buffers=buffers)
        remake = None
        try:
            factory = engine.gpu_ops.by_key(entry["kernel"]).fn
            runner = factory(spec, in_arrays, out_arrays, device)
            self.tactics[name] = getattr(runner, "tactic", "cupy")
            remake = lambda arrays: factory(spec, arrays, out_arrays, device)  # noqa: E731
        except (KeyError, Unsupported) as why:
            log.info("layer %s (%s) runs on the host: %s", name, kind, why)
            runner = _HostLayer(entry, attrs, engine.weights, in_arrays, out_arrays)
            self.host_layers.append(name)
            self.tactics[name] = "host"
        self._add_runner(name, runner, in_arrays, [a for a in out_arrays if a is not None], remake)

    def _cast_inputs(self, engine: GpuEngine, entry: dict, arrays: list) -> list:
        """In an FP16 plan with FP32 layers (engine/precision.py), a layer reads its float inputs in
        its own precision: an input of the other one is converted into a buffer of its own first,
        by a copy that runs just before the layer (and is captured in the CUDA graph with it)."""
        import cupy as cp

        if engine.header.get("precision") != "fp16" or not engine.header.get("fp32_fallback"):
            return arrays
        wanted = np.dtype(np.float32 if entry.get("precision") == "fp32" else np.float16)
        converted = []
        for array in arrays:
            if array is not None and array.dtype.kind == "f" and array.dtype != wanted:
                target = self.arena.allocate(array.shape, wanted)

                def cast(arrays, t=target):
                    return lambda a=arrays[0]: cp.copyto(t, a)

                self._add_runner(f"{entry['name']}:cast", cast([array]), [array], [target], cast)
                array = target
            converted.append(array)
        return converted

    def head_length(self, name: str) -> int | None:
        """How many runners, from the first, it takes to include every one that reads the memory of
        input `name` (through a view too); None where a runner writes into that memory, or none
        reads it, or every runner does (there is no tail)."""
        span = _span(self.bound[name])
        last = 0
        for index, (reads, writes, _) in enumerate(self.runner_io):
            if any(overlap(_span(a), span) for a in writes):
                return None
            if any(a is not None and overlap(_span(a), span) for a in reads):
                last = index + 1
        return last if 0 < last < len(self.runners) else None

    def rebound_head(self, name: str, array, length: int) -> list:
        """The first `length` runners, those that read input `name` made again over the same views
        of `array` (which has the binding's shape, strides and dtype)."""
        binding = self.bound[name]
        span = _span(binding)
        head = []
        for (layer, runner), (reads, _, remake) in zip(self.runners[:length], self.runner_io):
            touched = [a is not None and overlap(_span(a), span) for a in reads]
            if any(touched):
                if remake is None or not all(inside(_span(a), span) for a, t in zip(reads, touched) if t):
                    raise Unsupported(f"layer '{layer}' reads input '{name}' in a way that cannot be rebound")
                runner = remake([_rebased(a, binding, array) if t else a for a, t in zip(reads, touched)])
            head.append((layer, runner))
        return head

    def run_layers(self, runners: list | None = None) -> None:
        for name, runner in self.runners if runners is None else runners:
            try:
                runner()
            except Exception as exc:
                raise LayerError(f"layer '{name}' failed on the GPU: {type(exc).__name__}: {exc}") from exc


def uses_channels_last(header: Mapping[str, Any]) -> bool:
    """The 4-D activation layout of a plan's buckets. Channels-last (NHWC) for FP16, and for FP32
    with TF32: cuDNN's tensor-core convolutions want NHWC, and only there does it fuse bias,
    residual and activation into the conv graph. FP32 without TF32 runs NCHW: on NHWC cuDNN's
    non-tensor-core FP32 engines are very slow (ResNet-50's fused 1x1 convs took 40-66 ms each at
    batch 256 on an H100, where PyTorch's NCHW FP32 runs the whole network in 72 ms), so there the
    conv kernel runs a conv-only cuDNN graph and adds bias, residual and activation in one
    element-wise pass afterwards (kernels/cuda/conv.py)."""
    floats = [info.get("dtype") for info in header.get("values", {}).values()
              if str(info.get("dtype", "")).startswith(("float", "bfloat"))]
    all_fp32 = bool(floats) and all(dtype == "float32" for dtype in floats)
    return not (header.get("precision") == "fp32" and all_fp32 and not header.get("tf32"))


def _shares_memory(a, b) -> bool:
    return a.data.ptr == b.data.ptr and a.size == b.size


def _span(array) -> tuple[int, int]:
    return address_span(array.data.ptr, array.shape, array.strides, array.itemsize)


def _rebased(view, base, other):
    """The view of `other` that `view` is of `base` (other has base's shape, strides and dtype)."""
    import cupy as cp

    return cp.ndarray(view.shape, view.dtype, memptr=other.data + (view.data.ptr - base.data.ptr),
                      strides=view.strides)


def _layout(array) -> tuple:
    return tuple(array.shape), tuple(array.strides), str(array.dtype)


def _head_key(name: str, array) -> tuple:
    """Which head graph reads input `name` from `array`: its address and layout."""
    return (name, array.data.ptr) + _layout(array)


class _HostLayer:
    """A layer without a GPU kernel: copy its inputs out, run the numpy kernel, copy the result in."""

    def __init__(self, entry: dict, attrs: dict, weights: dict, inputs: list, outputs: list):
        self.kernel = CPU_OPS.by_key(entry["kernel"])
        self.attrs = attrs
        self.sources = [weights.get(n) if n in weights else a for n, a in zip(entry["inputs"], inputs)]
        self.outputs = outputs
        self.n_outputs = len(entry["outputs"])

    def __call__(self) -> None:
        import cupy as cp

        args = [cp.asnumpy(a) if isinstance(a, cp.ndarray) else a for a in self.sources]
        args = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float16 else a for a in args]
        attrs = dict(self.attrs, num_outputs=self.n_outputs) if self.kernel.wants_num_outputs else self.attrs
        result = self.kernel.fn(*args, **attrs)
        for target, value in zip(self.outputs, result if isinstance(result, tuple) else (result,)):
            if target is not None:
                target[...] = cp.asarray(np.asarray(value).astype(target.dtype))


class GpuContext:
    def __init__(self, engine: GpuEngine, stream=None, use_graphs: bool = True):
        import cupy as cp

        from kernels.cuda.device import make_device

        self.engine = engine
        self.stream = stream or cp.cuda.Stream(non_blocking=True)
        self.device = make_device(self.stream)
        self.use_graphs = use_graphs
        self.buckets: dict[int, _Bucket] = {}

    def bucket(self, batch: int) -> _Bucket:
        if batch not in self.buckets:
            with self.stream:
                self.buckets[batch] = _Bucket(self.engine, batch, self.device)
        return self.buckets[batch]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run on host (numpy) or device (CuPy) inputs; returns numpy outputs."""
        import cupy as cp

        checked = check_feeds(self.engine.inputs, self.engine.max_batch, feeds, asarray=_as_array)
        bucket = self.bucket(self.engine.batch_of(checked))
        with self.stream:
            self.stage_inputs(bucket, checked)
            self.execute(bucket)
            outputs = {s.name: bucket.bound[s.name] for s in self.engine.outputs}
            host = {name: cp.asnumpy(array, stream=self.stream) for name, array in outputs.items()}
        self.stream.synchronize()
        return {s.name: host[s.name].astype(s.dtype or host[s.name].dtype, copy=False) for s in self.engine.outputs}

    def stage_inputs(self, bucket: _Bucket, feeds: Mapping[str, Any]) -> None:
        import cupy as cp

        for name, array in feeds.items():
            staging = bucket.staging[name]
            if isinstance(array, cp.ndarray):
                staging[...] = array
            else:
                staging.set(np.ascontiguousarray(array), stream=self.stream)
            cp.copyto(bucket.bound[name], staging)  # to the plan's dtype and channels-last layout

    def execute(self, bucket: _Bucket) -> None:
        """One forward pass on the context's stream: the bucket's CUDA graph once it has one."""
        if bucket.graph is not None:
            bucket.graph.launch(self.stream)
            return
        bucket.run_layers()
        if self.use_graphs and not bucket.host_layers:
            bucket.graph = self._capture(bucket)

    def _capture(self, bucket: _Bucket, runners: list | None = None):
        try:
            self.stream.begin_capture()
            try:
                bucket.run_layers(runners)
            finally:
                graph = self.stream.end_capture()
            return graph
        except Exception as exc:  # capture is an optimization: run eagerly if a kernel refuses it
            log.warning("CUDA graph capture failed, running eagerly: %s: %s", type(exc).__name__, exc)
            return None

    def prepare_input(self, bucket: _Bucket, name: str, array) -> str | None:
        """Make `bucket` able to read input `name` in place from `array` (see the module doc): None
        once it can, else why not. Call it before other threads use the GPU: it captures graphs."""
        if name not in bucket.staging:
            return f"the engine has no input '{name}'"
        binding = bucket.bound[name]
        if _layout(array) != _layout(binding):
            return (f"input '{name}' is bound as {_layout(binding)} (shape, strides, dtype), "
                    f"the array is {_layout(array)}")
        key = _head_key(name, array)
        if key in bucket.heads:
            return None
        if bucket.graph is None:
            return "the bucket runs without a CUDA graph" if bucket.host_layers or not self.use_graphs \
                else "the bucket has not run yet"
        length = bucket.head_length(name)
        if length is None:
            return f"no split of the layers separates the readers of input '{name}' from the rest"
        if bucket.tail is not None and bucket.tail[0] != length:
            return (f"the tail graph starts at runner {bucket.tail[0]}, the readers of input '{name}' end at "
                    f"runner {length}")
        try:
            head = bucket.rebound_head(name, array, length)
        except Unsupported as why:
            return str(why)
        with self.stream:
            bucket.run_layers(head)  # eagerly once, before its capture
            if bucket.tail is None:
                tail = self._capture(bucket, bucket.runners[length:])
                if tail is None:
                    return "the tail's CUDA graph capture failed"
                bucket.tail = (length, tail)
            graph = self._capture(bucket, head)
        self.stream.synchronize()
        if graph is None:
            return "the head's CUDA graph capture failed"
        bucket.heads[key] = (graph, head)
        return None

    def reads_in_place(self, bucket: _Bucket, name: str, array) -> bool:
        """Whether prepare_input has made `bucket` able to read input `name` from `array`."""
        return _head_key(name, array) in bucket.heads

    def execute_from(self, bucket: _Bucket, name: str, array, between=None) -> None:
        """One forward pass on the context's stream that reads input `name` from `array` in place
        (prepared by prepare_input): the head graph, `between()` (where given), the tail graph."""
        key = _head_key(name, array)
        if key not in bucket.heads:
            raise ValueError(f"input '{name}' was not prepared to be read from this array "
                             f"(shape {tuple(array.shape)}, strides {tuple(array.strides)}): call prepare_input first")
        bucket.heads[key][0].launch(self.stream)
        if between is not None:
            between()
        bucket.tail[1].launch(self.stream)


def _as_array(value):
    try:
        import cupy as cp

        if isinstance(value, cp.ndarray):
            return value
    except ImportError:
        pass
    return np.asarray(value)


def time_layers(context: GpuContext, batch: int, repeats: int = 5) -> dict[str, float]:
    """Median milliseconds per layer at one batch size (eager launches, events around each)."""
    import cupy as cp

    bucket = context.bucket(batch)
    times: dict[str, list[float]] = {name: [] for name, _ in bucket.runners}
    with context.stream:
        for _ in range(repeats):
            for name, runner in bucket.runners:
                start, end = cp.cuda.Event(), cp.cuda.Event()
                start.record(context.stream)
                runner()
                end.record(context.stream)
                end.synchronize()
                times[name].append(cp.cuda.get_elapsed_time(start, end))
    return {name: float(np.median(t)) for name, t in times.items()}
