"""Element-wise ops: activations, unary math, broadcasting binary and variadic ops, comparisons.

Every op here broadcasts the numpy way (ONNX opset 7+; older models never reach the kernels) and
keeps its input's element type. float16 and the narrow ml_dtypes floats (bfloat16, float8) are
widened to float32 for transcendental math and rounded back once, at the end.
"""

import math

import numpy as np

from kernels.cpu._registry import op
from kernels.registry import KernelError


# ----------------------------------------------------------------------------------------------
# Shared helpers


def _describe(arrays) -> str:
    return " and ".join(f"{a.dtype} {tuple(a.shape)}" for a in arrays)


def _broadcast_shape(op_name: str, *arrays: np.ndarray) -> tuple:
    """The broadcast shape of the inputs, or a KernelError naming every shape."""
    try:
        return np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        shapes = ", ".join(str(tuple(a.shape)) for a in arrays)
        raise KernelError(f"{op_name}: input shapes {shapes} do not broadcast together") from None


def _same_dtype(op_name: str, *arrays: np.ndarray) -> None:
    """ONNX types these inputs with one T; numpy would silently promote a mismatch."""
    first = arrays[0].dtype
    if any(a.dtype != first for a in arrays[1:]):
        raise KernelError(f"{op_name}: inputs must share one element type, got {_describe(arrays)}")


def _checked(op_name: str, *arrays: np.ndarray) -> None:
    _same_dtype(op_name, *arrays)
    _broadcast_shape(op_name, *arrays)


def _is_narrow_float(dtype: np.dtype) -> bool:
    """float16, or an ml_dtypes float (bfloat16, float8...), whose numpy dtype kind is 'V'."""
    return dtype == np.float16 or (dtype.kind == "V" and dtype.name.startswith(("bfloat", "float")))


def _working(x: np.ndarray) -> np.ndarray:
    """x in a precision fit for transcendental math: narrow floats become float32."""
    return x.astype(np.float32) if _is_narrow_float(x.dtype) else x


def _float_unary(x: np.ndarray, fn) -> np.ndarray:
    """fn(x) computed at working precision and returned in x's own dtype."""
    return np.asarray(fn(_working(x))).astype(x.dtype, copy=False)


def _scalar(x: np.ndarray, value):
    """An attribute value as a scalar of x's type, so arithmetic keeps x's dtype."""
    return x.dtype.type(value)


# ----------------------------------------------------------------------------------------------
# Activations


@op("Relu", since=6)
def relu(x):
    return np.maximum(x, x.dtype.type(0))


@op("LeakyRelu", since=6)
def leaky_relu(x, *, alpha=0.01):
    x = np.asarray(x)
    return np.where(x < 0, x * _scalar(x, alpha), x)


@op("PRelu", since=7)
def prelu(x, slope):
    """x where x >= 0, else slope * x; slope broadcasts one way, to x's shape (unidirectional)."""
    _same_dtype("PRelu", x, slope)
    try:
        fits = np.broadcast_shapes(x.shape, slope.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise KernelError(
            f"PRelu: slope of shape {tuple(slope.shape)} does not broadcast to X of shape {tuple(x.shape)} "
            f"(unidirectional broadcasting: slope may only have fewer or size-1 dimensions)"
        )
    return np.where(x < 0, x * slope, x).astype(x.dtype, copy=False)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-|x|) never overflows: 1/(1+e) for x >= 0, e/(1+e) = 1 - 1/(1+e) for x < 0.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@op("Sigmoid", since=6)
def sigmoid(x):
    """Stable for large |x|: never evaluates exp of a positive number."""
    return _float_unary(x, _sigmoid)


@op("Tanh", since=6)
def tanh(x):
    return _float_unary(x, np.tanh)


@op("HardSigmoid", since=6)
def hard_sigmoid(x, *, alpha=0.2, beta=0.5):
    def fn(w):
        return np.clip(w * _scalar(w, alpha) + _scalar(w, beta), 0, 1)

    return _float_unary(x, fn)


@op("HardSwish", since=14)
def hard_swish(x):
    """x * HardSigmoid(x) with alpha = 1/6, beta = 0.5."""

    def fn(w):
        return w * np.clip(w * _scalar(w, 1 / 6) + _scalar(w, 0.5), 0, 1)

    return _float_unary(x, fn)


@op("Elu", since=6)
def elu(x, *, alpha=1.0):
    def fn(w):
        # expm1 of min(w, 0): exact near 0 and no overflow for large positive w.
        return np.where(w > 0, w, _scalar(w, alpha) * np.expm1(np.minimum(w, 0)))

    return _float_unary(x, fn)


