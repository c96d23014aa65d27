"""Tensor-manipulation ops: shapes, views, gathers, slices, splits, casts, padding and constants.

Most of these only move data. Where numpy can give a view (Transpose, Reshape, Slice, Split,
Squeeze) the kernel returns one: no kernel ever writes into its inputs, and plan weights are
read-only buffers anyway.

Integer tensor inputs that describe shapes or indices (Reshape's shape, Slice's starts...) are
small; they are turned into Python ints first, so the index arithmetic below is exact whatever
their dtype.
"""

from __future__ import annotations

import math

import numpy as np

from kernels.cpu._registry import op
from kernels.dtypes import onnx_dtype
from kernels.registry import KernelError


# --------------------------------------------------------------------------------------------
# helpers


def _ints(values) -> list[int]:
    """A 1-D int tensor input or an ints attribute as a list of Python ints."""
    return [int(v) for v in np.asarray(values).reshape(-1)]


def _axis(axis: int, rank: int, what: str) -> int:
    """A possibly negative axis in [-rank, rank) as a non-negative one."""
    axis = int(axis)
    if not -rank <= axis < rank:
        raise KernelError(f"{what}: axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _axes(axes, rank: int, what: str) -> list[int]:
    """Several axes, normalised, each at most once."""
    result = [_axis(a, rank, what) for a in _ints(axes)]
    if len(set(result)) != len(result):
        raise KernelError(f"{what}: axes {_ints(axes)} repeat an axis (rank {rank})")
    return result


def _shape(values, what: str) -> tuple[int, ...]:
    """A shape given as a tensor (ConstantOfShape, Expand): non-negative ints."""
    shape = tuple(_ints(values))
    if any(d < 0 for d in shape):
        raise KernelError(f"{what}: shape {list(shape)} has a negative dimension")
    return shape


# --------------------------------------------------------------------------------------------
# shape and layout


@op("Concat", since=4)
def concat(*inputs, axis):
    if not inputs:
        raise KernelError("Concat needs at least one input")
    rank = inputs[0].ndim
    shapes = [x.shape for x in inputs]
    if any(x.ndim != rank for x in inputs):
        raise KernelError(f"Concat: inputs have different ranks: {shapes}")
    axis = _axis(axis, rank, "Concat")
    for x in inputs:
        if x.shape[:axis] != inputs[0].shape[:axis] or x.shape[axis + 1:] != inputs[0].shape[axis + 1:]:
            raise KernelError(f"Concat: shapes {shapes} differ outside axis {axis}")
    return np.concatenate(inputs, axis=axis)


@op("Flatten", since=1)
def flatten(x, *, axis=1):
    """2-D result: the dimensions before `axis` become rows, the rest columns (axis may equal rank)."""
    rank = x.ndim
    if not -rank <= axis <= rank:
        raise KernelError(f"Flatten: axis {axis} is out of range for rank {rank} (shape {x.shape})")
    axis = axis + rank if axis < 0 else axis
    rows = math.prod(x.shape[:axis])
    cols = math.prod(x.shape[axis:])
    return x.reshape(rows, cols)


def _reshape_target(in_shape: tuple, requested: list[int], allowzero: int) -> tuple[int, ...]:
    """Resolve Reshape's 0 (copy the input dim, unless allowzero) and -1 (infer) entries."""
    dims = list(requested)
    if dims.count(-1) > 1:
        raise KernelError(f"Reshape: shape {requested} has more than one -1")
    if allowzero and 0 in dims and -1 in dims:
        raise KernelError(f"Reshape: shape {requested} has both 0 and -1 with allowzero=1")
    for i, d in enumerate(dims):
        if d == 0 and not allowzero:
            if i >= len(in_shape):
                raise KernelError(f"Reshape: shape {requested} copies dimension {i} (0), but the input {in_shape} has rank {len(in_shape)}")
            dims[i] = in_shape[i]
        elif d < -1:
            raise KernelError(f"Reshape: shape {requested} has an invalid dimension {d}")
    total = math.prod(in_shape)
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known == 0 or total % known:
            raise KernelError(f"Reshape: cannot reshape {in_shape} ({total} elements) to {requested}")
        dims[dims.index(-1)] = total // known
    if math.prod(dims) != total:
        raise KernelError(f"Reshape: cannot reshape {in_shape} ({total} elements) to {requested}")
    return tuple(dims)


@op("Reshape", since=5)
def reshape(data, shape, *, allowzero=0):
    """Reshape-5+ (shape as an input). allowzero arrived in Reshape-14: a 0 then means a 0 dim."""
    return data.reshape(_reshape_target(data.shape, _ints(shape), allowzero))


@op("Transpose", since=1)
def transpose(data, *, perm=None):
    """Default permutation: reverse the axes."""
    if perm is None:
        return np.transpose(data)
    perm = _ints(perm)
    if sorted(perm) != list(range(data.ndim)):
        raise KernelError(f"Transpose: perm {perm} is not a permutation of the {data.ndim} axes of {data.shape}")
    return np.transpose(data, perm)


def _squeeze(data, axes):
    if axes is None:
        return data.reshape(tuple(d for d in data.shape if d != 1))
    axes = _axes(axes, data.ndim, "Squeeze")
    bad = [a for a in axes if data.shape[a] != 1]
    if bad:
        raise KernelError(f"Squeeze: axes {bad} of shape {data.shape} are not of size 1")
    return data.reshape(tuple(d for i, d in enumerate(data.shape) if i not in axes))


@op("Squeeze", since=1)
def squeeze_1(data, *, axes=None):
    """Squeeze-1/11: axes attribute; none given removes every size-1 axis."""
    return _squeeze(data, axes)


@op("Squeeze", since=13)
def squeeze_13(data, axes=None):
    """Squeeze-13: axes as an optional input."""
    return _squeeze(data, axes)


def _unsqueeze(data, axes):
    if axes is None:
        raise KernelError("Unsqueeze needs axes")
    rank = data.ndim + len(_ints(axes))
    axes = set(_axes(axes, rank, "Unsqueeze"))  # axes index the output
    dims = iter(data.shape)
    return data.reshape(tuple(1 if i in axes else next(dims) for i in range(rank)))


@op("Unsqueeze", since=1)
def unsqueeze_1(data, *, axes=None):
    """Unsqueeze-1/11: axes attribute, counted in the output's rank."""
    return _unsqueeze(data, axes)


@op("Unsqueeze", since=13)
def unsqueeze_13(data, axes=None):
    """Unsqueeze-13: axes as an input."""
    return _unsqueeze(data, axes)


@op("Identity", since=1)
def identity(x):
    return x


@op("Shape", since=1)
def shape_1(data):
    return np.array(data.shape, dtype=np.int64)


@op("Shape", since=15)
def shape_15(data, *, start=0, end=None):
    """Shape-15: the dims in [start, end); negatives count from the back, both clamp to [0, rank]."""
    rank = data.ndim

    def clamp(i):
        i = i + rank if i < 0 else i
        return min(max(i, 0), rank)

    begin = clamp(int(start))
    stop = rank if end is None else clamp(int(end))
    return np.array(data.shape[begin:stop], dtype=np.int64)


@op("Expand", since=8)
def expand(x, shape):
    """Broadcast x against `shape` both ways (a 1 in `shape` keeps x's dimension)."""
    target = _shape(shape, "Expand")
    try:
        out_shape = np.broadcast_shapes(x.shape, target)
    except ValueError:
        raise KernelError(f"Expand: input shape {x.shape} cannot broadcast with {list(target)}") from None
    # A copy, not broadcast_to's read-only zero-stride view: callers get an ordinary array.
    return np.broadcast_to(x, out_shape).copy()


@op("Tile", since=6)
def tile(x, repeats):
    reps = _shape(repeats, "Tile")
    if len(reps) != x.ndim:
        raise KernelError(f"Tile: repeats has {len(reps)} entries for an input of rank {x.ndim} (shape {x.shape})")
    return np.tile(x, reps)


# --------------------------------------------------------------------------------------------
# constants


@op("Constant", since=1)
def constant(*, value=None, value_float=None, value_floats=None, value_int=None, value_ints=None,
             value_string=None, value_strings=None, sparse_value=None):
    """Exactly one attribute gives the value; float attributes are float32, int ones int64."""
    given = {k: v for k, v in dict(value=value, value_float=value_float, value_floats=value_floats,
                                   value_int=value_int, value_ints=value_ints, value_string=value_string,
                                   value_strings=value_strings, sparse_value=sparse_value).items() if v is not None}
    if len(given) != 1:
        raise KernelError(f"Constant needs exactly one value attribute, got {sorted(given) or 'none'}")
    (name, v), = given.items()
    if name == "value":
        return np.asarray(v)
    if name in ("value_float", "value_floats"):
        return np.array(v, dtype=np.float32)
    if name in ("value_int", "value_ints"):
        return np.array(v, dtype=np.int64)
    if name in ("value_string", "value_strings"):
        return np.array(v, dtype=object)
    raise KernelError("Constant: sparse_value is not supported")


@op("ConstantOfShape", since=9)
def constant_of_shape(shape, *, value=None):
    """A tensor of `shape` filled with the one-element `value` tensor (default float32 0)."""
    dims = _shape(shape, "ConstantOfShape")
    if value is None:
        return np.zeros(dims, dtype=np.float32)
    value = np.asarray(value)
    if value.size != 1:
        raise KernelError(f"ConstantOfShape: value must hold one element, got shape {value.shape}")
    return np.full(dims, value.reshape(-1)[0], dtype=value.dtype)


@op("Range", since=11)
def range_(start, limit, delta, *, stash_type=1):
    """start + i * delta for i < max(ceil((limit - start) / delta), 0).

    Integers are computed exactly; floats in float64 and rounded once to the input type (for
    float16/bfloat16 that is at least the precision Range-27's stash_type asks for).
    """
    dtype = np.asarray(start).dtype
    s, l, d = (np.asarray(v).reshape(-1)[0] for v in (start, limit, delta))
    if dtype.kind in "iu":
        s, l, d = int(s), int(l), int(d)
        if d == 0:
            raise KernelError("Range: delta is 0")
        count = max(-((s - l) // d), 0)  # exact integer ceil((l - s) / d)
        return (s + np.arange(count, dtype=np.int64) * d).astype(dtype)
    s, l, d = float(s), float(l), float(d)
    if d == 0:
        raise KernelError("Range: delta is 0")
    count = max(math.ceil((l - s) / d), 0)
    return (s + np.arange(count, dtype=np.float64) * d).astype(dtype)


# --------------------------------------------------------------------------------------------
# dropout (inference: identity unless training_mode is set)


@op("Dropout", since=7)
def dropout_7(data, *, ratio=0.5):
    """Dropout-7..9: at inference a copy of the input; the mask has the input's type (T)."""
    return data, np.ones(data.shape, dtype=data.dtype)


@op("Dropout", since=10)
def dropout_10(data, *, ratio=0.5):
    """Dropout-10: as 7, but the mask is bool."""
    return data, np.ones(data.shape, dtype=bool)


@op("Dropout", since=12)
def dropout_12(data, ratio=None, training_mode=None, *, seed=None):
    """Dropout-12+: ratio and training_mode are inputs.

    With training_mode true (and ratio > 0) this does what the spec says: keep each element with
    probability 1 - ratio, scaled by 1 / (1 - ratio). The draws are uniform [0, 1) numbers from
    numpy's legacy generator seeded with `seed`, compared with ratio, which is how ONNX's own
    test data was made; without a seed they are unpredictable.
    """
    rate = 0.5 if ratio is None else float(np.asarray(ratio).reshape(-1)[0])
    training = training_mode is not None and bool(np.asarray(training_mode).reshape(-1)[0])
    if not training or rate == 0:
        return data, np.ones(data.shape, dtype=bool)
    if not 0 <= rate < 1:
        raise KernelError(f"Dropout: ratio {rate} must be in [0, 1)")
    mask = np.random.RandomState(seed).uniform(0.0, 1.0, data.shape) >= rate
    scale = data.dtype.type(1.0 / (1.0 - rate))
    return np.where(mask, data, data.dtype.type(0)) * scale, mask


# --------------------------------------------------------------------------------------------
# indexing


@op("Gather", since=1)
def gather(data, indices, *, axis=0):
    """np.take along `axis`; indices may be negative (counted from the end, Gather-11+)."""
    axis = _axis(axis, data.ndim, "Gather")
    size = data.shape[axis]
    idx = np.asarray(indices).astype(np.int64, copy=False)
    if idx.size and (idx.min() < -size or idx.max() >= size):
        raise KernelError(f"Gather: indices in [{idx.min()}, {idx.max()}] are out of range for axis {axis} of size {size} (data {data.shape})")
    return np.take(data, np.where(idx < 0, idx + size, idx), axis=axis)


def _slice_bounds(start: int, end: int, step: int, size: int) -> slice:
    """ONNX's clamping of one axis's start/end, as a Python slice on that axis."""
    if start < 0:
        start += size
    if end < 0:
        end += size
    if step > 0:
        start = min(max(start, 0), size)
        end = min(max(end, 0), size)
        return slice(start, end, step)
    start = min(max(start, 0), size - 1)
    end = min(max(end, -1), size - 1)
    # end == -1 means "through index 0"; Python would read -1 as the last element.
    return slice(start, None if end < 0 else end, step)


def _slice(data, starts, ends, axes, steps):
    starts, ends = _ints(starts), _ints(ends)
    if len(starts) != len(ends):
        raise KernelError(f"Slice: {len(starts)} starts but {len(ends)} ends")
    axes = list(range(len(starts))) if axes is None else _axes(axes, data.ndim, "Slice")
    steps = [1] * len(starts) if steps is None else _ints(steps)
    if not len(axes) == len(steps) == len(starts):
        raise KernelError(f"Slice: starts, ends, axes and steps differ in length ({len(starts)}, {len(ends)}, {len(axes)}, {len(steps)})")
    if len(starts) > data.ndim:
        raise KernelError(f"Slice: {len(starts)} starts for data of rank {data.ndim}")
    index = [slice(None)] * data.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps):
        if step == 0:
            raise KernelError(f"Slice: step 0 on axis {axis}")
        index[axis] = _slice_bounds(start, end, step, data.shape[axis])
    return data[tuple(index)]


@op("Slice", since=1)
def slice_1(data, *, starts, ends, axes=None):
    """Slice-1: starts/ends/axes attributes, step 1."""
    return _slice(data, starts, ends, axes, None)


@op("Slice", since=10)
def slice_10(data, starts, ends, axes=None, steps=None):
    """Slice-10+: inputs; negative steps walk backwards; every index clamps as ONNX says."""
    return _slice(data, starts, ends, axes, steps)


def _split_at(x, axis: int, sizes: list[int]) -> tuple:
    dim = x.shape[axis]
    if any(s < 0 for s in sizes) or sum(sizes) != dim:
        raise KernelError(f"Split: sizes {sizes} do not add up to {dim}, the size of axis {axis} of {x.shape}")
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _split_for_outputs(x, axis: int, sizes: list[int], num_outputs: int) -> tuple:
    if len(sizes) != num_outputs:
        raise KernelError(f"Split: split {sizes} has {len(sizes)} parts but the node has {num_outputs} outputs")
    return _split_at(x, axis, sizes)


def _split_evenly(x, axis: int, parts: int) -> tuple:
    dim = x.shape[axis]
    if parts < 1 or dim % parts:
        raise KernelError(f"Split: axis {axis} of {x.shape} cannot be split into {parts} equal parts")
    return _split_at(x, axis, [dim // parts] * parts)


@op("Split", since=2, wants_num_outputs=True)
def split_2(x, *, axis=0, split=None, num_outputs):
    """Split-2/11: `split` attribute; without one, equal parts, one per node output."""
    axis = _axis(axis, x.ndim, "Split")
    if split is None:
        return _split_evenly(x, axis, num_outputs)
    return _split_for_outputs(x, axis, _ints(split), num_outputs)


@op("Split", since=13, wants_num_outputs=True)
def split_13(x, split=None, *, axis=0, num_outputs):
    """Split-13: `split` as an optional input; without one, equal parts, one per node output."""
    axis = _axis(axis, x.ndim, "Split")
    if split is None or np.asarray(split).size == 0:
        return _split_evenly(x, axis, num_outputs)
    return _split_for_outputs(x, axis, _ints(split), num_outputs)


@op("Split", since=18)
def split_18(x, split=None, *, axis=0, num_outputs=None):
    """Split-18: `split` input, or the num_outputs attribute: chunks of ceil(dim / n), the last smaller."""
    axis = _axis(axis, x.ndim, "Split")
    if split is not None and np.asarray(split).size:
        return _split_at(x, axis, _ints(split))
    if num_outputs is None or num_outputs < 1:
        raise KernelError("Split-18 needs either the split input or a positive num_outputs attribute")
    dim = x.shape[axis]
    chunk = -(-dim // num_outputs)
    sizes = [chunk] * (num_outputs - 1) + [dim - chunk * (num_outputs - 1)]
    if sizes[-1] < 0:
        raise KernelError(f"Split: axis {axis} of size {dim} cannot make {num_outputs} chunks of {chunk}")
    return _split_at(x, axis, sizes)


# --------------------------------------------------------------------------------------------
# Pad


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def _pad(data, pads: list[int], mode: str, value, axes) -> np.ndarray:
    rank = data.ndim
    axes = list(range(rank)) if axes is None else _axes(axes, rank, "Pad")
    if len(pads) != 2 * len(axes):
        raise KernelError(f"Pad: {len(pads)} pads for {len(axes)} axes (shape {data.shape}); expected {2 * len(axes)}")
    if mode not in _PAD_MODES:
        raise KernelError(f"Pad: unknown mode '{mode}'")
    begin, end = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        begin[axis], end[axis] = pads[i], pads[i + len(axes)]
    # Grow first (numpy pads with non-negative widths), then crop the negative pads.
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    if mode != "constant":
        for axis, (b, e) in enumerate(widths):
            if (b or e) and data.shape[axis] == 0:
                raise KernelError(f"Pad: cannot {mode}-pad axis {axis} of size 0 (shape {data.shape})")
    if any(b or e for b, e in widths):
        if mode == "constant":
            fill = data.dtype.type(0) if value is None else np.asarray(value).astype(data.dtype).reshape(-1)[0]
            data = np.pad(data, widths, mode="constant", constant_values=fill)
        else:
            data = np.pad(data, widths, mode=_PAD_MODES[mode])
    crop = tuple(slice(-min(b, 0), data.shape[axis] + min(e, 0)) for axis, (b, e) in enumerate(zip(begin, end)))
    if any(d < 0 for d in (s.stop - s.start for s in crop)):
        raise KernelError(f"Pad: pads {pads} remove more than the shape {data.shape} holds")
    return data[crop]


@op("Pad", since=2)
def pad_2(data, *, pads, mode="constant", value=0.0):
    """Pad-2: pads/value attributes; pads are [begin_0, ..., begin_n, end_0, ..., end_n]."""
    return _pad(data, _ints(pads), mode, value, None)


@op("Pad", since=11)
def pad_11(data, pads, constant_value=None, axes=None, *, mode="constant"):
    """Pad-11+: pads and constant_value as inputs; Pad-18 adds axes; Pad-19 adds mode 'wrap'.
    Negative pads remove elements."""
    return _pad(data, _ints(pads), mode, constant_value, axes)


# --------------------------------------------------------------------------------------------
# Cast

# The float8 types Cast's `saturate` applies to, with their largest finite values.
_FLOAT8_MAX = {"float8_e4m3fn": 448.0, "float8_e4m3fnuz": 240.0, "float8_e5m2": 57344.0, "float8_e5m2fnuz": 57344.0}
_E8M0 = "float8_e8m0fnu"


def _to_strings(x) -> np.ndarray:
    """Numbers -> their shortest plain text ("0.5", "3", "nan")."""
    if x.dtype.kind == "V":  # ml_dtypes types: via float32, which holds them exactly
        x = x.astype(np.float32)
    return x.astype(str).astype(object)


def _from_strings(x, target: np.dtype) -> np.ndarray:
    """Text -> numbers. Python's float() reads "1e-5", "INF", "-inf", "NaN" in any case."""
    text = np.asarray(x, dtype=object)
    if target.kind in "iu":
        try:
            return text.astype(target)
        except (ValueError, OverflowError):
            pass  # "100.5" -> 100: parse as float, then truncate
    try:
        return text.astype(np.float64)
    except ValueError as exc:
        raise KernelError(f"Cast: cannot read a number from a string: {exc}") from None


def _to_float8(x, target: np.dtype, saturate: int) -> np.ndarray:
    """With saturate (the default), values beyond the type's range, infinities included, become
    +-max; without, ml_dtypes' own conversion gives NaN (or inf for E5M2) as the spec's table says."""
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    if saturate:
        limit = _FLOAT8_MAX[target.name]
        x = np.clip(x, -limit, limit)
    return x.astype(target)


def _to_e8m0(x, saturate: int, round_mode: str) -> np.ndarray:
    """FLOAT8E8M0 keeps only a float32's 8 exponent bits (the value 2**(e - 127); 255 is NaN).

    round_mode picks the power of two: "down" truncates the mantissa, "up" bumps the exponent when
    any mantissa bit is set, "nearest" when the mantissa is at least one half (ties up, except
    subnormals). saturate keeps overflow (and infinity) at the largest exponent, else NaN.
    """
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    exponent = ((bits >> 23) & 0xFF).astype(np.int32)
    mantissa = bits & 0x7FFFFF
    special = exponent == 0xFF
    is_nan = special & (mantissa != 0)
    if round_mode == "up":
        bump = mantissa != 0
    elif round_mode == "down":
        bump = np.zeros(bits.shape, dtype=bool)
    elif round_mode == "nearest":
        bump = ((mantissa & 0x400000) != 0) & (((mantissa & 0x3FFFFF) != 0) | (exponent > 0))
    else:
        raise KernelError(f"Cast: unknown round_mode '{round_mode}' (up, down, nearest)")
    code = np.where(special, 0xFF, exponent + bump)
    if saturate:
        code = np.where(~is_nan & (code >= 0xFF), 0xFE, code)
    else:
        code = np.where((bits & 0x7FFFFFFF) == 0, 0xFF, code)  # zero is below the smallest value
    return np.minimum(code, 0xFF).astype(np.uint8).view(onnx_dtype(24))


@op("Cast", since=6)
def cast(x, *, to, saturate=1, round_mode="up"):
    """Convert to the ONNX element type `to`.

    saturate (Cast-19+) matters only for the four float8 types; round_mode (Cast-24+) only for
    FLOAT8E8M0. Narrow types (bfloat16, float8, int4, uint4, float4, int2, uint2) convert through
    ml_dtypes, which rounds to nearest even; integer targets wrap like C casts.
    """
    try:
        target = onnx_dtype(int(to))
    except ValueError as exc:
        raise KernelError(f"Cast: {exc}") from None
    if x.dtype == target:
        return x
    if target.kind == "O":
        return _to_strings(x)
    if x.dtype.kind in "OUS":
        x = _from_strings(x, target)
        if x.dtype == target:
            return x
    if target.name == _E8M0:
        return _to_e8m0(x, saturate, round_mode)
    if target.name in _FLOAT8_MAX:
        return _to_float8(x, target, saturate)
    if x.dtype.kind == "V" and target.kind == "b":
        x = x.astype(np.float32)
    return x.astype(target)
