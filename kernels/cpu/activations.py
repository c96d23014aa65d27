"""Activations applied in place, as the epilogue of a fused layer (FusedConv, FusedGemm).

`apply_activation(y, name, params, out=None)` computes act(y) into `out` (y itself when out is None),
reusing y's memory wherever the formula allows: Relu is np.maximum(y, 0, out=y). The formulas are
the standalone ONNX kernels' in kernels/cpu/elementwise.py, operation for operation, so a fused
layer gives the same bits as Conv followed by Relu run one by one. float32 and float64 take the
in-place path; any other type (float16, bfloat16, integers) runs the standalone kernel and copies
its result, so the narrow types keep the standalone kernels' widen-compute-round policy exactly.

Activations by name, with their `params` (the FusedConv / FusedGemm `activation_params`):

    Relu []            LeakyRelu [alpha]       Clip [min, max]        Sigmoid []
    HardSigmoid [alpha, beta]                  HardSwish []           SiLU []  (x * Sigmoid(x))
    Tanh []            Elu [alpha]             Softplus []

Missing params take the ONNX defaults; an omitted Clip bound is -inf / +inf.

`activation_from_onnx` maps one ONNX node (op type, attributes, constant Clip bounds) onto that
vocabulary; the fusion passes use it. SiLU has no ONNX op: it is the two-node pattern
Mul(x, Sigmoid(x)), which the passes match themselves.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from kernels.cpu import elementwise as onnx_ops
from kernels.registry import KernelError

_FLOAT_MAX = 3.4028234663852886e38  # Clip-6's default bounds (float32's max)

# name -> the ONNX defaults of its params, in order.
ACTIVATION_DEFAULTS: dict[str, tuple[float, ...]] = {
    "Relu": (),
    "LeakyRelu": (0.01,),
    "Clip": (-math.inf, math.inf),
    "Sigmoid": (),
    "HardSigmoid": (0.2, 0.5),
    "HardSwish": (),
    "SiLU": (),
    "Tanh": (),
    "Elu": (1.0,),
    "Softplus": (),
}
ACTIVATIONS = tuple(ACTIVATION_DEFAULTS)

# ONNX op type -> (activation, the ONNX attributes that become its params). Clip is special-cased
# in activation_from_onnx: its bounds are attributes before opset 11 and inputs from 11 on.
ONNX_ACTIVATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Relu": ("Relu", ()),
    "LeakyRelu": ("LeakyRelu", ("alpha",)),
    "Sigmoid": ("Sigmoid", ()),
    "HardSigmoid": ("HardSigmoid", ("alpha", "beta")),
    "HardSwish": ("HardSwish", ()),
    "Tanh": ("Tanh", ()),
    "Elu": ("Elu", ("alpha",)),
    "Softplus": ("Softplus", ()),
    "Clip": ("Clip", ("min", "max")),
}


def activation_params(name: str, params: Sequence[float] | None) -> tuple[float, ...]:
    """The full parameter tuple of an activation (defaults filled in), or a KernelError."""
    if name not in ACTIVATION_DEFAULTS:
        raise KernelError(f"unknown activation '{name}'; known: {', '.join(ACTIVATIONS)}")
    defaults = ACTIVATION_DEFAULTS[name]
    params = tuple(float(p) for p in (params or ()))
    if len(params) > len(defaults):
        raise KernelError(f"activation {name} takes {len(defaults)} params {list(defaults)}, got {list(params)}")
    return params + defaults[len(params):]


def activation_from_onnx(op_type: str, attrs: dict, bounds: Sequence[np.ndarray | None] | None = None
                         ) -> tuple[str, list[float]] | None:
    """(activation, params) for an ONNX activation node, or None if it is not one we can fuse.

    For Clip, `bounds` says which spelling the node uses: None for Clip before opset 11 (bounds
    are the attributes `min`/`max`, defaulting to float32's range), or Clip-11's min and max inputs
    as constant arrays (None where omitted, which leaves that side open).
    """
    if op_type not in ONNX_ACTIVATIONS:
        return None
    name, attr_names = ONNX_ACTIVATIONS[op_type]
    if op_type == "Clip":
        if bounds is None:
            return name, [float(attrs.get("min", -_FLOAT_MAX)), float(attrs.get("max", _FLOAT_MAX))]
        low, high = (list(bounds) + [None, None])[:2]
        if any(b is not None and np.size(b) != 1 for b in (low, high)):
            return None
        return name, [-math.inf if low is None else float(np.asarray(low).reshape(())),
                      math.inf if high is None else float(np.asarray(high).reshape(()))]
    defaults = ACTIVATION_DEFAULTS[name]
    return name, [float(attrs.get(a, d)) for a, d in zip(attr_names, defaults)]


# ----------------------------------------------------------------------------------------------
# In-place formulas (float32 / float64). Each writes act(y) into out; out may be y itself.


def _relu(y, out, p):
    np.maximum(y, y.dtype.type(0), out=out)


def _leaky_relu(y, out, p):
    negative = y < 0
    if out is not y:
        np.copyto(out, y)
    np.multiply(out, y.dtype.type(p[0]), out=out, where=negative)


def _clip(y, out, p):
    np.maximum(y, y.dtype.type(p[0]), out=out)
    np.minimum(out, y.dtype.type(p[1]), out=out)


def _sigmoid_into(y, out):
    # The standalone kernel's formula: exp(-|y|) never overflows; 1/(1+e) for y >= 0, e/(1+e) else.
    positive = y >= 0
    e = np.abs(y)
    np.negative(e, out=e)
    np.exp(e, out=e)
    d = 1 + e
    np.divide(e, d, out=out)
    np.divide(1, d, out=d)
    np.copyto(out, d, where=positive)


def _sigmoid(y, out, p):
    _sigmoid_into(y, out)


def _silu(y, out, p):
    s = np.empty_like(y)
    _sigmoid_into(y, s)
    np.multiply(y, s, out=out)


def _hard_sigmoid(y, out, p):
    np.multiply(y, y.dtype.type(p[0]), out=out)
    np.add(out, y.dtype.type(p[1]), out=out)
    np.clip(out, 0, 1, out=out)


def _hard_swish(y, out, p):
    t = np.multiply(y, y.dtype.type(1 / 6))
    np.add(t, y.dtype.type(0.5), out=t)
    np.clip(t, 0, 1, out=t)
    np.multiply(y, t, out=out)


def _tanh(y, out, p):
    np.tanh(y, out=out)


def _elu(y, out, p):
    negative = ~(y > 0)  # NaN takes the expm1 branch, as in np.where(y > 0, ...)
    t = np.minimum(y, 0)
    np.expm1(t, out=t)
    np.multiply(t, y.dtype.type(p[0]), out=t)
    if out is not y:
        np.copyto(out, y)
    np.copyto(out, t, where=negative)


def _softplus(y, out, p):
    t = np.abs(y)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.log1p(t, out=t)
    np.maximum(y, 0, out=out)
    np.add(out, t, out=out)


_IN_PLACE: dict[str, Callable] = {
    "Relu": _relu, "LeakyRelu": _leaky_relu, "Clip": _clip, "Sigmoid": _sigmoid, "SiLU": _silu,
    "HardSigmoid": _hard_sigmoid, "HardSwish": _hard_swish, "Tanh": _tanh, "Elu": _elu, "Softplus": _softplus,
}


def _standalone(y: np.ndarray, name: str, p: tuple[float, ...]) -> np.ndarray:
    """The ONNX kernels themselves, for the dtypes the in-place formulas do not cover."""
    if name == "Relu":
        return onnx_ops.relu(y)
    if name == "LeakyRelu":
        return onnx_ops.leaky_relu(y, alpha=p[0])
    if name == "Clip":
        return onnx_ops.clip_6(y, min=p[0], max=p[1])
    if name == "Sigmoid":
        return onnx_ops.sigmoid(y)
    if name == "SiLU":
        return onnx_ops.mul(y, onnx_ops.sigmoid(y))
    if name == "HardSigmoid":
        return onnx_ops.hard_sigmoid(y, alpha=p[0], beta=p[1])
    if name == "HardSwish":
        return onnx_ops.hard_swish(y)
    if name == "Tanh":
        return onnx_ops.tanh(y)
    if name == "Elu":
        return onnx_ops.elu(y, alpha=p[0])
    return onnx_ops.softplus(y)


def apply_activation(y: np.ndarray, name: str, params: Sequence[float] | None = (),
                     out: np.ndarray | None = None) -> np.ndarray:
    """act(y) written into `out` (default: y, in place); returns the array written.

    `name` "" (or None) is the identity: y is copied into out when out is another array.
    """
    if out is None:
        out = y
    elif out.shape != y.shape or out.dtype != y.dtype:
        raise KernelError(f"activation {name or 'none'}: out is {out.dtype} {out.shape}, "
                          f"the result is {y.dtype} {y.shape}")
    if not name:
        if out is not y:
            np.copyto(out, y)
        return out
    p = activation_params(name, params)
    if y.dtype in (np.float32, np.float64):
        _IN_PLACE[name](y, out, p)
    else:
        np.copyto(out, _standalone(y, name, p))
    return out
