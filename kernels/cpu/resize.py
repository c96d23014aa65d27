"""Resize and Upsample.

Resizing is separable: each resized axis is handled on its own, in turn. For one axis the kernel
first works out, for every output position, the source coordinate (per the
coordinate_transformation_mode), then the source indices it reads ("taps") and their weights.
Those small per-axis tables are computed once; the data is then gathered with np.take and blended
tap by tap, so the work is vectorised over everything else.

Conventions that follow ONNX's definition of the op (and its reference implementation, which made
the conformance data):
  * coordinates are computed in float64 from the float32 scales;
  * the "length_resized" in the align_corners / pytorch_half_pixel / tf_crop_and_resize formulas is
    scale * input length, which may be fractional when the scales input is used;
  * linear and cubic taps outside the input read the edge pixel (clamped indices), unless
    exclude_outside zeroes their weights and the rest are renormalised;
  * with antialias (Resize-18+, linear and cubic only) a downscaling axis stretches the filter by
    1 / scale, so more input pixels contribute, and the weights are normalised to sum to 1.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from kernels.cpu._registry import op
from kernels.registry import KernelError

_COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                     "asymmetric", "tf_crop_and_resize", "tf_half_pixel_for_nn")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "legacy")


@dataclasses.dataclass(frozen=True)
class _Axis:
    """How one axis is resized."""

    axis: int
    in_size: int
    out_size: int
    scale: float
    roi: tuple[float, float] = (0.0, 1.0)  # only tf_crop_and_resize reads it


# --------------------------------------------------------------------------------------------
# per-axis tables


def _source_coordinates(a: _Axis, mode: str) -> np.ndarray:
    """x_original for every output position along the axis (float64)."""
    x = np.arange(a.out_size, dtype=np.float64)
    length = a.scale * a.in_size  # "length_resized", fractional when it comes from a scale
    if mode == "half_pixel":
        return (x + 0.5) / a.scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = a.in_size / 2 * (1 - a.out_size / length)
        return offset + (x + 0.5) / a.scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / a.scale - 0.5 if length > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * (a.in_size - 1) / (length - 1) if length != 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / a.scale
    if mode == "tf_half_pixel_for_nn":  # Resize-11 only
        return (x + 0.5) / a.scale
    if mode == "tf_crop_and_resize":
        start, end = a.roi
        if length > 1:
            return start * (a.in_size - 1) + x * (end - start) * (a.in_size - 1) / (length - 1)
        return np.full_like(x, 0.5 * (start + end) * (a.in_size - 1))
    raise KernelError(f"Resize: unknown coordinate_transformation_mode '{mode}' (one of {', '.join(_COORDINATE_MODES[:-1])})")


def _nearest_indices(coords: np.ndarray, nearest_mode: str, a: _Axis) -> np.ndarray:
    if nearest_mode == "round_prefer_floor":
        idx = np.ceil(coords - 0.5)
    elif nearest_mode == "round_prefer_ceil":
        idx = np.floor(coords + 0.5)
    elif nearest_mode == "floor":
        idx = np.floor(coords)
    elif nearest_mode == "ceil":
        idx = np.ceil(coords)
    elif nearest_mode == "legacy":
        # Upsample / Resize-10 had no nearest_mode; runtimes truncate when upscaling and round up
        # when downscaling.
        idx = np.ceil(coords) if a.scale < 1 else np.floor(coords)
    else:
        raise KernelError(f"Resize: unknown nearest_mode '{nearest_mode}' (one of {', '.join(_NEAREST_MODES[:-1])})")
    return np.clip(idx, 0, a.in_size - 1).astype(np.intp)


def _cubic(d: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with coefficient a, at distances d."""
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _triangle(d: np.ndarray) -> np.ndarray:
    return np.clip(1 - np.abs(d), 0.0, 1.0)


