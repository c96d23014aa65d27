"""Convolutions through the cuDNN frontend's graph API, in either activation layout.

Channels-last (NHWC tensors seen as NCHW-shaped strided views; FP16, and FP32 with TF32): conv +
bias + residual add + activation as one cuDNN graph. NCHW (FP32 without TF32): cuDNN fuses nothing
into non-tensor-core NCHW convolutions, so the graph is the convolution alone and one CuPy raw
kernel adds bias and residual and applies the activation afterwards, in place, in one pass over the
output. A channels-last graph that cuDNN refuses falls back to the NCHW scheme (conv-only + pass).

Tactics are cuDNN execution plans (heuristics A, then the fallback list); a plan names the one the
tuner chose as "cudnn:<index>", and the same graph on the same GPU and cuDNN enumerates the same
plans. Activations cuDNN fuses: Relu, Sigmoid, Tanh, SiLU; on NHWC others run as a CuPy epilogue.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from kernels.cuda import GPU_OPS
from kernels.cuda.elementwise import activation_expr, activation_kernel
from kernels.cuda.spec import LayerSpec, Unsupported

log = logging.getLogger("batchscore.gpu")

_FUSABLE = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "SiLU": "swish"}
_INT32_LIMIT = 2**31 - 1


def exclude_tf32(cudnn, graph) -> None:
    """An FP32 layer without --tf32 must not run on TF32 tensor cores: drop the engines whose
    numerical notes say they use tensor cores or convert their inputs down."""
    notes = [getattr(cudnn.numerical_note, n) for n in ("TENSOR_CORE", "DOWN_CONVERT_INPUTS")
             if hasattr(cudnn.numerical_note, n)]
    graph.deselect_numeric_notes(notes)


def _dtype(cudnn, dtype) -> object:
    return {np.dtype("float16"): cudnn.data_type.HALF, np.dtype("float32"): cudnn.data_type.FLOAT}[np.dtype(dtype)]


def _elem_strides(array) -> list[int]:
    return [s // array.itemsize for s in array.strides]


def plan_index_for(tactic: str | None, count: int, name_at) -> int:
    """Which of a convolution graph's `count` ranked cuDNN plans a recorded tactic means here.

    Tuning times a layer at the plan's largest batch, and other batch sizes reuse its choice; but
    cuDNN ranks its plans per shape, so the index recorded at one batch names another engine at
    batch 1 (ResNet-50 FP16 at batch 1 took 0.986 ms after one cold tuning; looked up by name, 0.395-0.413
    ms in four H100 runs, benchmarks/results/gpu/*_2026-11-22_s14*.json). A
    tactic "cudnn:INDEX:NAME" is found here by NAME (`name_at(i)`, the plan's engine and knobs); where
    this shape has no such plan, cuDNN's own first choice for it (index 0) is taken. A bare
    "cudnn:INDEX" (plans from before names were recorded) keeps its index; anything else gets 0.
    """
    if not tactic or not tactic.startswith("cudnn:"):
        return 0
    parts = tactic.split(":", 2)
    try:
        index = int(parts[1])
    except ValueError:
        return 0
    if len(parts) < 3 or not parts[2]:
        return index if 0 <= index < count else 0
    name = parts[2]
    if 0 <= index < count and name_at(index) == name:
        return index
    for i in range(count):
        if i != index and name_at(i) == name:
            return i
    return 0


def channels_last(cp, array: np.ndarray, dtype) -> object:
    """A host (K, C, R, S) weight on the device as an NCHW-shaped view of KRSC memory."""
    k, c, r, s = array.shape
    out = cp.empty((k, r, s, c), dtype=dtype).transpose(0, 3, 1, 2)
    out[...] = cp.asarray(array.astype(dtype))
    return out


def layout_of(shape, strides, itemsize: int) -> str | None:
    """"nhwc" or "nchw" for a 4-D NCHW-shaped view, from its strides (in bytes); None where both
    layouts put the elements at the same addresses (one channel, or a 1x1 image)."""
    n, c, h, w = shape
    if c == 1 or h * w == 1:
        return None
    return "nhwc" if strides[1] == itemsize else "nchw"


def _pads(spec: LayerSpec, x_shape, w_shape) -> tuple[list[int], list[int], list[int]]:
    """(padding, strides, dilations) for cuDNN, which pads both sides alike."""
    attrs = spec.attrs
    strides = list(attrs.get("strides") or [1, 1])
    dilations = list(attrs.get("dilations") or [1, 1])
    auto_pad = attrs.get("auto_pad", "NOTSET")
    kernel = list(w_shape[2:])
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads_begin, pads_end = [], []
        for size, k, s, d in zip(x_shape[2:], kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            pads_begin.append(small if auto_pad == "SAME_UPPER" else total - small)
            pads_end.append(total - pads_begin[-1])
    elif auto_pad == "VALID":
        pads_begin, pads_end = [0, 0], [0, 0]
    else:
        pads = list(attrs.get("pads") or [0, 0, 0, 0])
        pads_begin, pads_end = pads[:2], pads[2:]
    if pads_begin != pads_end:
        raise Unsupported(f"asymmetric padding {pads_begin} / {pads_end}")
    return pads_begin, strides, dilations


class CudnnConv:
    """One bound conv layer: a cuDNN graph over fixed device buffers, its chosen plan, and what runs
    after it (the NCHW epilogue pass, or CuPy activations the NHWC graph could not fuse)."""

    def __init__(self, spec: LayerSpec, inputs: list, outputs: list, device):
        import cupy as cp

        from kernels.cuda import import_cudnn

        cudnn = import_cudnn()

        x, w_host = inputs[0], spec.consts.get(1)
        if w_host is None:
            raise Unsupported("conv weights are not constant")
        if x.ndim != 4:
            raise Unsupported(f"{x.ndim - 2}-D convolution")
        if int(spec.attrs.get("group", 1)) != 1:
            raise Unsupported("grouped convolution")
        if x.dtype not in (np.float16, np.float32):
            raise Unsupported(f"dtype {x.dtype}")
        self.cp, self.device, self.spec = cp, device, spec
        dtype = x.dtype
        self.geometry = _pads(spec, x.shape, w_host.shape)
        bias_host = spec.consts.get(2)
        residual = inputs[3] if spec.attrs.get("residual") and len(inputs) > 3 else None
        if residual is not None and residual.dtype != dtype:
            raise Unsupported(f"a {residual.dtype} residual added to a {dtype} convolution")
        splits = list(spec.attrs.get("output_splits") or [])
        activation = spec.attrs.get("activation", "")
        split_acts = list(spec.attrs.get("split_activations") or [])
        self.outputs = outputs
        self.per_split = [tuple(a) if a else ("", []) for a in split_acts] if split_acts else \
            [(activation, spec.attrs.get("activation_params", []))] * max(len(splits), 1)
        self.splits = splits
        # The layout follows the activation arena's: the output's strides say it, else the input's;
        # where neither can tell (1 channel or a 1x1 image), NHWC as before NCHW plans existed.
        first_out = next((o for o in outputs if o is not None), None)
        layouts = [layout_of(a.shape, a.strides, a.itemsize) for a in (first_out, x) if a is not None and a.ndim == 4]
        known = [lay for lay in layouts if lay]
        nhwc = known[0] == "nhwc" if known else (x.strides[1] == x.itemsize and x.shape[1] > 1)
        shared = spec.buffers.get("split_buffer") if splits else None
        if splits and shared is None:
            shared = _shared_buffer(cp, outputs, splits)
        if splits and shared is None:  # outputs elsewhere: compute into one buffer, copy each split out
            n, _, h, wd = first_out.shape
            self.full = (cp.empty((n, h, wd, sum(splits)), dtype=dtype).transpose(0, 3, 1, 2) if nhwc
                         else cp.empty((n, sum(splits), h, wd), dtype=dtype))
        else:
            self.full = shared if splits else outputs[0]
        self.weight = (channels_last(cp, w_host, dtype) if nhwc
                       else cp.asarray(np.ascontiguousarray(w_host, dtype=dtype)))
        self.epilogues: list = []
        if nhwc:
            self.bias = None if bias_host is None else cp.asarray(bias_host.astype(dtype).reshape(1, -1, 1, 1))
            try:
                self._build_fused(cudnn, x, residual)
                return
            except Unsupported as why:  # e.g. no fused plan for this dtype or shape: run conv-only + pass
                log.info("conv %s: no fused cuDNN graph (%s); conv-only graph and an epilogue pass", spec.name, why)
        self.epilogues = []
        self.bias = None if bias_host is None else cp.asarray(np.asarray(bias_host, dtype=np.float32).reshape(-1))
        self._graph(cudnn, x, None, None, None)
        self.epilogues = self._epilogue_passes(residual)

    # ------------------------------------------------------------------------------------------
    # Channels-last: one fused graph

    def _build_fused(self, cudnn, x, residual) -> None:
        # One activation for every split can run inside the cuDNN graph; otherwise each split gets
        # its own in-place epilogue over its channels only.
        per_split, splits, outputs = self.per_split, self.splits, self.outputs
        uniform = len({(a, tuple(p)) for a, p in per_split}) == 1
        fused_act = _FUSABLE.get(per_split[0][0]) if uniform and not per_split[0][1] else None
        epilogues = []
        start = 0
        for index, size in enumerate(splits or [outputs[0].shape[1]]):
            name, params = per_split[index]
            source = self.full[:, start:start + size]
            target = outputs[index] if splits else self.full
            needs_act = bool(name) and not fused_act
            elsewhere = splits and target is not None and target.data.ptr != source.data.ptr  # an elided concat's slice
            if target is not None and (needs_act or elsewhere):
                epilogues.append((source, target, name if needs_act else "Identity", params))
            start += size
        self._graph(cudnn, x, self.bias, residual, fused_act)
        kernels = [(activation_kernel(name, params), source, target) for source, target, name, params in epilogues]
        self.epilogues = [functools.partial(kernel, source, target) for kernel, source, target in kernels]

    # ------------------------------------------------------------------------------------------
    # The cuDNN graph (conv, and on NHWC bias, residual and activation)

    def _graph(self, cudnn, x, bias, residual, fused_act) -> None:
        pads, strides, dilations = self.geometry
        dtype = x.dtype
        io = _dtype(cudnn, dtype)
        try:
            graph = cudnn.pygraph(handle=self.device.cudnn_handle, name=self.spec.name, io_data_type=io,
                                  intermediate_data_type=cudnn.data_type.FLOAT, compute_data_type=cudnn.data_type.FLOAT)
            X = graph.tensor(name="X", dim=list(x.shape), stride=_elem_strides(x), data_type=io)
            W = graph.tensor(name="W", dim=list(self.weight.shape), stride=_elem_strides(self.weight), data_type=io)
            pack = {X: x, W: self.weight}
            y = graph.conv_fprop(image=X, weight=W, padding=pads, stride=strides, dilation=dilations,
                                 compute_data_type=cudnn.data_type.FLOAT)
            if bias is not None:
                B = graph.tensor(name="B", dim=list(bias.shape), stride=_elem_strides(bias), data_type=io)
                pack[B] = bias
                y = graph.add(a=y, b=B, compute_data_type=cudnn.data_type.FLOAT)
            if residual is not None:
                Z = graph.tensor(name="Z", dim=list(residual.shape), stride=_elem_strides(residual), data_type=io)
                pack[Z] = residual
                y = graph.add(a=y, b=Z, compute_data_type=cudnn.data_type.FLOAT)
            if fused_act:
                y = getattr(graph, fused_act)(input=y, compute_data_type=cudnn.data_type.FLOAT)
            y.set_output(True).set_data_type(io).set_dim(list(self.full.shape)).set_stride(_elem_strides(self.full))
            pack[y] = self.full
            graph.validate()
            graph.build_operation_graph()
            graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
            if dtype == np.float32 and not self.spec.allow_tf32:
                exclude_tf32(cudnn, graph)
            graph.check_support()
        except Unsupported:
            raise
        except Exception as exc:  # cuDNN says why in its own exception types
            raise Unsupported(f"cuDNN cannot build this convolution graph: {type(exc).__name__}: {exc}") from None
        self.graph, self.pack = graph, pack
        self.count = graph.get_execution_plan_count()
        if self.count == 0:
            raise Unsupported("cuDNN offers no execution plan for this convolution")
        self.index = -1
        wanted = plan_index_for(self.spec.tactic, self.count, self._plan_name)
        self.select(wanted)
        recorded = str(self.spec.tactic or "").startswith("cudnn:")  # tuning (no tactic yet) expects misses
        if recorded and self.index != wanted:  # a silent fallback once cost ResNet-50 FP16 10% (conv1 2.3x slower)
            log.warning("layer %s: cuDNN plan %d (%s) did not build (%s); running plan %d (%s) instead",
                        self.spec.name, wanted, self._plan_name(wanted), self.build_failure, self.index,
                        self._plan_name(self.index))

    # ------------------------------------------------------------------------------------------
    # NCHW: bias + residual + activation in one pass after a conv-only graph

    def _epilogue_passes(self, residual) -> list:
        """One EpiloguePass per region to finish: the whole output, or each split (a split has its
        own activation and may be written to an elided concat's slice). Splits that all finish in
        place with one activation are one pass over the whole buffer."""
        splits, outputs, per_split = self.splits, self.outputs, self.per_split
        regions = []
        start = 0
        for index, size in enumerate(splits or [self.full.shape[1]]):
            target = outputs[index] if splits else self.full
            if target is not None:
                regions.append((start, size, target, per_split[index]))
            start += size
        in_place = all(target.data.ptr == self.full[:, s:s + n].data.ptr and target.strides == self.full.strides
                       for s, n, target, _ in regions)
        acts = {(name, tuple(params or ())) for _, _, _, (name, params) in regions}
        if splits and in_place and len(acts) == 1 and len(regions) == len(splits):
            name, params = per_split[0]
            regions = [(0, self.full.shape[1], self.full, (name, params))]
        passes = []
        for start, size, target, (name, params) in regions:
            source = self.full[:, start:start + size]
            moved = target.data.ptr != source.data.ptr or target.strides != source.strides
            if self.bias is None and residual is None and not name and not moved:
                continue  # nothing to add, apply or move: the conv wrote the final values
            bias = None if self.bias is None else self.bias[start:start + size]
            res = None if residual is None else residual[:, start:start + size]
            passes.append(EpiloguePass(source, target, bias, res, name, params))
        return passes

    # ------------------------------------------------------------------------------------------

    @property
    def tactic(self) -> str:
        """"cudnn:INDEX:NAME": NAME (the engine and its knobs) is what identifies the plan; INDEX is its
        rank in this graph's heuristic list, which changes with the shape."""
        name = self._plan_name(self.index)
        return f"cudnn:{self.index}:{name}" if name else f"cudnn:{self.index}"

    def _plan_name(self, index: int) -> str | None:
        try:
            return str(self.graph.get_plan_name_at_index(index)) or None
        except Exception:  # a frontend without names: the index alone, as before
            return None

    def candidates(self) -> list[str]:
        return [f"cudnn:{i}" for i in range(self.count)]

    def select(self, index: int) -> None:
        """Build plan `index` (or the next that builds) and size its workspace."""
        self.build_failure = None
        for i in list(range(index, self.count)) + list(range(0, index)):
            try:
                self.graph.build_plan_at_index(i)
            except Exception as exc:
                if i == index:
                    self.build_failure = f"{type(exc).__name__}: {str(exc)[:300]}"
                continue
            self.index = i
            size = self.graph.get_workspace_size_plan_at_index(i)
            self.workspace = self.cp.empty(max(size, 1), dtype=self.cp.uint8)
            return
        raise Unsupported("no cuDNN execution plan builds for this convolution")

    def __call__(self) -> None:
        self.graph.execute_plan_at_index(self.pack, self.workspace, self.index, handle=self.device.cudnn_handle)
        for epilogue in self.epilogues:
            epilogue()


# ----------------------------------------------------------------------------------------------
# The epilogue pass

_EPILOGUE_SOURCE = r"""
extern "C" __global__ void conv_epilogue(const T* src, T* dst, const float* __restrict__ bias,
    const T* __restrict__ res, IDX total, IDX C, IDX H, IDX W,
    IDX ssn, IDX ssc, IDX ssh, IDX ssw, IDX sdn, IDX sdc, IDX sdh, IDX sdw,
    IDX srn, IDX src_c, IDX srh, IDX srw) {
  // dst = act(src + bias[c] + res) over one (N, C, H, W) region. src and dst may be one array (in
  // place; each element is read before it is written, by the same thread). Element i is taken in
  // the order the destination's memory runs, so neighbouring threads touch neighbouring addresses.
  for (IDX i = (IDX)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (IDX)gridDim.x * blockDim.x) {
    IDX n, c, h, w;
#if CHANNELS_FASTEST
    c = i % C; IDX r = i / C; w = r % W; r /= W; h = r % H; n = r / H;
#elif PLANES_CONTIGUOUS  // every (h, w) plane is one run of memory: no need to split hw
    const IDX HW = H * W;
    IDX hw = i % HW; IDX nc = i / HW; c = nc % C; n = nc / C; h = 0; w = hw;
#else
    const IDX HW = H * W;
    IDX hw = i % HW; IDX nc = i / HW; c = nc % C; n = nc / C; h = hw / W; w = hw - h * W;
#endif
    float v = (float)src[n * ssn + c * ssc + h * ssh + w * ssw];
#if HAS_BIAS
    v += bias[c];
#endif
#if HAS_RES
    v += (float)res[n * srn + c * src_c + h * srh + w * srw];
#endif
    v = ACT;
    dst[n * sdn + c * sdc + h * sdh + w * sdw] = (T)v;
  }
}
"""


@functools.lru_cache(maxsize=None)
def _epilogue_kernel(ctype: str, index_type: str, act: str, has_bias: bool, has_res: bool, order: str):
    import cupy as cp

    defines = {"T": ctype, "IDX": index_type, "ACT": f"({act})", "HAS_BIAS": int(has_bias), "HAS_RES": int(has_res),
               "CHANNELS_FASTEST": int(order == "channels"), "PLANES_CONTIGUOUS": int(order == "planes")}
    head = "#include <cuda_fp16.h>\n" if ctype == "__half" else ""
    head += "".join(f"#define {key} {value}\n" for key, value in defines.items())
    return cp.RawKernel(head + _EPILOGUE_SOURCE, "conv_epilogue")


def extent(array) -> int:
    """One past the largest element offset a strided view reaches from its first element."""
    if array.size == 0:
        return 0
    return 1 + sum((d - 1) * (s // array.itemsize) for d, s in zip(array.shape, array.strides))


def _walk_order(arrays) -> str:
    """How the epilogue walks its region: "channels" fastest on NHWC memory, else w fastest, as
    "planes" where every array's (h, w) plane is one contiguous run (NCHW and its channel slices)."""
    dst = arrays[1]
    if layout_of(dst.shape, dst.strides, dst.itemsize) == "nhwc":
        return "channels"
    w = dst.shape[3]
    if all(a.strides[3] == a.itemsize and a.strides[2] == w * a.itemsize for a in arrays):
        return "planes"
    return "nchw"


class EpiloguePass:
    """dst = act(src + bias[c] + residual) over one NCHW-shaped region, as one raw-kernel launch
    (capturable in a CUDA graph). bias is float32 (C,), residual has src's shape and dtype."""

    def __init__(self, src, dst, bias, residual, activation: str, params):
        if src.shape != dst.shape or src.dtype != dst.dtype:
            raise Unsupported(f"conv epilogue from {src.dtype} {src.shape} to {dst.dtype} {dst.shape}")
        ctype = {"float16": "__half", "float32": "float"}.get(str(src.dtype))
        if ctype is None:
            raise Unsupported(f"conv epilogue in {src.dtype}")
        if residual is not None and (residual.shape != src.shape or residual.dtype != src.dtype):
            raise Unsupported(f"conv epilogue: residual {residual.dtype} {residual.shape}, "
                              f"output {src.dtype} {src.shape}")
        n, c, h, w = src.shape
        if bias is not None and (bias.shape != (c,) or bias.dtype != np.float32):
            raise Unsupported(f"conv epilogue: bias {bias.dtype} {bias.shape} for {c} channels")
        arrays = [a for a in (src, dst, residual) if a is not None]
        if any(s < 0 or s % a.itemsize for a in arrays for s in a.strides):
            raise Unsupported("conv epilogue over negative or unaligned strides")
        self.grid = (max(1, min((src.size + 255) // 256, 65535 * 8)),)
        # 32-bit index math is much faster where every offset, and the grid-stride loop's last step
        # past the end, fits; else 64-bit.
        small = max([src.size] + [extent(a) for a in arrays]) + self.grid[0] * 256 <= _INT32_LIMIT
        index = np.int32 if small else np.int64
        self.kernel = _epilogue_kernel(ctype, "int" if small else "long long", activation_expr(activation, params),
                                       bias is not None, residual is not None, _walk_order(arrays))
        strides = lambda a: [index(s // a.itemsize) for s in a.strides]  # noqa: E731
        self.args = (src, dst, src if bias is None else bias, src if residual is None else residual,
                     index(src.size), index(c), index(h), index(w), *strides(src), *strides(dst),
                     *strides(residual if residual is not None else src))
        self.bias, self.residual = bias, residual  # keep the buffers alive with the launch

    def __call__(self) -> None:
        self.kernel(self.grid, (256,), self.args)


def _shared_buffer(cp, outputs: list, splits: list[int]):
    """If the outputs are consecutive channel slices of one buffer (the runtime binds a fused conv's
    outputs so), that buffer as an NCHW view; else None."""
    first = outputs[0]
    if first is None:
        return None
    offset = 0
    for out, size in zip(outputs, splits):
        if out is None or out.strides != first.strides or out.shape[1] != size or \
                out.data.ptr != first.data.ptr + offset * first.strides[1]:
            return None
        offset += size
    shape = (first.shape[0], sum(splits)) + tuple(first.shape[2:])
    return cp.ndarray(shape, dtype=first.dtype, memptr=first.data, strides=first.strides)


@GPU_OPS.register("FusedConv", since=1, domain="batchscore")
def make_fused_conv(spec: LayerSpec, inputs: list, outputs: list, device) -> CudnnConv:
    return CudnnConv(spec, inputs, outputs, device)


@GPU_OPS.register("Conv", since=1)
def make_conv(spec: LayerSpec, inputs: list, outputs: list, device) -> CudnnConv:
    return CudnnConv(spec, inputs, outputs, device)
