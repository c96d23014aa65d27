"""Element-wise layers, activations, softmax, concat, LRN and GEMMs as CuPy kernels.

Element-wise work is generated CUDA: a chain of steps becomes one ElementwiseKernel that reads each
input once and writes the output once, in float32 arithmetic whatever the storage type. CuPy's
element-wise machinery handles broadcasting and strided (channels-last) views.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from kernels.cuda import GPU_OPS
from kernels.cuda.spec import LayerSpec, Unsupported

log = logging.getLogger("batchscore.gpu")

# ONNX op -> C expression over the running value v and the operand a (binary ops).
_BINARY = {"Add": "v + a", "Sub": "v - a", "Mul": "v * a", "Div": "v / a", "Max": "fmaxf(v, a)",
           "Min": "fminf(v, a)", "Pow": "powf(v, a)", "Sum": "v + a"}
_SWAPPED = {"Sub": "a - v", "Div": "a / v", "Pow": "powf(a, v)"}


def _unary(op: str, p: dict) -> str:
    alpha, beta = p.get("alpha"), p.get("beta")
    table = {
        "Relu": "(v > 0.f ? v : 0.f)", "Sigmoid": "(1.f / (1.f + expf(-v)))", "Tanh": "tanhf(v)",
        "Exp": "expf(v)", "Log": "logf(v)", "Sqrt": "sqrtf(v)", "Neg": "(-v)", "Abs": "fabsf(v)",
        "Reciprocal": "(1.f / v)", "Erf": "erff(v)", "Identity": "v", "SiLU": "(v / (1.f + expf(-v)))",
        "Softplus": "(v > 20.f ? v : log1pf(expf(v)))",
        "LeakyRelu": f"(v >= 0.f ? v : {alpha if alpha is not None else 0.01}f * v)",
        "Elu": f"(v > 0.f ? v : {alpha if alpha is not None else 1.0}f * (expf(v) - 1.f))",
        "HardSigmoid": f"fmaxf(0.f, fminf(1.f, {alpha if alpha is not None else 0.2}f * v + {beta if beta is not None else 0.5}f))",
        "HardSwish": "(v * fmaxf(0.f, fminf(1.f, v / 6.f + 0.5f)))",
        "Clip": f"fminf(fmaxf(v, {_c(p.get('min', -3.4e38))}), {_c(p.get('max', 3.4e38))})",
    }
    if op not in table:
        raise Unsupported(f"no GPU expression for {op}")
    return table[op]


def _c(value: float) -> str:
    value = float(value)
    if value >= 3.4e38:
        return "3.4e38f"
    if value <= -3.4e38:
        return "-3.4e38f"
    return f"{value!r}f"


_PLACEHOLDERS = "ABCDEFGHIJKLMNOPQRSUVW"


@functools.lru_cache(maxsize=None)
def _chain_kernel(steps: tuple, operands: int):
    """An ElementwiseKernel for `steps`: ((expr, operand index or 0), ...) over x and operands a1..ak."""
    import cupy as cp

    if operands > len(_PLACEHOLDERS):
        raise Unsupported(f"an element-wise chain with {operands} operands")
    # CuPy type placeholders are single capital letters: one per operand, so each keeps its dtype
    params = ", ".join(["X x"] + [f"{_PLACEHOLDERS[i - 1]} a{i}" for i in range(1, operands + 1)])
    body = ["float v = (float)x;"]
    for expr, operand in steps:
        if operand:
            body.append(f"{{ float a = (float)a{operand}; v = {expr}; }}")
        else:
            body.append(f"v = {expr};")
    body.append("y = (Y)v;")
    return cp.ElementwiseKernel(params, "Y y", "\n".join(body), f"batchscore_chain_{abs(hash(steps)) % 10**10}")


# A fused layer's activation_params, in order (kernels/cpu/activations.py), as _unary's keywords.
_ACTIVATION_PARAMS = {"LeakyRelu": ["alpha"], "Elu": ["alpha"], "HardSigmoid": ["alpha", "beta"],
                      "Clip": ["min", "max"]}


def activation_expr(name: str, params) -> str:
    """A fused layer's activation ("" for none) as a C expression over the float `v`, for kernels
    that apply it inline (the conv and GEMM epilogues); Unsupported if there is no GPU form."""
    if not name:
        return "v"
    p = {key: float(value) for key, value in zip(_ACTIVATION_PARAMS.get(name, []), params or [])}
    return _unary(name, p)


def activation_kernel(name: str, params):
    """dst = activation(src) in one kernel (src and dst may be the same array)."""
    kernel = _chain_kernel(((activation_expr(name, params), 0),), 0)
    return lambda src, dst: kernel(src, dst)


def _step_expr(op: str, attrs: dict, operand_slots: list[int], consts: dict) -> tuple[str, int]:
    """One ONNX element-wise op as (C expression, operand number or 0). operand_slots lists, for
    each ONNX input of the op, -1 for the running value or k >= 1 for operand k."""
    if op in _BINARY or op == "Sum":
        if len(operand_slots) != 2:
            raise Unsupported(f"{op} with {len(operand_slots)} inputs")
        first, second = operand_slots
        if first == -1 and second != -1:
            return _BINARY[op], second
        if second == -1 and first != -1:
            if op in ("Add", "Mul", "Max", "Min", "Sum"):
                return _BINARY[op], first
            return _SWAPPED[op], first
        raise Unsupported(f"{op} of the running value with itself")
    p = dict(attrs)
    if op == "Clip" and len(operand_slots) > 1:  # Clip-11: min/max are constant inputs
        for key, slot in zip(("min", "max"), operand_slots[1:]):
            if slot > 0 and slot in consts:
                p[key] = float(np.asarray(consts[slot]).reshape(-1)[0])
    return _unary(op, p), 0


class Chain:
    def __init__(self, steps: list, inputs: list, outputs: list):
        self.kernel = _chain_kernel(tuple(steps), len(inputs) - 1)
        self.args = list(inputs) + list(outputs[:1])

    def __call__(self) -> None:
        self.kernel(*self.args)


def _bind_operands(spec: LayerSpec, inputs: list):
    """Constant operands go to the device once; activations are the bound buffers."""
    import cupy as cp

    bound = []
    for index, array in enumerate(inputs):
        if array is None and index in spec.consts:
            array = cp.asarray(spec.consts[index])
        bound.append(array)
    return bound


@GPU_OPS.register("ElementwiseChain", since=1, domain="batchscore")
def make_chain(spec: LayerSpec, inputs: list, outputs: list, device) -> Chain:
    steps = []
    for key, slots, attrs in spec.attrs["steps"]:
        op = key.rsplit("-", 1)[0].split(":")[-1]
        steps.append(_step_expr(op, attrs or {}, list(slots), spec.consts))
    return Chain(steps, _bind_operands(spec, inputs), outputs)


def _simple(op: str):
    def make(spec: LayerSpec, inputs: list, outputs: list, device) -> Chain:
        bound = _bind_operands(spec, inputs)
        if op != "Clip" and any(b is None for b in bound):
            raise Unsupported(f"{op} with an omitted input")
        if op == "Sum" and len(bound) > 2:
            steps = [(_BINARY["Add"], i) for i in range(1, len(bound))]
        elif len(bound) == 2 and op in _BINARY:
            steps = [(_BINARY[op], 1)]
        elif op == "Clip":  # bounds are attributes (Clip-6) or constant inputs (Clip-11)
            steps = [_step_expr(op, spec.attrs, [-1] + list(range(1, len(inputs))), spec.consts)]
            bound = bound[:1]
        else:
            steps = [(_unary(op, spec.attrs), 0)]
        return Chain(steps, bound, outputs)

    return make


for _op, _since in [("Relu", 6), ("Sigmoid", 6), ("Tanh", 6), ("Exp", 6), ("Log", 6), ("Sqrt", 6), ("Neg", 6),
                    ("Abs", 6), ("Reciprocal", 6), ("LeakyRelu", 6), ("Elu", 6), ("HardSigmoid", 6), ("HardSwish", 14),
                    ("Softplus", 1), ("Erf", 9), ("Add", 7), ("Sub", 7), ("Mul", 7), ("Div", 7), ("Max", 6), ("Min", 6),
                    ("Sum", 6), ("Clip", 6), ("Clip", 11)]:
    GPU_OPS.register(_op, since=_since)(_simple(_op))


class Softmax:
    """Along one axis, in float32 scratch buffers allocated once (nothing is allocated per run, so
    the pass can be captured in a CUDA graph)."""

    def __init__(self, spec: LayerSpec, inputs: list, outputs: list, legacy: bool):
        import cupy as cp

        x = inputs[0]
        axis = spec.attrs.get("axis", 1 if legacy else -1) % x.ndim
        if legacy and axis != x.ndim - 1:
            raise Unsupported("coerced-2-D softmax on a non-last axis")
        self.x, self.y, self.axis = x, outputs[0], axis
        self.log = spec.kind == "LogSoftmax"
        self.work = cp.empty(x.shape, dtype=cp.float32)
        reduced = list(x.shape)
        reduced[axis] = 1
        self.peak = cp.empty(reduced, dtype=cp.float32)
        self.total = cp.empty(reduced, dtype=cp.float32)

    def __call__(self) -> None:
        import cupy as cp

        cp.copyto(self.work, self.x)
        cp.amax(self.work, axis=self.axis, keepdims=True, out=self.peak)
        cp.subtract(self.work, self.peak, out=self.work)
        if self.log:
            cp.exp(self.work, out=self.y)  # y as scratch for exp: its sum is all we need
            cp.sum(self.y.astype(cp.float32, copy=False), axis=self.axis, keepdims=True, out=self.total)
            cp.log(self.total, out=self.total)
            cp.subtract(self.work, self.total, out=self.y)
        else:
            cp.exp(self.work, out=self.work)
            cp.sum(self.work, axis=self.axis, keepdims=True, out=self.total)
            cp.divide(self.work, self.total, out=self.y)


for _kind in ("Softmax", "LogSoftmax"):
    GPU_OPS.register(_kind, since=1)(lambda spec, i, o, d: Softmax(spec, i, o, legacy=True))
    GPU_OPS.register(_kind, since=13)(lambda spec, i, o, d: Softmax(spec, i, o, legacy=False))


class Concat:
    def __init__(self, spec: LayerSpec, inputs: list, outputs: list):
        self.inputs, self.out, self.axis = inputs, outputs[0], spec.attrs.get("axis", 0)

    def __call__(self) -> None:
        import cupy as cp

        cp.concatenate(self.inputs, axis=self.axis, out=self.out)


GPU_OPS.register("Concat", since=4)(lambda spec, i, o, d: Concat(spec, _bind_operands(spec, i), o))


class CudnnMatmul:
    """Y = act(A @ B + C) as one cuDNN graph (cuBLAS calls cannot be captured in a CUDA graph by
    CuPy, cuDNN's can). A is the activation, B and C constants; float32 accumulation."""

    def __init__(self, spec: LayerSpec, a, b_host: np.ndarray, c_host: np.ndarray | None, y, activation: str,
                 params, device):
        import cupy as cp

        from kernels.cuda import import_cudnn

        cudnn = import_cudnn()

        if a.ndim != 2 or y.ndim != 2:
            raise Unsupported("a GEMM on a non-2-D activation")
        io = {np.dtype("float16"): cudnn.data_type.HALF, np.dtype("float32"): cudnn.data_type.FLOAT}.get(np.dtype(a.dtype))
        if io is None:
            raise Unsupported(f"GEMM in {a.dtype}")
        self.device = device
        self.a = a if a.flags.c_contiguous else None
        self.a_copy = None if self.a is not None else cp.empty(a.shape, dtype=a.dtype)
        self.a_source = a
        a3 = (self.a if self.a is not None else self.a_copy).reshape(1, *a.shape)
        self.b = cp.asarray(np.ascontiguousarray(b_host, dtype=a.dtype)).reshape(1, *b_host.shape)
        fused = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "SiLU": "swish", "": None}
        self.epilogue = None
        if activation not in fused:
            self.epilogue = activation_kernel(activation, params)
        self.y_full = y if (y.flags.c_contiguous and y.dtype == a.dtype) else cp.empty(y.shape, dtype=a.dtype)
        self.y = y
        y3 = self.y_full.reshape(1, *y.shape)
        graph = cudnn.pygraph(handle=device.cudnn_handle, name=spec.name, io_data_type=io,
                              intermediate_data_type=cudnn.data_type.FLOAT, compute_data_type=cudnn.data_type.FLOAT)
        A = graph.tensor(name="A", dim=list(a3.shape), stride=[st // a3.itemsize for st in a3.strides], data_type=io)
        B = graph.tensor(name="B", dim=list(self.b.shape), stride=[st // self.b.itemsize for st in self.b.strides], data_type=io)
        pack = {A: a3, B: self.b}
        out = graph.matmul(A=A, B=B, compute_data_type=cudnn.data_type.FLOAT)
        if c_host is not None:
            self.c = cp.asarray(np.broadcast_to(c_host, (y.shape[1],)).astype(a.dtype)).reshape(1, 1, -1)
            C = graph.tensor(name="C", dim=list(self.c.shape), stride=[st // self.c.itemsize for st in self.c.strides], data_type=io)
            pack[C] = self.c
            out = graph.add(a=out, b=C, compute_data_type=cudnn.data_type.FLOAT)
        if fused.get(activation):
            out = getattr(graph, fused[activation])(input=out, compute_data_type=cudnn.data_type.FLOAT)
        out.set_output(True).set_data_type(io).set_dim(list(y3.shape)).set_stride([st // y3.itemsize for st in y3.strides])
        pack[out] = y3
        try:
            graph.validate()
            graph.build_operation_graph()
            graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
            if a.dtype == np.float32 and not spec.allow_tf32:
                from kernels.cuda.conv import exclude_tf32

                exclude_tf32(cudnn, graph)
            graph.check_support()
            graph.build_plans()
        except Exception as exc:
            raise Unsupported(f"cuDNN cannot build this GEMM: {exc}") from None
        self.graph, self.pack = graph, pack
        self.workspace = cp.empty(max(graph.get_workspace_size(), 1), dtype=cp.uint8)

    def __call__(self) -> None:
        import cupy as cp

        if self.a_copy is not None:
            cp.copyto(self.a_copy, self.a_source)
        self.graph.execute(self.pack, self.workspace, handle=self.device.cudnn_handle)
        if self.epilogue is not None:
            self.epilogue(self.y_full, self.y)
        elif self.y_full is not self.y:
            cp.copyto(self.y, self.y_full)


def _make_gemm(spec: LayerSpec, inputs: list, outputs: list, device):
    attrs = spec.attrs
    a, b_host = inputs[0], spec.consts.get(1)
    if a is None or b_host is None:
        raise Unsupported("GEMM with a non-constant B")
    if attrs.get("transA", 0):
        a = a.T
    b = (b_host.T if attrs.get("transB", 0) else b_host).astype(np.float64) * attrs.get("alpha", 1.0)
    c_host = spec.consts.get(2)
    if c_host is not None:
        c_host = np.asarray(c_host, dtype=np.float64) * attrs.get("beta", 1.0)
    if len(inputs) > 2 and inputs[2] is not None:  # weights arrive as None with their host copy in consts
        raise Unsupported("GEMM with a non-constant C")
    return _matmul_or_sgemm(spec, a, b, c_host, outputs[0], attrs.get("activation", ""),
                            attrs.get("activation_params", []), device)


def _matmul_or_sgemm(spec: LayerSpec, a, b, c_host, y, activation: str, params, device):
    """cuDNN's matmul graph; for FP32 where cuDNN offers none (no TF32 engines allowed), the tiled
    SGEMM raw kernel, which is exact FP32 and capturable. A plan whose tactic says "sgemm" skips
    the cuDNN attempt (it failed when the plan was built on this GPU type)."""
    from kernels.cuda.gemm import TiledSgemm

    if spec.tactic != TiledSgemm.tactic:
        try:
            c = None if c_host is None else np.asarray(c_host)
            if c is not None and c.ndim == 2 and c.shape[0] != 1:
                raise Unsupported(f"a bias of shape {c.shape} (the cuDNN graph adds one row to every row)")
            return CudnnMatmul(spec, a, b, None if c is None else c.reshape(-1), y, activation, params, device)
        except Unsupported as why:
            if a.dtype != np.float32:
                raise
            log.info("GEMM %s: %s; using the tiled SGEMM kernel", spec.name, why)
    return TiledSgemm(a, b, c_host, y, activation, params)


GPU_OPS.register("Gemm", since=7)(_make_gemm)
GPU_OPS.register("Gemm", since=11)(_make_gemm)
GPU_OPS.register("FusedGemm", since=1, domain="batchscore")(_make_gemm)


@GPU_OPS.register("MatMul", since=1)
def _make_matmul(spec: LayerSpec, inputs: list, outputs: list, device):
    if spec.consts.get(1) is None or inputs[0] is None:
        raise Unsupported("MatMul of two activations")
    return _matmul_or_sgemm(spec, inputs[0], spec.consts[1], None, outputs[0], "", [], device)


class LRN:
    def __init__(self, spec: LayerSpec, inputs: list, outputs: list):
        import cupy as cp

        self.x, self.y = inputs[0], outputs[0]
        a = spec.attrs
        self.alpha, self.beta, self.bias, self.size = a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0), a["size"]
        self.sq = cp.empty(self.x.shape, dtype=cp.float32)
        self.acc = cp.empty(self.x.shape, dtype=cp.float32)
        self.finish = cp.ElementwiseKernel(
            "X x, float32 acc, float32 bias, float32 scale, float32 beta", "Y y",
            "y = (Y)((float)x / powf(bias + scale * acc, beta))", "batchscore_lrn")

    def __call__(self) -> None:
        import cupy as cp

        cp.copyto(self.sq, self.x)
        cp.multiply(self.sq, self.sq, out=self.sq)
        self.acc.fill(0)
        channels = self.sq.shape[1]
        before, after = (self.size - 1) // 2, self.size // 2
        for offset in range(-before, after + 1):
            lo, hi = max(0, -offset), min(channels, channels - offset)
            cp.add(self.acc[:, lo:hi], self.sq[:, lo + offset:hi + offset], out=self.acc[:, lo:hi])
        self.finish(self.x, self.acc, self.bias, self.alpha / self.size, self.beta, self.y)


GPU_OPS.register("LRN", since=1)(lambda spec, i, o, d: LRN(spec, i, o))