def _filter_taps(coords: np.ndarray, a: _Axis, mode: str, cubic_coeff_a: float, antialias: bool,
                 exclude_outside: bool) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights), each (out_size, taps), for linear or cubic interpolation.

    `base` is the pixel at or just left of x (x itself minus one when x is an integer, so
    `frac` is in (0, 1]); the taps are base + start ... base + start + taps - 1. The filter
    reaches 1 pixel (linear) or 2 (cubic) each side, times 1 / scale when antialiasing a
    downscale.
    """
    reach = 1 if mode == "linear" else 2
    stretch = min(a.scale, 1.0) if antialias else 1.0
    start = math.floor(-reach / stretch) + 1
    taps = 2 - 2 * start
    base = np.ceil(coords) - 1
    frac = coords - base
    offsets = np.arange(start, start + taps, dtype=np.float64)
    distance = (offsets[None, :] - frac[:, None]) * stretch
    weights = _triangle(distance) if mode == "linear" else _cubic(distance, cubic_coeff_a)
    indices = base[:, None].astype(np.int64) + np.arange(start, start + taps)[None, :]
    if exclude_outside:
        weights = np.where((indices < 0) | (indices >= a.in_size), 0.0, weights)
    if antialias or exclude_outside:
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total == 0, 1.0, total)
    return np.clip(indices, 0, a.in_size - 1).astype(np.intp), weights


# --------------------------------------------------------------------------------------------
# the resampler


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """Blend in float32, or float64 for float64 and wide integers (exact up to 2**53)."""
    if dtype == np.float64 or (dtype.kind in "iu" and dtype.itemsize >= 4):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _to_output(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu":  # round and saturate integer images
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(dtype, copy=False)


def _resample(x: np.ndarray, axes: list[_Axis], *, mode: str, coordinate_mode: str, nearest_mode: str,
              cubic_coeff_a: float = -0.75, exclude_outside: bool = False, antialias: bool = False,
              extrapolation_value: float = 0.0) -> np.ndarray:
    if mode not in ("nearest", "linear", "cubic"):
        raise KernelError(f"Resize: unknown mode '{mode}' (nearest, linear or cubic)")
    if mode != "nearest" and x.dtype.kind not in "fiu":
        raise KernelError(f"Resize: {mode} interpolation needs a numeric tensor, got {x.dtype}")
    crop = coordinate_mode == "tf_crop_and_resize"
    out_dtype = x.dtype
    y = x if mode == "nearest" else x.astype(_work_dtype(x.dtype))
    outside = []  # tf_crop_and_resize: (axis, mask of output positions whose source lies outside)
    for a in axes:
        if a.out_size == a.in_size and a.scale == 1 and not crop:
            continue  # every coordinate mode maps this axis onto itself
        if a.in_size == 0 and a.out_size:
            raise KernelError(f"Resize: cannot resize axis {a.axis} of size 0 to {a.out_size}")
        coords = _source_coordinates(a, coordinate_mode)
        if crop:
            outside.append((a.axis, (coords < 0) | (coords > a.in_size - 1)))
        if mode == "nearest":
            y = np.take(y, _nearest_indices(coords, nearest_mode, a), axis=a.axis)
            continue
        indices, weights = _filter_taps(coords, a, mode, cubic_coeff_a, antialias, exclude_outside)
        weights = weights.astype(y.dtype)
        along = (1,) * a.axis + (a.out_size,) + (1,) * (y.ndim - a.axis - 1)
        blended = np.take(y, indices[:, 0], axis=a.axis) * weights[:, 0].reshape(along)
        for k in range(1, indices.shape[1]):  # a few filter taps
            blended += np.take(y, indices[:, k], axis=a.axis) * weights[:, k].reshape(along)
        y = blended
    if outside:
        mask = np.zeros((1,) * y.ndim, dtype=bool)
        for axis, flags in outside:
            mask = mask | flags.reshape((1,) * axis + (-1,) + (1,) * (y.ndim - axis - 1))
        y = np.where(mask, np.asarray(extrapolation_value).astype(y.dtype), y)
    return _to_output(y, out_dtype)


# --------------------------------------------------------------------------------------------
# plans from scales / sizes


def _floats(values) -> list[float]:
    return [float(v) for v in np.asarray(values).reshape(-1)]


def _given(t) -> bool:
    """An optional input that is present and not the empty tensor old exporters pass."""
    return t is not None and np.asarray(t).size > 0


def _axes_from_scales(shape: tuple, axes: list[int], scales: list[float]) -> list[_Axis]:
    result = []
    for axis, scale in zip(axes, scales):
        if not scale > 0:
            raise KernelError(f"Resize: scales must be positive, got {scales}")
        result.append(_Axis(axis, shape[axis], int(math.floor(shape[axis] * scale)), scale))
    return result


def _axes_from_sizes(shape: tuple, axes: list[int], sizes: list[int], policy: str) -> list[_Axis]:
    if any(s < 0 for s in sizes):
        raise KernelError(f"Resize: sizes must be non-negative, got {sizes}")
    for axis, size in zip(axes, sizes):
        if shape[axis] == 0 and size:
            raise KernelError(f"Resize: cannot resize axis {axis} of size 0 to {size}")
    ratios = [size / shape[axis] if shape[axis] else 1.0 for axis, size in zip(axes, sizes)]
    if policy == "stretch":
        return [_Axis(axis, shape[axis], size, ratio) for axis, size, ratio in zip(axes, sizes, ratios)]
    if policy not in ("not_larger", "not_smaller"):
        raise KernelError(f"Resize: unknown keep_aspect_ratio_policy '{policy}' (stretch, not_larger, not_smaller)")
    scale = min(ratios) if policy == "not_larger" else max(ratios)
    # One scale for every axis, the size rounded half up.
    return [_Axis(axis, shape[axis], int(scale * shape[axis] + 0.5), scale) for axis in axes]


def _with_roi(plan: list[_Axis], roi) -> list[_Axis]:
    values = _floats(roi)
    n = len(plan)
    if len(values) != 2 * n:
        raise KernelError(f"Resize: roi has {len(values)} values; expected {2 * n} (starts then ends of {n} axes)")
    return [dataclasses.replace(a, roi=(values[i], values[n + i])) for i, a in enumerate(plan)]


# --------------------------------------------------------------------------------------------
# kernels


def _legacy(x, scales, mode: str):
    """Upsample-7/9 and Resize-10: scales for every axis, asymmetric coordinates."""
    scales = _floats(scales)
    if len(scales) != x.ndim:
        raise KernelError(f"Resize: {len(scales)} scales for input of rank {x.ndim} (shape {x.shape})")
    if mode == "bilinear":  # Upsample-1's name for it
        mode = "linear"
    if mode not in ("nearest", "linear"):
        raise KernelError(f"Resize: mode '{mode}' is not nearest or linear")
    plan = _axes_from_scales(x.shape, list(range(x.ndim)), scales)
    return _resample(x, plan, mode=mode, coordinate_mode="asymmetric", nearest_mode="legacy")


@op("Upsample", since=7)
def upsample_7(x, *, scales, mode="nearest"):
    """Upsample-7: scales attribute; output dims floor(input dim * scale)."""
    return _legacy(x, scales, mode)


@op("Upsample", since=9)
def upsample_9(x, scales, *, mode="nearest"):
    """Upsample-9: scales as an input."""
    return _legacy(x, scales, mode)


@op("Resize", since=10)
def resize_10(x, scales, *, mode="nearest"):
    """Resize-10: the same op as Upsample-9."""
    return _legacy(x, scales, mode)


@op("Resize", since=11)
def resize_11(x, roi=None, scales=None, sizes=None, *, antialias=0, axes=None,
              coordinate_transformation_mode="half_pixel", cubic_coeff_a=-0.75, exclude_outside=0,
              extrapolation_value=0.0, keep_aspect_ratio_policy="stretch", mode="nearest",
              nearest_mode="round_prefer_floor"):
    """Resize-11+. One of scales or sizes (an empty tensor counts as absent). Resize-18 added
    axes, keep_aspect_ratio_policy and antialias; Resize-19 half_pixel_symmetric.
    Output dims: floor(input dim * scale), or the sizes."""
    rank = x.ndim
    if axes is None:
        axes = list(range(rank))
    else:
        axes = [int(a) + rank if int(a) < 0 else int(a) for a in axes]
        if any(not 0 <= a < rank for a in axes) or len(set(axes)) != len(axes):
            raise KernelError(f"Resize: invalid axes {axes} for input of rank {rank}")
    if _given(scales) == _given(sizes):
        raise KernelError("Resize needs exactly one of scales and sizes (the other absent or empty)")
    if _given(scales):
        values = _floats(scales)
        if len(values) != len(axes):
            raise KernelError(f"Resize: {len(values)} scales for {len(axes)} axes (input shape {x.shape})")
        plan = _axes_from_scales(x.shape, axes, values)
    else:
        values = [int(v) for v in np.asarray(sizes).reshape(-1)]
        if len(values) != len(axes):
            raise KernelError(f"Resize: {len(values)} sizes for {len(axes)} axes (input shape {x.shape})")
        plan = _axes_from_sizes(x.shape, axes, values, keep_aspect_ratio_policy)
    if coordinate_transformation_mode == "tf_crop_and_resize":
        if not _given(roi):
            raise KernelError("Resize: coordinate_transformation_mode tf_crop_and_resize needs roi")
        plan = _with_roi(plan, roi)
    if nearest_mode == "legacy":  # an internal name, not one of ONNX's
        raise KernelError(f"Resize: unknown nearest_mode '{nearest_mode}' (one of {', '.join(_NEAREST_MODES[:-1])})")
    if antialias and mode == "nearest":
        antialias = 0  # antialias applies to linear and cubic only
    return _resample(x, plan, mode=mode, coordinate_mode=coordinate_transformation_mode,
                     nearest_mode=nearest_mode, cubic_coeff_a=float(cubic_coeff_a),
                     exclude_outside=bool(exclude_outside), antialias=bool(antialias),
                     extrapolation_value=float(extrapolation_value))
