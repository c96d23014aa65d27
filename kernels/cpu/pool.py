"""Pooling: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, and LRN.

MaxPool and AveragePool loop over the kernel offsets (taps), never over pixels. For each tap they
combine, into the whole output at once, the strided slice of the input that the tap reads. Padding
is never materialised: along each axis a tap reads real input for a contiguous range of outputs
only, so it updates just that sub-block of the output. Padding then contributes nothing to a max
(as -inf would) and nothing to a sum, and the averaging divisor is counted per axis: a window's
count is the product of its per-axis counts.

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


def _tap_ranges(window: Window, spatial, tap):
    """For one kernel offset: per axis, the outputs [lo, hi) whose tap lands inside the input, and
    the input slice those outputs read; None if the tap reads only padding."""
    outputs, inputs = [], []
    for t, n, s, d, b, o in zip(tap, spatial, window.strides, window.dilations, window.pads_begin, window.out_shape):
        first = t * d - b  # input position read by output 0
        lo = max(0, -(first // s) if first < 0 else 0)  # smallest o with o*s + first >= 0
        hi = min(o, (n - 1 - first) // s + 1) if n - 1 - first >= 0 else 0
        if lo >= hi:
            return None
        outputs.append(slice(lo, hi))
        start = lo * s + first
        inputs.append(slice(start, start + (hi - lo - 1) * s + 1, s))
    return tuple(outputs), tuple(inputs)


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
    output the flat index of its maximum in X: ((n * C + c) * prod(spatial) + the spatial offset,
    row-major, or column-major over the spatial dims when storage_order=1). Ties go to the first
    element of the window in row-major window order.
    """
    window = _pool_window("MaxPool", x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    if x.dtype.kind not in "iu":
        compute_dtype(x.dtype, "MaxPool")  # raises for non-numeric types
    spatial = x.shape[2:]
    lowest = -np.inf if x.dtype.kind not in "iu" else np.iinfo(x.dtype).min
    y = np.full(x.shape[:2] + window.out_shape, lowest, x.dtype)
    taps = []
    for tap in window.taps():
        ranges = _tap_ranges(window, spatial, tap)
        if ranges is None:
            continue
        taps.append((tap, ranges))
        out, src = ranges
        block = y[(Ellipsis,) + out]
        np.maximum(block, x[(Ellipsis,) + src], out=block)
    if num_outputs < 2:
        return y
    return y, _max_indices(x, y, window, taps, storage_order)


def _max_indices(x, y, window: Window, taps, storage_order: int) -> np.ndarray:
    """Walk the taps backwards, taking each one whose value equals the max: the first tap wins."""
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
    for tap, (out, src) in reversed(taps):
        # Input position of each output in the block, per axis, broadcast into a flat offset.
        offset = np.zeros((1, 1) + tuple(sl.stop - sl.start for sl in out), np.int64)
        for axis, (sl, stride) in enumerate(zip(src, strides)):
            shape = [1] * (nd + 2)
            shape[axis + 2] = -1
            offset = offset + (np.arange(sl.start, sl.stop, sl.step, dtype=np.int64) * stride).reshape(shape)
        block = (Ellipsis,) + out
        hit = x[(Ellipsis,) + src] == y[block]
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
    xc = x.astype(dtype, copy=False)
    total = np.zeros(x.shape[:2] + window.out_shape, dtype)
    for tap in window.taps():
        ranges = _tap_ranges(window, spatial, tap)
        if ranges is None:
            continue
        out, src = ranges
        total[(Ellipsis,) + out] += xc[(Ellipsis,) + src]
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
