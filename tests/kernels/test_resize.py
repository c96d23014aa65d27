"""Unit tests for kernels/cpu/resize.py.

Oracles: plain-loop bilinear / nearest written from the spec's formulas, np.repeat for integer
nearest upsampling, and onnx's reference Resize over a grid of modes.
"""

import itertools
import math

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from kernels.cpu import CPU_OPS
from kernels.cpu import resize as R
from kernels.registry import KernelError

rng = np.random.default_rng(0)


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def test_registered_versions():
    assert CPU_OPS.versions("Resize") == [10, 11]
    assert CPU_OPS.versions("Upsample") == [7, 9]


# --------------------------------------------------------------------------------------------
# plain-loop oracles


def _bilinear_loop(x, out_h, out_w):
    """Half-pixel bilinear on the last two axes, one output pixel at a time."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, out_h, out_w), dtype=np.float64)
    sy, sx = out_h / h, out_w / w
    for i in range(out_h):
        for j in range(out_w):
            y = min(max((i + 0.5) / sy - 0.5, 0), h - 1)
            xx = min(max((j + 0.5) / sx - 0.5, 0), w - 1)
            y0, x0 = int(math.floor(y)), int(math.floor(xx))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = y - y0, xx - x0
            out[:, :, i, j] = (x[:, :, y0, x0] * (1 - dy) * (1 - dx) + x[:, :, y0, x1] * (1 - dy) * dx
                               + x[:, :, y1, x0] * dy * (1 - dx) + x[:, :, y1, x1] * dy * dx)
    return out


@pytest.mark.parametrize("out_hw", [(7, 9), (2, 3), (5, 4)])
def test_bilinear_half_pixel_against_loop(out_hw):
    x = randn(2, 3, 4, 6)
    out = R.resize_11(x, None, None, np.array([2, 3, *out_hw], dtype=np.int64), mode="linear")
    assert out.dtype == np.float32 and out.shape == (2, 3, *out_hw)
    np.testing.assert_allclose(out, _bilinear_loop(x.astype(np.float64), *out_hw), rtol=1e-5, atol=1e-6)


def _nearest_loop(x, scale, coord, nearest_mode):
    out_len = int(math.floor(len(x) * scale))
    out = []
    for i in range(out_len):
        if coord == "asymmetric":
            s = i / scale
        elif coord == "half_pixel":
            s = (i + 0.5) / scale - 0.5
        else:  # align_corners
            s = i * (len(x) - 1) / (len(x) * scale - 1)
        frac = s - math.floor(s)
        if nearest_mode == "floor":
            k = math.floor(s)
        elif nearest_mode == "ceil":
            k = math.ceil(s)
        elif nearest_mode == "round_prefer_floor":
            k = math.floor(s) if frac <= 0.5 else math.ceil(s)
        else:
            k = math.ceil(s) if frac >= 0.5 else math.floor(s)
        out.append(x[min(max(k, 0), len(x) - 1)])
    return np.array(out)


@pytest.mark.parametrize("scale, coord, nearest_mode", list(itertools.product(
    [0.6, 1.5, 2.0, 2.5, 3.0],
    ["asymmetric", "half_pixel", "align_corners"],
    ["floor", "ceil", "round_prefer_floor", "round_prefer_ceil"])))
def test_nearest_modes_against_loop(scale, coord, nearest_mode):
    x = np.arange(5, dtype=np.int64) * 10
    out = R.resize_11(x, None, np.array([scale], dtype=np.float32), coordinate_transformation_mode=coord,
                      nearest_mode=nearest_mode)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, _nearest_loop(x, float(np.float32(scale)), coord, nearest_mode))


def test_nearest_keeps_any_dtype():
    x = np.array([[True, False], [False, True]])
    out = R.resize_11(x, None, np.array([2, 2], dtype=np.float32), mode="nearest")
    assert out.dtype == bool
    np.testing.assert_array_equal(out, np.repeat(np.repeat(x, 2, 0), 2, 1))


# --------------------------------------------------------------------------------------------
# legacy Upsample / Resize-10


def test_upsample_nearest_integer_scales_repeat():
    x = randn(1, 2, 3, 4)
    scales = np.array([1, 1, 2, 3], dtype=np.float32)
    expected = np.repeat(np.repeat(x, 2, axis=2), 3, axis=3)
    np.testing.assert_array_equal(R.upsample_9(x, scales), expected)
    np.testing.assert_array_equal(R.upsample_7(x, scales=[1.0, 1.0, 2.0, 3.0]), expected)
    np.testing.assert_array_equal(R.resize_10(x, scales), expected)


def test_upsample_linear_is_asymmetric():
    x = np.array([[0.0, 10.0, 20.0]], dtype=np.float32)
    out = R.upsample_9(x, np.array([1, 2], dtype=np.float32), mode="linear")
    # source coordinate i / 2; the last ones clamp to the edge
    np.testing.assert_allclose(out, [[0, 5, 10, 15, 20, 20]])
    assert out.dtype == np.float32


def test_resize_10_downscale_rounds_up():
    x = np.arange(5, dtype=np.float32)
    out = R.resize_10(x, np.array([0.6], dtype=np.float32))
    np.testing.assert_array_equal(out, [0, 2, 4])  # ceil(0), ceil(1.67), ceil(3.33)


def test_legacy_errors():
    with pytest.raises(KernelError, match="scales"):
        R.upsample_9(randn(2, 2), np.array([2.0], dtype=np.float32))
    with pytest.raises(KernelError, match="mode"):
        R.upsample_9(randn(2, 2), np.array([2.0, 2.0], dtype=np.float32), mode="cubic")


# --------------------------------------------------------------------------------------------
# against onnx's reference Resize


def _reference(x, roi=None, scales=None, sizes=None, **attrs):
    names = ["X", "roi" if roi is not None else "", "scales" if scales is not None else "",
             "sizes" if sizes is not None else ""]
    while names[-1] == "":
        names.pop()
    node = helper.make_node("Resize", names, ["Y"], **attrs)
    feeds = {"X": x, "roi": roi, "scales": scales, "sizes": sizes}
    evaluator = ReferenceEvaluator(node)
    return evaluator.run(None, {n: feeds[n] for n in names if n})[0]


GRID = list(itertools.product(
    ["linear", "cubic"],
    ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric"],
    [("scales", [1.0, 1.0, 0.6, 1.7]), ("scales", [1.0, 1.0, 2.0, 0.5]), ("sizes", [1, 2, 3, 9])],
    [0, 1],
))


@pytest.mark.parametrize("mode, coord, target, antialias", GRID)
def test_against_reference(mode, coord, target, antialias):
    x = randn(1, 2, 5, 6)
    kind, values = target
    scales = np.array(values, dtype=np.float32) if kind == "scales" else None
    sizes = np.array(values, dtype=np.int64) if kind == "sizes" else None
    attrs = dict(mode=mode, coordinate_transformation_mode=coord, antialias=antialias)
    expected = _reference(x, None, scales, sizes, **attrs)
    got = R.resize_11(x, None, scales, sizes, **attrs)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("a, exclude", [(-0.5, 1), (-0.75, 1), (-0.5, 0)])
def test_cubic_coefficient_and_exclude_outside(a, exclude):
    x = randn(1, 1, 4, 5)
    scales = np.array([1, 1, 1.5, 0.8], dtype=np.float32)
    attrs = dict(mode="cubic", cubic_coeff_a=a, exclude_outside=exclude)
    np.testing.assert_allclose(R.resize_11(x, None, scales, **attrs), _reference(x, None, scales, **attrs),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller", "stretch"])
def test_axes_and_keep_aspect_ratio(policy):
    x = randn(2, 4, 6, 3)
    sizes = np.array([5, 7], dtype=np.int64)
    attrs = dict(mode="nearest", axes=[2, 1], keep_aspect_ratio_policy=policy)
    expected = _reference(x, None, None, sizes, **attrs)
    got = R.resize_11(x, None, None, sizes, **attrs)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    if policy == "not_larger":
        assert got.shape == (2, 3, 5, 3)  # one scale, min(5/6, 7/4): 4 * 5/6 rounds to 3, 6 * 5/6 = 5


def test_tf_crop_and_resize_with_extrapolation():
    x = randn(1, 1, 4, 4)
    roi = np.array([0, 0, 0.4, -0.3, 1, 1, 1.2, 0.7], dtype=np.float32)
    sizes = np.array([1, 1, 3, 3], dtype=np.int64)
    for mode in ("linear", "nearest", "cubic"):
        attrs = dict(mode=mode, coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=10.0)
        got = R.resize_11(x, roi, None, sizes, **attrs)
        np.testing.assert_allclose(got, _reference(x, roi, None, sizes, **attrs), rtol=1e-5, atol=1e-5)
        assert (got[..., 2, :] == 10).all() and (got[..., :, 0] == 10).all()


def test_tf_crop_and_resize_roi_with_axes():
    x = randn(1, 2, 5, 5)
    roi = np.array([0.2, 0.1, 0.8, 0.7], dtype=np.float32)
    scales = np.array([0.8, 1.4], dtype=np.float32)
    attrs = dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize", axes=[3, 2])
    np.testing.assert_allclose(R.resize_11(x, roi, scales, **attrs), _reference(x, roi, scales, **attrs),
                               rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# dtypes and errors


def test_float16_and_uint8_keep_their_dtype():
    x16 = randn(1, 1, 3, 3, dtype=np.float16)
    out = R.resize_11(x16, None, np.array([1, 1, 2, 2], dtype=np.float32), mode="linear")
    assert out.dtype == np.float16 and out.shape == (1, 1, 6, 6)
    img = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    out = R.resize_11(img, None, np.array([2, 2], dtype=np.float32), mode="cubic")
    assert out.dtype == np.uint8  # overshoot of the cubic filter is clipped, not wrapped
    expected = _reference(img.astype(np.float64), None, np.array([2, 2], dtype=np.float32), mode="cubic")
    np.testing.assert_array_equal(out, np.clip(np.rint(expected), 0, 255))


def test_empty_scales_tensor_means_absent():
    x = randn(1, 1, 2, 2)
    out = R.resize_11(x, np.array([], dtype=np.float32), np.array([], dtype=np.float32),
                      np.array([1, 1, 4, 4], dtype=np.int64))
    assert out.shape == (1, 1, 4, 4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(scales=np.array([1, 1, 2, 2], np.float32), sizes=np.array([1, 1, 4, 4])), "exactly one"),
    (dict(), "exactly one"),
    (dict(scales=np.array([2, 2], np.float32)), "2 scales for 4 axes"),
    (dict(sizes=np.array([1, 1, 4])), "3 sizes for 4 axes"),
    (dict(scales=np.array([1, 1, -2, 2], np.float32)), "positive"),
    (dict(scales=np.array([1, 1, 2, 2], np.float32), mode="bicubic"), "unknown mode"),
    (dict(scales=np.array([1, 1, 2, 2], np.float32), coordinate_transformation_mode="corner"), "coordinate_transformation_mode"),
    (dict(scales=np.array([1, 1, 2, 2], np.float32), nearest_mode="legacy"), "nearest_mode"),
    (dict(scales=np.array([1, 1, 2, 2], np.float32), coordinate_transformation_mode="tf_crop_and_resize"), "needs roi"),
    (dict(sizes=np.array([4, 4]), axes=[2, 2]), "invalid axes"),
    (dict(sizes=np.array([1, 1, 4, 4]), keep_aspect_ratio_policy="fit"), "keep_aspect_ratio_policy"),
])
def test_errors(kwargs, message):
    x = randn(1, 1, 2, 2)
    scales, sizes = kwargs.pop("scales", None), kwargs.pop("sizes", None)
    with pytest.raises(KernelError, match=message):
        R.resize_11(x, None, scales, sizes, **kwargs)
