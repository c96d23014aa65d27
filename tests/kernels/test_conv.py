"""Conv and ConvTranspose kernels against naive loop references on tiny inputs."""

import itertools

import numpy as np
import pytest

import kernels.cpu.conv as conv_module
from kernels.cpu import CPU_OPS
from kernels.cpu.conv import conv, conv_transpose, make_window
from kernels.registry import KernelError

RNG = np.random.default_rng(0)


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


# --- naive references ------------------------------------------------------------------------------


def naive_conv(x, w, b=None, strides=None, pads=None, dilations=None, group=1):
    """Direct definition: a loop over every output element, summing over its window."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    n_images, channels = x.shape[:2]
    spatial = x.shape[2:]
    nd = len(spatial)
    m, cg = w.shape[:2]
    kernel = w.shape[2:]
    strides = strides or [1] * nd
    dilations = dilations or [1] * nd
    pads = pads or [0] * (2 * nd)
    out_shape = [
        (spatial[i] + pads[i] + pads[i + nd] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(nd)
    ]
    mg = m // group
    y = np.zeros([n_images, m] + out_shape)
    for n, o in itertools.product(range(n_images), range(m)):
        g = o // mg
        for pos in itertools.product(*(range(s) for s in out_shape)):
            total = 0.0 if b is None else float(b[o])
            for ci in range(cg):
                for tap in itertools.product(*(range(k) for k in kernel)):
                    src = [pos[i] * strides[i] + tap[i] * dilations[i] - pads[i] for i in range(nd)]
                    if all(0 <= src[i] < spatial[i] for i in range(nd)):
                        total += x[(n, g * cg + ci) + tuple(src)] * w[(o, ci) + tap]
            y[(n, o) + pos] = total
    return y


def naive_conv_transpose(x, w, b=None, strides=None, pads=None, dilations=None, group=1, output_padding=None,
                         out_shape=None):
    """Scatter every input element through the kernel into the output (indices shifted by the begin pads)."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    n_images, channels = x.shape[:2]
    spatial = x.shape[2:]
    nd = len(spatial)
    mg = w.shape[1]
    kernel = w.shape[2:]
    strides = strides or [1] * nd
    dilations = dilations or [1] * nd
    pads = pads or [0] * (2 * nd)
    output_padding = output_padding or [0] * nd
    if out_shape is None:
        out_shape = [
            strides[i] * (spatial[i] - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i] + 1 - pads[i] - pads[i + nd]
            for i in range(nd)
        ]
    cg = channels // group
    y = np.zeros([n_images, mg * group] + list(out_shape))
    for n, c in itertools.product(range(n_images), range(channels)):
        g = c // cg
        for pos in itertools.product(*(range(s) for s in spatial)):
            for j in range(mg):
                for tap in itertools.product(*(range(k) for k in kernel)):
                    dst = [pos[i] * strides[i] + tap[i] * dilations[i] - pads[i] for i in range(nd)]
                    if all(0 <= dst[i] < out_shape[i] for i in range(nd)):
                        y[(n, g * mg + j) + tuple(dst)] += x[(n, c) + pos] * w[(c, j) + tap]
    if b is not None:
        y += b.astype(np.float64).reshape((1, -1) + (1,) * nd)
    return y


def assert_close(got, expected, dtype=np.float32, tol=1e-4):
    assert got.dtype == dtype
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=tol, atol=tol)


# --- Conv --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 3, 7), (4, 3, 3), dict(strides=[2], pads=[1, 2])),  # 1-D, asymmetric pads
        ((1, 2, 9), (2, 1, 3), dict(dilations=[3], group=2)),  # 1-D depthwise, dilated
        ((2, 3, 6, 5), (4, 3, 3, 3), dict(pads=[1, 1, 1, 1])),
        ((1, 4, 7, 8), (6, 2, 3, 2), dict(strides=[2, 3], pads=[0, 1, 2, 0], group=2)),
        ((2, 3, 8, 8), (2, 3, 3, 3), dict(dilations=[2, 2], pads=[2, 1, 0, 2])),
        ((1, 4, 6, 6), (8, 1, 3, 3), dict(group=4, pads=[1, 1, 1, 1], strides=[2, 2])),  # depthwise x2 multiplier
        ((2, 4, 5, 5), (3, 4, 1, 1), {}),  # pointwise, in place
        ((2, 4, 5, 7), (3, 4, 1, 1), dict(strides=[2, 3])),  # pointwise, strided
        ((1, 2, 4, 5, 4), (3, 2, 2, 3, 2), dict(pads=[1, 0, 1, 0, 1, 1], strides=[1, 2, 1])),  # 3-D
    ],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv_matches_naive(x_shape, w_shape, kwargs, with_bias):
    x, w = rand(*x_shape), rand(*w_shape)
    b = rand(w_shape[0]) if with_bias else None
    got = conv(x, w, b, **kwargs)
    assert_close(got, naive_conv(x, w, b, **kwargs))


