"""Reductions (ReduceSum/Mean/Max, ArgMax) and the axis-wise normalisers Softmax and LogSoftmax.

The reductions take their axes as an attribute up to ReduceSum-11 / ReduceMean-13 / ReduceMax-13
and as an optional int64 input after; the input versions add `noop_with_empty_axes`. Reducing an
empty set gives what ONNX defines: 0 for a sum, -inf (or the type's minimum) for a max, NaN for a
mean (0 / 0).
"""

import numpy as np

from kernels.cpu._registry import op
from kernels.registry import KernelError


def _normalize_axes(op_name: str, axes, rank: int) -> tuple[int, ...]:
    """Axes as sorted non-negative ints; a KernelError for one out of range or repeated."""
    normalized = []
    for axis in np.asarray(axes, dtype=np.int64).reshape(-1).tolist():
        if not -rank <= axis < rank:
            raise KernelError(f"{op_name}: axis {axis} is out of range for an input of rank {rank}")
        normalized.append(axis % rank)
    if len(set(normalized)) != len(normalized):
        raise KernelError(f"{op_name}: axes {list(np.asarray(axes).reshape(-1))} name an axis twice")
    return tuple(sorted(normalized))


def _resolve_axes(op_name: str, data: np.ndarray, axes, noop_with_empty_axes: int):
    """The axes to reduce, or None when the op is a no-op (empty axes with noop_with_empty_axes)."""
    if axes is None or np.asarray(axes).size == 0:
        if noop_with_empty_axes:
            return None
        return tuple(range(data.ndim))
    return _normalize_axes(op_name, axes, data.ndim)


def _truncating_mean(total: np.ndarray, count: int) -> np.ndarray:
    """An integer mean: the exact sum divided by the count, rounded toward zero."""
    quotient = np.abs(total) // count
    return np.where(total < 0, -quotient, quotient).astype(total.dtype)


def _accumulator(dtype: np.dtype) -> np.dtype:
    """Half-precision sums accumulate in float32 (as numpy's own mean does); others in their type."""
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _sum(data, axes, keepdims):
    return np.sum(data, axis=axes, keepdims=keepdims, dtype=_accumulator(data.dtype))


def _mean(data, axes, keepdims):
    count = int(np.prod([data.shape[a] for a in axes], dtype=np.int64))
    total = _sum(data, axes, keepdims)
    if data.dtype.kind in "iu":
        return _truncating_mean(total, count) if count else total
    with np.errstate(invalid="ignore"):  # an empty set: 0 / 0 = NaN
        return total / total.dtype.type(count)


def _lowest(dtype: np.dtype):
    """The identity of max: -inf for floats, the smallest value for integers, False for bool."""
    if dtype == np.bool_:
        return False
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    return -np.inf


def _max(data, axes, keepdims):
    return np.max(data, axis=axes, keepdims=keepdims, initial=_lowest(data.dtype))


def _reduce(op_name, reducer, data, axes, keepdims, noop_with_empty_axes=0):
    resolved = _resolve_axes(op_name, data, axes, noop_with_empty_axes)
    if resolved is None:
        return data.copy()
    return np.asarray(reducer(data, resolved, bool(keepdims))).astype(data.dtype, copy=False)


@op("ReduceSum", since=1)
def reduce_sum_1(data, *, axes=None, keepdims=1):
    return _reduce("ReduceSum", _sum, data, axes, keepdims)