@op("Selu", since=6)
def selu(x, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    def fn(w):
        return _scalar(w, gamma) * np.where(w > 0, w, _scalar(w, alpha) * np.expm1(np.minimum(w, 0)))

    return _float_unary(x, fn)


@op("Shrink", since=9)
def shrink(x, *, bias=0.0, lambd=0.5):
    """x - bias above lambd, x + bias below -lambd, 0 between; integer inputs keep their dtype."""
    w = x.astype(np.float64)
    y = np.where(w < -lambd, w + bias, np.where(w > lambd, w - bias, 0.0))
    return y.astype(x.dtype)


@op("Sign", since=9)
def sign(x):
    return np.sign(x).astype(x.dtype, copy=False)


@op("Softplus", since=1)
def softplus(x):
    """log(1 + exp(x)) as max(x, 0) + log1p(exp(-|x|)): no overflow, no lost tail."""
    return _float_unary(x, lambda w: np.maximum(w, 0) + np.log1p(np.exp(-np.abs(w))))


# ----------------------------------------------------------------------------------------------
# Unary math

# erf(x) for |x| < 2 is its Maclaurin series, 2/sqrt(pi) * sum (-1)^k x^(2k+1) / (k! (2k+1));
# 32 terms reach float64 rounding there. For |x| >= 2, erf = 1 - erfc, with erfc from its
# continued fraction exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), which
# converges fast for large x; 50 levels reach float64 rounding from x = 2 up.
_ERF_SPLIT = 2.0
_ERF_SERIES = tuple(
    (-1) ** k / (math.factorial(k) * (2 * k + 1)) * 2 / math.sqrt(math.pi) for k in range(32)
)
_ERFC_DEPTH = 50


def _erf_series(x: np.ndarray) -> np.ndarray:
    z = x * x
    acc = np.full_like(x, _ERF_SERIES[-1])
    for c in reversed(_ERF_SERIES[:-1]):
        acc = acc * z + c
    return acc * x


def _erfc_continued_fraction(x: np.ndarray) -> np.ndarray:
    """erfc(x) for x >= 2 (evaluated bottom-up, a fixed depth)."""
    t = x.copy()
    for k in range(_ERFC_DEPTH, 0, -1):
        t = x + (k / 2) / t
    return np.exp(-x * x) / math.sqrt(math.pi) / t


def _erf64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    out = np.empty_like(x)
    small = np.abs(x) < _ERF_SPLIT  # NaN falls to the other branch and stays NaN
    out[small] = _erf_series(x[small])
    big = x[~small]
    out[~small] = np.sign(big) * (1 - _erfc_continued_fraction(np.abs(big)))
    return out


@op("Erf", since=9)
def erf(x):
    """Error function, accurate to about 1e-15 (computed in float64, then rounded to x's dtype)."""
    x = np.asarray(x)
    return _erf64(x).astype(x.dtype)


@op("Exp", since=6)
def exp(x):
    return _float_unary(x, np.exp)


@op("Log", since=6)
def log(x):
    return _float_unary(x, np.log)


@op("Sqrt", since=6)
def sqrt(x):
    return _float_unary(x, np.sqrt)


@op("Reciprocal", since=6)
def reciprocal(x):
    return _float_unary(x, lambda w: 1 / w)


@op("Neg", since=6)
def neg(x):
    return np.negative(x)


@op("Abs", since=6)
def abs_(x):
    return np.abs(x)


@op("Clip", since=6)
def clip_6(x, *, min=-3.4028234663852886e38, max=3.4028234663852886e38):  # noqa: A002 (ONNX names)
    """Clip-6: bounds are float attributes (defaults: float32's lowest and max)."""
    w = _working(x)
    return np.minimum(np.maximum(w, _scalar(w, min)), _scalar(w, max)).astype(x.dtype, copy=False)


def _clip_bound(x: np.ndarray, bound, name: str):
    if bound is None or bound.size == 0:
        return None
    if bound.size != 1:
        raise KernelError(f"Clip: '{name}' must be a scalar, got shape {tuple(bound.shape)}")
    if bound.dtype != x.dtype:
        raise KernelError(f"Clip: '{name}' has dtype {bound.dtype}, input has {x.dtype}")
    return bound.reshape(())  # a shape-(1,) bound must not grow a rank-0 input


@op("Clip", since=11)
def clip_11(x, min=None, max=None):  # noqa: A002 (ONNX names)
    """Clip-11+: optional scalar inputs; min > max gives max everywhere (Min(max, Max(x, min)))."""
    low = _clip_bound(x, min, "min")
    high = _clip_bound(x, max, "max")
    out = x
    if low is not None:
        out = np.maximum(out, low)
    if high is not None:
        out = np.minimum(out, high)
    return out.copy() if out is x else out


# ----------------------------------------------------------------------------------------------
# Binary arithmetic (numpy broadcasting, one element type)


@op("Add", since=7)
def add(a, b):
    _checked("Add", a, b)
    return np.add(a, b)


@op("Sub", since=7)
def sub(a, b):
    _checked("Sub", a, b)
    return np.subtract(a, b)


@op("Mul", since=7)
def mul(a, b):
    _checked("Mul", a, b)
    return np.multiply(a, b)


def _truncating_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer a / b rounded toward zero (C semantics), exactly, without going through floats."""
    quotient = np.floor_divide(a, b)
    if a.dtype.kind == "u":
        return quotient
    # floor and trunc differ by one where the division is inexact and the signs differ.
    inexact = (quotient * b) != a
    return quotient + (inexact & ((a < 0) != (b < 0))).astype(quotient.dtype)


@op("Div", since=7)
def div(a, b):
    """Integer division truncates toward zero (ONNX Div-14 spells it out; earlier ORT did the same)."""
    _checked("Div", a, b)
    if a.dtype.kind in "iu":
        return _truncating_divide(a, b)
    return np.divide(a, b)


def _int_power(base: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """Integer base to integer exponents, wrapping like C; negative exponents truncate 1/b^n."""
    wide = np.uint64 if base.dtype.kind == "u" else np.int64
    negative = exponent < 0
    powered = np.power(base.astype(wide), np.where(negative, 0, exponent).astype(wide))
    if negative.any():
        # 1 / b^n truncated: 1 for b = 1, +-1 for b = -1 by parity, 0 otherwise (b = 0 included).
        odd = (exponent % 2) != 0
        inverse = np.where(base == 1, 1, np.where(base == -1, np.where(odd, -1, 1), 0))
        powered = np.where(negative, inverse.astype(wide), powered)
    return powered.astype(base.dtype)


@op("Pow", since=7)
def pow_(base, exponent):
    """base ** exponent in the base's dtype; the exponent may be any numeric type (Pow-12+)."""
    _broadcast_shape("Pow", base, exponent)
    if base.dtype.kind in "iu" and exponent.dtype.kind in "iu":
        return _int_power(base, exponent)
    if base.dtype.kind in "iu":
        # Integer base, float exponent: the real power, truncated back to the base's type.
        return np.power(base.astype(np.float64), _working(exponent).astype(np.float64)).astype(base.dtype)
    result = np.power(_working(base), _working(exponent))
    return result.astype(base.dtype, copy=False)


# ----------------------------------------------------------------------------------------------
# Variadic ops (Sum-6 needed equal shapes; broadcasting from Sum-8 on is a superset)


def _variadic(op_name: str, inputs, combine) -> np.ndarray:
    if not inputs or any(x is None for x in inputs):
        raise KernelError(f"{op_name}: needs at least one input, and none may be omitted")
    _checked(op_name, *inputs)
    result = np.array(inputs[0], copy=True)
    for x in inputs[1:]:
        result = combine(result, x)
    return result


@op("Sum", since=6)
def sum_(*inputs):
    return _variadic("Sum", inputs, np.add)


@op("Max", since=6)
def max_(*inputs):
    """Element-wise max; NaN propagates."""
    return _variadic("Max", inputs, np.maximum)


@op("Min", since=6)
def min_(*inputs):
    """Element-wise min; NaN propagates."""
    return _variadic("Min", inputs, np.minimum)


@op("Mean", since=6)
def mean(*inputs):
    total = _variadic("Mean", inputs, np.add)
    return (total / len(inputs)).astype(total.dtype, copy=False)


# ----------------------------------------------------------------------------------------------
# Comparisons and selection


def _compare(op_name: str, a, b, fn) -> np.ndarray:
    _checked(op_name, a, b)
    # Object (string) arrays compare to object results in some numpy paths; ONNX wants bool.
    return np.asarray(fn(a, b)).astype(bool, copy=False)


@op("Equal", since=7)
def equal(a, b):
    return _compare("Equal", a, b, np.equal)


@op("Greater", since=7)
def greater(a, b):
    return _compare("Greater", a, b, np.greater)


@op("Less", since=7)
def less(a, b):
    return _compare("Less", a, b, np.less)


@op("Where", since=9)
def where(condition, x, y):
    if condition.dtype != np.bool_:
        raise KernelError(f"Where: condition must be bool, got {condition.dtype}")
    _same_dtype("Where", x, y)
    _broadcast_shape("Where", condition, x, y)
    return np.where(condition, x, y)