@pytest.mark.parametrize("auto_pad, begin, end", [("SAME_UPPER", 1, 2), ("SAME_LOWER", 2, 1)])
def test_conv_auto_pad_same_splits_odd_padding(auto_pad, begin, end):
    # Input 9, kernel 4, stride 2: ceil(9 / 2) = 5 outputs need (5 - 1) * 2 + 4 - 9 = 3 pads.
    x, w = rand(1, 2, 9, 9), rand(3, 2, 4, 4)
    got = conv(x, w, auto_pad=auto_pad, strides=[2, 2], pads=[7, 7, 7, 7])  # pads ignored under auto_pad
    assert got.shape == (1, 3, 5, 5)
    assert_close(got, naive_conv(x, w, strides=[2, 2], pads=[begin, begin, end, end]))


def test_conv_auto_pad_valid_ignores_pads():
    x, w = rand(1, 1, 6, 6), rand(1, 1, 3, 3)
    got = conv(x, w, auto_pad="VALID", pads=[1, 1, 1, 1])
    assert_close(got, naive_conv(x, w))


def test_conv_small_images_go_through_multi_image_chunks(monkeypatch):
    # 4x4 outputs (16 positions) are batched several images per GEMM, then moved back to NCHW.
    monkeypatch.setattr(conv_module, "_GEMM_COLUMNS", 48)
    x, w, b = rand(7, 3, 4, 4), rand(5, 3, 3, 3), rand(5)
    got = conv(x, w, b, pads=[1, 1, 1, 1])
    assert_close(got, naive_conv(x, w, b, pads=[1, 1, 1, 1]))
    # 1x1 convolutions of small images take the same path (a transposing copy of the input).
    w1 = rand(5, 3, 1, 1)
    assert_close(conv(x, w1, b), naive_conv(x, w1, b))
    # The column buffer's size limit also caps the images per chunk: here 2 of 27 * 16 floats.
    monkeypatch.setattr(conv_module, "_COLUMN_BUFFER_BYTES", 2 * 27 * 16 * 4)
    assert conv_module._images_per_chunk(7, 16, 27 * 4) == 2
    assert_close(conv(x, w, b, pads=[1, 1, 1, 1]), naive_conv(x, w, b, pads=[1, 1, 1, 1]))


def test_conv_large_images_unroll_in_row_blocks(monkeypatch):
    monkeypatch.setattr(conv_module, "_COLUMN_BUFFER_BYTES", 1000)
    x, w, b = rand(2, 3, 23, 9), rand(4, 3, 3, 3), rand(4)
    assert conv_module._row_blocks(make_window("Conv", (23, 9), (3, 3), [2, 1], None, [1] * 4), 27 * 4) != [(0, 12)]
    for strides in ([1, 1], [2, 1]):
        got = conv(x, w, b, pads=[1, 1, 1, 1], strides=strides)
        assert_close(got, naive_conv(x, w, b, pads=[1, 1, 1, 1], strides=strides))


def test_conv_resnet_like_shapes_match_float64_gemm():
    # Larger shapes through the fast paths, checked against an einsum of the float64 window view.
    for x_shape, w_shape, stride, pad in [((2, 16, 30, 30), (8, 16, 3, 3), 1, 1), ((2, 3, 33, 33), (8, 3, 7, 7), 2, 3),
                                          ((3, 32, 6, 6), (16, 32, 3, 3), 1, 1), ((2, 32, 20, 20), (16, 32, 1, 1), 1, 0)]:
        x, w, b = rand(*x_shape), rand(*w_shape), rand(w_shape[0])
        got = conv(x, w, b, pads=[pad] * 4, strides=[stride] * 2)
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        k = w_shape[2]
        out = (x_shape[2] + 2 * pad - k) // stride + 1
        view = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
        expected = np.einsum("nchwij,mcij->nmhw", view[:, :, :out, :out], w.astype(np.float64)) + b[:, None, None]
        assert_close(got, expected, tol=1e-3)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_conv_keeps_dtype(dtype):
    x, w, b = rand(1, 2, 5, 5, dtype=dtype), rand(3, 2, 3, 3, dtype=dtype), rand(3, dtype=dtype)
    got = conv(x, w, b, pads=[1, 1, 1, 1])
    tol = 2e-2 if dtype == np.float16 else 1e-10
    assert_close(got, naive_conv(x, w, b, pads=[1, 1, 1, 1]), dtype=dtype, tol=tol)


def test_conv_empty_batch():
    got = conv(np.zeros((0, 2, 5, 5), np.float32), rand(3, 2, 3, 3))
    assert got.shape == (0, 3, 3, 3) and got.dtype == np.float32