@op("ReduceSum", since=13)
def reduce_sum_13(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    return _reduce("ReduceSum", _sum, data, axes, keepdims, noop_with_empty_axes)


@op("ReduceMean", since=1)
def reduce_mean_1(data, *, axes=None, keepdims=1):
    """Integer means truncate toward zero; a mean over an empty set is NaN."""
    return _reduce("ReduceMean", _mean, data, axes, keepdims)


@op("ReduceMean", since=18)
def reduce_mean_18(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    return _reduce("ReduceMean", _mean, data, axes, keepdims, noop_with_empty_axes)


@op("ReduceMax", since=1)
def reduce_max_1(data, *, axes=None, keepdims=1):
    """A max over an empty set is -inf (floats), the type's minimum (integers) or False (bool)."""
    return _reduce("ReduceMax", _max, data, axes, keepdims)


@op("ReduceMax", since=18)
def reduce_max_18(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    return _reduce("ReduceMax", _max, data, axes, keepdims, noop_with_empty_axes)


@op("ArgMax", since=1)
def argmax(data, *, axis=0, keepdims=1, select_last_index=0):
    """Index of the max along `axis` as int64; ties go to the first index unless select_last_index
    (ArgMax-12; the attribute is absent, so 0, before). NaN counts as the max, as in numpy."""
    if data.ndim == 0:
        raise KernelError("ArgMax: the input is a scalar (rank 0); it has no axis to reduce")
    (axis,) = _normalize_axes("ArgMax", [axis], data.ndim)
    if data.shape[axis] == 0:
        raise KernelError(f"ArgMax: axis {axis} of input shape {tuple(data.shape)} is empty")
    if select_last_index:
        flipped = np.flip(data, axis=axis)
        index = data.shape[axis] - 1 - np.argmax(flipped, axis=axis, keepdims=bool(keepdims))
    else:
        index = np.argmax(data, axis=axis, keepdims=bool(keepdims))
    return index.astype(np.int64, copy=False)


# ----------------------------------------------------------------------------------------------
# Softmax and LogSoftmax


def _working(x: np.ndarray) -> np.ndarray:
    """float16 and the narrow ml_dtypes floats are computed in float32."""
    narrow = x.dtype == np.float16 or (x.dtype.kind == "V" and x.dtype.name.startswith(("bfloat", "float")))
    return x.astype(np.float32) if narrow else x


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)  # exp never overflows
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _checked_axis(op_name: str, x: np.ndarray, axis: int) -> int:
    if x.ndim == 0:
        raise KernelError(f"{op_name}: the input is a scalar (rank 0); it needs at least one axis")
    if not -x.ndim <= axis < x.ndim:
        raise KernelError(f"{op_name}: axis {axis} is out of range for input shape {tuple(x.shape)}")
    return axis % x.ndim


def _along_axis(op_name, fn, x, axis):
    """Opset 13+: normalise along the one axis."""
    axis = _checked_axis(op_name, x, axis)
    if x.size == 0:
        return x.copy()
    return fn(_working(x), axis).astype(x.dtype, copy=False)


def _coerced_2d(op_name, fn, x, axis):
    """Opset < 13: view x as 2-D [prod(shape[:axis]), prod(shape[axis:])] and normalise each row."""
    if x.ndim == 0:
        raise KernelError(f"{op_name}: the input is a scalar (rank 0); it needs at least one axis")
    if not -x.ndim <= axis <= x.ndim:
        raise KernelError(f"{op_name}: axis {axis} is out of range for input shape {tuple(x.shape)}")
    axis = axis % x.ndim if axis < 0 else axis
    if x.size == 0:
        return x.copy()
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    cols = int(np.prod(x.shape[axis:], dtype=np.int64))
    matrix = _working(x).reshape(rows, cols)
    return fn(matrix, 1).reshape(x.shape).astype(x.dtype, copy=False)


@op("Softmax", since=1)
def softmax_1(x, *, axis=1):
    return _coerced_2d("Softmax", _softmax, x, axis)


@op("Softmax", since=13)
def softmax_13(x, *, axis=-1):
    return _along_axis("Softmax", _softmax, x, axis)


@op("LogSoftmax", since=1)
def log_softmax_1(x, *, axis=1):
    return _coerced_2d("LogSoftmax", _log_softmax, x, axis)


@op("LogSoftmax", since=13)
def log_softmax_13(x, *, axis=-1):
    return _along_axis("LogSoftmax", _log_softmax, x, axis)
