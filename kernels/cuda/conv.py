"""Convolutions through the cuDNN frontend's graph API: conv + bias + residual add + activation as
one cuDNN graph, on channels-last (NHWC) tensors seen as NCHW-shaped strided views.

Tactics are cuDNN execution plans (heuristics A, then the fallback list); a plan names the one the
tuner chose as "cudnn:<index>", and the same graph on the same GPU and cuDNN enumerates the same
plans. Activations cuDNN fuses: Relu, Sigmoid, Tanh, SiLU; others run as a CuPy epilogue.
"""

from __future__ import annotations

import numpy as np

from kernels.cuda import GPU_OPS
from kernels.cuda.elementwise import activation_kernel
from kernels.cuda.spec import LayerSpec, Unsupported

_FUSABLE = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "SiLU": "swish"}


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


def channels_last(cp, array: np.ndarray, dtype) -> object:
    """A host (K, C, R, S) weight on the device as an NCHW-shaped view of KRSC memory."""
    k, c, r, s = array.shape
    out = cp.empty((k, r, s, c), dtype=dtype).transpose(0, 3, 1, 2)
    out[...] = cp.asarray(array.astype(dtype))
    return out


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
    """One bound conv layer: a cuDNN graph over fixed device buffers, and its chosen plan."""

    def __init__(self, spec: LayerSpec, inputs: list, outputs: list, device):
        import cudnn
        import cupy as cp

        x, w_host = inputs[0], spec.consts.get(1)
        if w_host is None:
            raise Unsupported("conv weights are not constant")
        if x.ndim != 4:
            raise Unsupported(f"{x.ndim - 2}-D convolution")
        if int(spec.attrs.get("group", 1)) != 1:
            raise Unsupported("grouped convolution")
        if x.dtype not in (np.float16, np.float32):
            raise Unsupported(f"dtype {x.dtype}")
        self.cp, self.device = cp, device
        dtype = x.dtype
        pads, strides, dilations = _pads(spec, x.shape, w_host.shape)
        nhwc = x.strides[1] == x.itemsize and x.shape[1] > 1
        self.weight = channels_last(cp, w_host, dtype) if nhwc else cp.asarray(np.ascontiguousarray(w_host, dtype=dtype))
        bias_host = spec.consts.get(2)
        self.bias = None if bias_host is None else cp.asarray(bias_host.astype(dtype).reshape(1, -1, 1, 1))
        residual = inputs[3] if spec.attrs.get("residual") and len(inputs) > 3 else None
        splits = list(spec.attrs.get("output_splits") or [])
        activation = spec.attrs.get("activation", "")
        split_acts = list(spec.attrs.get("split_activations") or [])
        self.outputs = outputs
        per_split = [tuple(a) if a else ("", []) for a in split_acts] if split_acts else \
            [(activation, spec.attrs.get("activation_params", []))] * max(len(splits), 1)
        shared = spec.buffers.get("split_buffer") if splits else None
        if splits and shared is None:
            shared = _shared_buffer(cp, outputs, splits)
        if splits and shared is None:  # outputs elsewhere: compute into one buffer, copy each split out
            n, _, h, wd = outputs[0].shape
            self.full = (cp.empty((n, h, wd, sum(splits)), dtype=dtype).transpose(0, 3, 1, 2) if nhwc
                         else cp.empty((n, sum(splits), h, wd), dtype=dtype))
        else:
            self.full = shared if splits else outputs[0]
        # One activation for every split can run inside the cuDNN graph; otherwise each split gets
        # its own in-place epilogue over its channels only.
        uniform = len({(a, tuple(p)) for a, p in per_split}) == 1
        fused_act = _FUSABLE.get(per_split[0][0]) if uniform and not per_split[0][1] else None
        self.epilogues = []
        start = 0
        for index, size in enumerate(splits or [outputs[0].shape[1]]):
            name, params = per_split[index]
            source = self.full[:, start:start + size]
            target = outputs[index] if splits else self.full
            needs_act = bool(name) and not fused_act
            elsewhere = splits and target.data.ptr != source.data.ptr  # e.g. a slice of an elided concat
            if needs_act or elsewhere:
                self.epilogues.append((source, target, name if needs_act else "Identity", params))
            start += size

        io = _dtype(cudnn, dtype)
        graph = cudnn.pygraph(handle=device.cudnn_handle, name=spec.name, io_data_type=io,
                              intermediate_data_type=cudnn.data_type.FLOAT, compute_data_type=cudnn.data_type.FLOAT)
        X = graph.tensor(name="X", dim=list(x.shape), stride=_elem_strides(x), data_type=io)
        W = graph.tensor(name="W", dim=list(self.weight.shape), stride=_elem_strides(self.weight), data_type=io)
        pack = {X: x, W: self.weight}
        y = graph.conv_fprop(image=X, weight=W, padding=pads, stride=strides, dilation=dilations,
                             compute_data_type=cudnn.data_type.FLOAT)
        if self.bias is not None:
            B = graph.tensor(name="B", dim=list(self.bias.shape), stride=_elem_strides(self.bias), data_type=io)
            pack[B] = self.bias
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
        if dtype == np.float32 and not spec.allow_tf32:
            exclude_tf32(cudnn, graph)
        graph.check_support()
        self.graph, self.pack = graph, pack
        self.count = graph.get_execution_plan_count()
        if self.count == 0:
            raise Unsupported("cuDNN offers no execution plan for this convolution")
        self.index = -1
        self.select(int(spec.tactic.split(":")[1]) if spec.tactic and spec.tactic.startswith("cudnn:") else 0)

    @property
    def tactic(self) -> str:
        return f"cudnn:{self.index}"

    def candidates(self) -> list[str]:
        return [f"cudnn:{i}" for i in range(self.count)]

    def select(self, index: int) -> None:
        """Build plan `index` (or the next that builds) and size its workspace."""
        for i in list(range(index, self.count)) + list(range(0, index)):
            try:
                self.graph.build_plan_at_index(i)
            except Exception:
                continue
            self.index = i
            size = self.graph.get_workspace_size_plan_at_index(i)
            self.workspace = self.cp.empty(max(size, 1), dtype=self.cp.uint8)
            return
        raise Unsupported("no cuDNN execution plan builds for this convolution")

    def __call__(self) -> None:
        self.graph.execute_plan_at_index(self.pack, self.workspace, self.index, handle=self.device.cudnn_handle)
        for source, target, name, params in self.epilogues:
            activation_kernel(name, params)(source, target)


def _shared_buffer(cp, outputs: list, splits: list[int]):
    """If the outputs are consecutive channel slices of one buffer (the runtime binds a fused conv's
    outputs so), that buffer as an NCHW view; else None."""
    first = outputs[0]
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