@pytest.mark.parametrize(
    "x_shape, w_shape, b_shape, kwargs, message",
    [
        ((1, 3, 5, 5), (4, 2, 3, 3), None, {}, "channels"),
        ((1, 4, 5, 5), (3, 2, 3, 3), None, dict(group=2), "group"),
        ((1, 3, 5, 5), (4, 3, 3, 3), None, dict(kernel_shape=[2, 2]), "kernel_shape"),
        ((1, 3, 5, 5), (4, 3, 3, 3), (3,), {}, "bias"),
        ((1, 3, 5, 5), (4, 3, 3), None, {}, "rank"),
        ((3, 5), (4, 3), None, {}, "spatial"),
        ((1, 3, 2, 2), (4, 3, 3, 3), None, {}, "does not fit"),
        ((1, 3, 5, 5), (4, 3, 3, 3), None, dict(pads=[1, 1]), "pads"),
        ((1, 3, 5, 5), (4, 3, 3, 3), None, dict(strides=[0, 1]), "strides"),
        ((1, 3, 5, 5), (4, 3, 3, 3), None, dict(auto_pad="SAME"), "auto_pad"),
    ],
)
def test_conv_rejects_bad_input(x_shape, w_shape, b_shape, kwargs, message):
    b = None if b_shape is None else rand(*b_shape)
    with pytest.raises(KernelError, match=message):
        conv(rand(*x_shape), rand(*w_shape), b, **kwargs)


def test_conv_rejects_integer_input():
    with pytest.raises(KernelError, match="int32"):
        conv(np.ones((1, 1, 3, 3), np.int32), np.ones((1, 1, 1, 1), np.int32))


# --- ConvTranspose -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 3, 4), (3, 2, 3), dict(strides=[2])),  # 1-D
        ((1, 2, 3, 3), (2, 3, 3, 3), {}),
        ((2, 2, 3, 4), (2, 2, 3, 2), dict(strides=[2, 3], pads=[1, 0, 0, 1])),
        ((1, 2, 3, 3), (2, 1, 2, 2), dict(strides=[2, 2], dilations=[2, 1], output_padding=[1, 1])),
        ((1, 4, 3, 3), (4, 2, 3, 3), dict(group=2, strides=[2, 2], pads=[1, 1, 1, 1])),
        ((1, 2, 2, 3, 2), (2, 2, 2, 2, 3), dict(strides=[2, 1, 2])),  # 3-D
    ],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv_transpose_matches_naive(x_shape, w_shape, kwargs, with_bias):
    x, w = rand(*x_shape), rand(*w_shape)
    group = kwargs.get("group", 1)
    b = rand(w_shape[1] * group) if with_bias else None
    got = conv_transpose(x, w, b, **kwargs)
    assert_close(got, naive_conv_transpose(x, w, b, **kwargs))


def test_conv_transpose_output_shape_beyond_full_size_pads_with_zeros():
    # Full size along H is 3 * (3 - 1) + 3 = 9; asking for 10 adds one row (zero plus bias) at the end.
    x, w, b = rand(1, 1, 3, 3), rand(1, 2, 3, 3), rand(2)
    got = conv_transpose(x, w, b, strides=[3, 2], output_shape=[10, 8])
    expected = naive_conv_transpose(x, w, b, strides=[3, 2], pads=[0, 0, -1, -1], out_shape=[10, 8])
    assert_close(got, expected)
    np.testing.assert_allclose(got[0, :, 9, :], np.broadcast_to(b[:, None], (2, 8)), rtol=1e-6)


def test_conv_transpose_output_shape_smaller_crops_begin_first():
    # Full size 7 (stride 2, kernel 3, input 3); output 5 removes 2: one at each end. Output 6 removes
    # 1: NOTSET and SAME_LOWER put it at the beginning, SAME_UPPER at the end.
    x, w = rand(1, 1, 3, 3), rand(1, 1, 3, 3)
    assert_close(conv_transpose(x, w, strides=[2, 2], output_shape=[5, 5]),
                 naive_conv_transpose(x, w, strides=[2, 2], pads=[1, 1, 1, 1]))
    assert_close(conv_transpose(x, w, strides=[2, 2], output_shape=[6, 6]),
                 naive_conv_transpose(x, w, strides=[2, 2], pads=[1, 1, 0, 0]))
    assert_close(conv_transpose(x, w, strides=[2, 2], auto_pad="SAME_UPPER"),
                 naive_conv_transpose(x, w, strides=[2, 2], pads=[0, 0, 1, 1]))
    assert_close(conv_transpose(x, w, strides=[2, 2], auto_pad="SAME_LOWER"),
                 naive_conv_transpose(x, w, strides=[2, 2], pads=[1, 1, 0, 0]))


