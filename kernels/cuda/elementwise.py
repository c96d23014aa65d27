"""Element-wise layers, activations, softmax, concat, LRN and GEMMs as CuPy kernels.

Element-wise work is generated CUDA: a chain of steps becomes one ElementwiseKernel that reads each
input once and writes the output once, in float32 arithmetic whatever the storage type. CuPy's
element-wise machinery handles broadcasting and strided (channels-last) views.
"""

from __future__ import annotations

import functools

import numpy as np

from kernels.cuda import GPU_OPS
from kernels.cuda.spec import LayerSpec, Unsupported

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


@functools.lru_cache(maxsize=None)
def _chain_kernel(steps: tuple, operands: int):
    """An ElementwiseKernel for `steps`: ((expr, operand index or 0), ...) over x and operands a1..ak."""
    import cupy as cp

    params = ", ".join(["X x"] + [f"A{i} a{i}" for i in range(1, operands + 1)])
    body = ["float v = (float)x;"]
    for expr, operand in steps:
        if operand:
            body.append(f"{{ float a = (float)a{operand}; v = {expr}; }}")
        else:
            body.append(f"v = {expr};")
    body.append("y = (Y)v;")
    return cp.ElementwiseKernel(params, "Y y", "\n".join(body), f"batchscore_chain_{abs(hash(steps)) % 10**10}")


def activation_kernel(name: str, params):
    """dst = activation(src) in one kernel (src and dst may be the same array)."""
    names = {"LeakyRelu": ["alpha"], "Elu": ["alpha"], "HardSigmoid": ["alpha", "beta"], "Clip": ["min", "max"]}
    p = dict(zip(names.get(name, []), params or []))
    kernel = _chain_kernel(((_unary(name, p), 0),), 0)
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
    def __init__(self, spec: LayerSpec, inputs: list, outputs: list, legacy: bool):
        x = inputs[0]
        axis = spec.attrs.get("axis", 1 if legacy else -1) % x.ndim
        if legacy and axis != x.ndim - 1:
            raise Unsupported("coerced-2-D softmax on a non-last axis")
        self.x, self.y, self.axis = x, outputs[0], axis
        self.log = spec.kind == "LogSoftmax"

    def __call__(self) -> None:
        import cupy as cp

        x = self.x.astype(cp.float32)
        shifted = x - x.max(axis=self.axis, keepdims=True)
        if self.log:
            self.y[...] = shifted - cp.log(cp.exp(shifted).sum(axis=self.axis, keepdims=True))
        else:
            e = cp.exp(shifted)
            self.y[...] = e / e.sum(axis=self.axis, keepdims=True)


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


class Gemm:
    """Y = act(alpha * A' @ B' + beta * C) with cuBLAS in float32 (a classifier head is a small
    share of the time, and fp16 accumulation over K=2048 would cost accuracy)."""

    def __init__(self, spec: LayerSpec, inputs: list, outputs: list):
        import cupy as cp

        a = inputs[0]
        if a is None or a.ndim != 2:
            raise Unsupported("GEMM on a non-2-D activation")
        b_host = spec.consts.get(1)
        if b_host is None:
            raise Unsupported("GEMM with a non-constant B")
        attrs = spec.attrs
        b = b_host.T if attrs.get("transB", 0) else b_host
        self.trans_a = bool(attrs.get("transA", 0))
        self.b = cp.asarray(np.ascontiguousarray(b, dtype=np.float32) * np.float32(attrs.get("alpha", 1.0)))
        c_host = spec.consts.get(2)
        self.c = None if c_host is None else cp.asarray((c_host * attrs.get("beta", 1.0)).astype(np.float32))
        self.a, self.y = a, outputs[0]
        act = attrs.get("activation", "")
        self.epilogue = activation_kernel(act, attrs.get("activation_params", [])) if act else None
        self.scratch = cp.empty(self.y.shape, dtype=cp.float32)

    def __call__(self) -> None:
        import cupy as cp

        a = self.a.T if self.trans_a else self.a
        cp.matmul(a.astype(cp.float32), self.b, out=self.scratch)
        if self.c is not None:
            self.scratch += self.c
        if self.epilogue is not None:
            self.epilogue(self.scratch, self.y)
        else:
            self.y[...] = self.scratch


GPU_OPS.register("Gemm", since=7)(lambda spec, i, o, d: Gemm(spec, i, o))
GPU_OPS.register("Gemm", since=11)(lambda spec, i, o, d: Gemm(spec, i, o))
GPU_OPS.register("FusedGemm", since=1, domain="batchscore")(lambda spec, i, o, d: Gemm(spec, i, o))


class MatMul:
    def __init__(self, spec: LayerSpec, inputs: list, outputs: list):
        import cupy as cp

        bound = _bind_operands(spec, inputs)
        self.a, self.b, self.y = bound[0], bound[1], outputs[0]
        self.scratch = cp.empty(self.y.shape, dtype=cp.float32)

    def __call__(self) -> None:
        import cupy as cp

        cp.matmul(self.a.astype(cp.float32), self.b.astype(cp.float32), out=self.scratch)
        self.y[...] = self.scratch


GPU_OPS.register("MatMul", since=1)(lambda spec, i, o, d: MatMul(spec, i, o))


class LRN:
    def __init__(self, spec: LayerSpec, inputs: list, outputs: list):
        self.x, self.y = inputs[0], outputs[0]
        a = spec.attrs
        self.alpha, self.beta, self.bias, self.size = a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0), a["size"]

    def __call__(self) -> None:
        import cupy as cp

        sq = self.x.astype(cp.float32) ** 2
        channels = sq.shape[1]
        before, after = (self.size - 1) // 2, self.size // 2
        acc = cp.zeros_like(sq)
        for offset in range(-before, after + 1):
            lo, hi = max(0, -offset), min(channels, channels - offset)
            acc[:, lo:hi] += sq[:, lo + offset:hi + offset]
        self.y[...] = self.x / (self.bias + self.alpha / self.size * acc) ** self.beta


GPU_OPS.register("LRN", since=1)(lambda spec, i, o, d: LRN(spec, i, o))
