"""Pooling: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, and LRN.

MaxPool and AveragePool are separable: a max (or sum) over a box window is a max (or sum) along one
axis after another. So they run one 1-D pass per spatial axis, and a pass loops over that axis's
kernel offsets (taps), never over pixels: each tap combines, into the whole output at once, the
strided slice of the input it reads. Padding is never materialised: a tap reads real input for a
contiguous range of outputs only, so it updates just that range. Padding then adds nothing to a
max (as -inf would) or to a sum, and the averaging divisor is counted per axis: a window's count is
the product of its per-axis counts.

Window attributes (kernel_shape, strides, dilations, pads, auto_pad, ceil_mode) are resolved by
conv.make_window, shared with Conv.
"""

from __future__ import annotations

import math

import numpy as np

from kernels.cpu._registry import op
from kernels.cpu.conv import Window, compute_dtype, make_window
from kernels.registry import KernelError


def _check_image(x, op_name: str) -> None:
    if x.ndim < 3:
        raise KernelError(f"{op_name}: X must be (N, C, spatial...), got shape {x.shape}")


def _pool_window(op_name, x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode) -> Window:
    _check_image(x, op_name)
    if kernel_shape is None or len(kernel_shape) != x.ndim - 2:
        raise KernelError(f"{op_name}: kernel_shape {kernel_shape} must give one size per spatial dim of X {x.shape}")
    return make_window(op_name, x.shape[2:], kernel_shape, strides, dilations, pads, auto_pad, bool(ceil_mode))