def test_conv_transpose_output_shape_may_include_batch_and_channels():
    x, w = rand(1, 1, 3, 3), rand(1, 1, 3, 3)
    assert conv_transpose(x, w, strides=[2, 2], output_shape=[1, 1, 6, 6]).shape == (1, 1, 6, 6)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_conv_transpose_keeps_dtype(dtype):
    x, w = rand(1, 2, 3, 3, dtype=dtype), rand(2, 2, 2, 2, dtype=dtype)
    got = conv_transpose(x, w, strides=[2, 2])
    assert_close(got, naive_conv_transpose(x, w, strides=[2, 2]), dtype=dtype, tol=2e-2 if dtype == np.float16 else 1e-10)


@pytest.mark.parametrize(
    "x_shape, w_shape, b_shape, kwargs, message",
    [
        ((1, 3, 4, 4), (2, 2, 3, 3), None, {}, "channels"),
        ((1, 3, 4, 4), (3, 2, 3, 3), None, dict(group=2), "group"),
        ((1, 2, 4, 4), (2, 2, 3, 3), (3,), {}, "bias"),
        ((1, 2, 4, 4), (2, 2, 3, 3), None, dict(kernel_shape=[3, 2]), "kernel_shape"),
        ((1, 2, 2, 2), (2, 1, 2, 2), None, dict(pads=[2, 2, 2, 2]), "no output"),
        ((1, 2, 4, 4), (2, 2, 3, 3), None, dict(output_padding=[1]), "output_padding"),
    ],
)
def test_conv_transpose_rejects_bad_input(x_shape, w_shape, b_shape, kwargs, message):
    b = None if b_shape is None else rand(*b_shape)
    with pytest.raises(KernelError, match=message):
        conv_transpose(rand(*x_shape), rand(*w_shape), b, **kwargs)


# --- registration ------------------------------------------------------------------------------------


def test_registered_versions():
    assert CPU_OPS.versions("Conv") == [1]
    assert CPU_OPS.versions("ConvTranspose") == [1]
    assert CPU_OPS.lookup("Conv", 22).fn is conv
    assert CPU_OPS.lookup("ConvTranspose", 7).fn is conv_transpose


# --- out= (used by fused layers) ---------------------------------------------------------------------


@pytest.mark.parametrize("w_shape, kwargs", [((4, 3, 3, 3), dict(pads=[1, 1, 1, 1])), ((4, 3, 1, 1), {}),
                                             ((4, 3, 3, 3), dict(strides=[2, 2]))])
def test_conv_writes_into_out(w_shape, kwargs):
    x, w, b = rand(2, 3, 6, 6), rand(*w_shape), rand(4)
    expected = naive_conv(x, w, b, **kwargs)
    out = np.full(expected.shape, np.nan, np.float32)
    assert conv(x, w, b, out=out, **kwargs) is out
    assert_close(out, expected)
    # A channel slice of a larger buffer (as a concat arena would hand over) is written in place.
    arena = np.full((2, 7) + expected.shape[2:], np.nan, np.float32)
    view = arena[:, 2:6]
    assert conv(x, w, b, out=view, **kwargs) is view
    assert_close(arena[:, 2:6], expected)
    assert np.isnan(arena[:, :2]).all() and np.isnan(arena[:, 6:]).all()


def test_conv_out_that_cannot_be_flattened_and_float16():
    x, w = rand(1, 2, 5, 5), rand(3, 2, 3, 3)
    expected = naive_conv(x, w)
    arena = np.zeros((1, 3, 3, 6), np.float32)
    view = arena[..., :3]  # rows padded to 6: not viewable as (N, M, 9)
    assert conv(x, w, out=view) is view
    assert_close(view, expected)
    half = np.zeros((1, 3, 3, 3), np.float16)
    assert conv(x.astype(np.float16), w.astype(np.float16), out=half) is half
    np.testing.assert_allclose(half, expected, rtol=2e-2, atol=2e-2)


def test_conv_rejects_wrong_out():
    with pytest.raises(KernelError, match="out"):
        conv(rand(1, 2, 5, 5), rand(3, 2, 3, 3), out=np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(KernelError, match="out"):
        conv(rand(1, 2, 5, 5), rand(3, 2, 3, 3), out=np.zeros((1, 3, 3, 3), np.float64))


def test_conv_bfloat16_computes_in_float32():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    x, w = rand(1, 2, 5, 5).astype(bf16), rand(3, 2, 3, 3).astype(bf16)
    got = conv(x, w, pads=[1, 1, 1, 1])
    assert got.dtype == bf16
    expected = naive_conv(x.astype(np.float32), w.astype(np.float32), pads=[1, 1, 1, 1])
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=3e-2, atol=3e-2)
    assert conv_transpose(x, rand(2, 2, 2, 2).astype(bf16)).dtype == bf16