def _tap_range(size: int, out: int, stride: int, first: int) -> tuple[int, int]:
    """Outputs [lo, hi) of one axis whose tap, reading input position o * stride + first, lands
    inside the input [0, size); lo >= hi when the tap reads only padding."""
    lo = -(first // stride) if first < 0 else 0
    hi = min(out, (size - 1 - first) // stride + 1) if size - 1 - first >= 0 else 0
    return lo, hi


def _axis_taps(window: Window, spatial, axis: int):
    """For one spatial axis: (output range lo, hi, first input position read) of each live tap."""
    n, s, d, b, o = (spatial[axis], window.strides[axis], window.dilations[axis], window.pads_begin[axis],
                     window.out_shape[axis])
    taps = []
    for t in range(window.kernel[axis]):
        lo, hi = _tap_range(n, o, s, t * d - b)
        if lo < hi:
            taps.append((lo, hi, lo * s + t * d - b))
    return taps


def _pool_axis(x, axis: int, window: Window, spatial, combine, fill) -> np.ndarray:
    """1-D pooling of x along spatial axis `axis` (array axis axis + 2) with combine = np.maximum or np.add."""
    dim = axis + 2
    stride, out = window.strides[axis], window.out_shape[axis]
    taps = _axis_taps(window, spatial, axis)

    def read(lo, hi, start):
        index = [slice(None)] * x.ndim
        index[dim] = slice(start, start + (hi - lo - 1) * stride + 1, stride)
        return x[tuple(index)]

    shape = list(x.shape)
    shape[dim] = out
    # Start from a tap that covers every output if there is one; else from the fill value.
    whole = next((t for t in taps if t[0] == 0 and t[1] == out), None)
    if whole is not None:
        y = np.array(read(*whole), copy=True)
        taps = [t for t in taps if t is not whole]
    else:
        y = np.full(shape, fill, x.dtype)
    for lo, hi, start in taps:
        index = [slice(None)] * x.ndim
        index[dim] = slice(lo, hi)
        block = y[tuple(index)]
        combine(block, read(lo, hi, start), out=block)
    return y


def _axis_counts(window: Window, spatial, include_pad: bool) -> list[np.ndarray]:
    """Per axis, how many taps of each output's window count towards the average."""
    counts = []
    for n, k, s, d, b, e, o in zip(spatial, window.kernel, window.strides, window.dilations,
                                   window.pads_begin, window.pads_end, window.out_shape):
        positions = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d - b  # input position per tap
        # count_include_pad counts the explicit padding but not the extension a ceil_mode window
        # may reach past it.
        low, high = (-b, n + e) if include_pad else (0, n)
        counts.append(((positions >= low) & (positions < high)).sum(axis=1))
    return counts


@op("MaxPool", since=1, wants_num_outputs=True)
def max_pool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
             storage_order=0, strides=None, num_outputs=1):
    """Max over each window; padding never wins. Serves every version (1, 8, 10, 11, 12, 22): the
    attributes added over time default to the old behaviour.

    The optional Indices output (opset 8+), computed only when the node has it, holds for each
    output the flat index of its maximum in X: (n * C + c) * prod(spatial) + the spatial offset,
    row-major, or column-major over the spatial dims when storage_order=1. Ties go to the first
    element of the window in row-major window order.
    """
    window = _pool_window("MaxPool", x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    if x.dtype.kind not in "iu":
        compute_dtype(x.dtype, "MaxPool")  # raises for non-numeric types
    lowest = np.iinfo(x.dtype).min if x.dtype.kind in "iu" else -np.inf
    spatial = x.shape[2:]
    y = x
    for axis in range(len(spatial)):
        y = _pool_axis(y, axis, window, spatial, np.maximum, lowest)
    if num_outputs < 2:
        return y
    return y, _max_indices(x, y, window, storage_order)


def _max_indices(x, y, window: Window, storage_order: int) -> np.ndarray:
    """Walk the window's taps backwards, taking each one whose value equals the max: the first wins."""
    spatial = x.shape[2:]
    nd = len(spatial)
    # Element strides of the spatial dims in the flat index: row-major, or column-major.
    sizes = spatial if storage_order == 0 else spatial[::-1]
    strides = [math.prod(sizes[i + 1:]) for i in range(nd)]
    if storage_order != 0:
        strides = strides[::-1]
    plane = math.prod(spatial)
    base = (np.arange(x.shape[0] * x.shape[1], dtype=np.int64) * plane).reshape(x.shape[:2] + (1,) * nd)
    indices = np.zeros(y.shape, np.int64)
    for tap in reversed(list(window.taps())):
        out, src, offset = [], [], np.zeros((1, 1) + (1,) * nd, np.int64)
        for axis, t in enumerate(tap):
            s, first = window.strides[axis], t * window.dilations[axis] - window.pads_begin[axis]
            lo, hi = _tap_range(spatial[axis], window.out_shape[axis], s, first)
            if lo >= hi:
                break
            out.append(slice(lo, hi))
            src.append(slice(lo * s + first, (hi - 1) * s + first + 1, s))
            shape = [1] * (nd + 2)
            shape[axis + 2] = -1
            positions = np.arange(lo * s + first, (hi - 1) * s + first + 1, s, dtype=np.int64)
            offset = offset + (positions * strides[axis]).reshape(shape)
        else:
            block = (Ellipsis,) + tuple(out)
            hit = x[(Ellipsis,) + tuple(src)] == y[block]
            np.copyto(indices[block], base + offset, where=hit)
    return indices


@op("AveragePool", since=1)
def average_pool(x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                 kernel_shape=None, pads=None, strides=None):
    """Mean over each window. Serves every version (1, 7, 10, 11, 19, 22): the attributes added over
    time (count_include_pad, ceil_mode, dilations) default to the old behaviour.

    The divisor counts the window's taps inside the input, plus, with count_include_pad, those in
    the explicit (or auto_pad) padding; never those a ceil_mode window reaches beyond the padding.
    """
    window = _pool_window("AveragePool", x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    dtype = compute_dtype(x.dtype, "AveragePool")
    spatial = x.shape[2:]
    total = x.astype(dtype, copy=False)
    for axis in range(len(spatial)):
        total = _pool_axis(total, axis, window, spatial, np.add, 0)
    count = np.ones((), dtype)
    for axis, axis_count in enumerate(_axis_counts(window, spatial, bool(count_include_pad))):
        shape = [1] * len(spatial)
        shape[axis] = -1
        count = count * axis_count.astype(dtype).reshape(shape)
    total /= np.maximum(count, 1)
    return total.astype(x.dtype, copy=False)


@op("GlobalAveragePool", since=1)
def global_average_pool(x):
    """Mean over all spatial dims, kept as size-1 dims: (N, C, 1, 1...)."""
    _check_image(x, "GlobalAveragePool")
    dtype = compute_dtype(x.dtype, "GlobalAveragePool")
    axes = tuple(range(2, x.ndim))
    return np.mean(x, axis=axes, keepdims=True, dtype=dtype).astype(x.dtype, copy=False)


@op("GlobalMaxPool", since=1)
def global_max_pool(x):
    """Max over all spatial dims, kept as size-1 dims: (N, C, 1, 1...)."""
    _check_image(x, "GlobalMaxPool")
    return np.max(x, axis=tuple(range(2, x.ndim)), keepdims=True)


@op("LRN", since=1)
def lrn(x, *, alpha=0.0001, beta=0.75, bias=1.0, size=None):
    """Local response normalisation across channels:
    y = x / (bias + alpha / size * sum of x^2 over channels [c - (size-1)//2, c + size//2]) ** beta.
    """
    if size is None or int(size) < 1:
        raise KernelError(f"LRN: 'size' must be a positive int, got {size}")
    if x.ndim < 2:
        raise KernelError(f"LRN: X must be (N, C, ...), got shape {x.shape}")
    size = int(size)
    dtype = compute_dtype(x.dtype, "LRN")
    xc = x.astype(dtype, copy=False)
    squares = np.square(xc)
    channels = x.shape[1]
    before = (size - 1) // 2
    padded = np.zeros((x.shape[0], channels + size - 1) + x.shape[2:], dtype)
    padded[:, before:before + channels] = squares
    window_sum = np.zeros_like(squares)
    for k in range(size):
        window_sum += padded[:, k:k + channels]
    scale = dtype.type(bias) + dtype.type(alpha / size) * window_sum
    return (xc / scale ** dtype.type(beta)).astype(x.dtype, copy=False)
