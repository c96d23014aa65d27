"""The host-side decisions of the CUDA backend, checked without a GPU: which layout a plan's arena
uses, how a strided view's layout is read, which vector width a pooling layer gets, how a GEMM bias
broadcasts, and the activation expressions the epilogues compile."""

import math

import numpy as np
import pytest

from engine.gpu_runtime import uses_channels_last
from kernels.cuda.conv import _walk_order, extent, layout_of
from kernels.cuda.elementwise import activation_expr
from kernels.cuda.gemm import bias_2d
from kernels.cuda.pool import vector_width
from kernels.cuda.spec import Unsupported


def _header(precision="fp32", tf32=False, dtypes=("float32", "float32", "int64")):
    return {"precision": precision, "tf32": tf32,
            "values": {f"v{i}": {"dtype": d, "shape": ["N", 3]} for i, d in enumerate(dtypes)}}


def test_fp32_without_tf32_runs_nchw():
    assert uses_channels_last(_header()) is False


@pytest.mark.parametrize("header", [_header(tf32=True), _header(precision="fp16", dtypes=("float16", "float16")),
                                    _header(dtypes=("float32", "float16")), _header(dtypes=("int64",))],
                         ids=["tf32", "fp16", "mixed", "no-floats"])
def test_everything_else_stays_channels_last(header):
    assert uses_channels_last(header) is True


def _nhwc_view(n, c, h, w, dtype=np.float32):
    return np.empty((n, h, w, c), dtype=dtype).transpose(0, 3, 1, 2)


def test_layout_of_reads_strides_and_admits_ambiguity():
    assert layout_of((2, 8, 5, 5), np.empty((2, 8, 5, 5), np.float32).strides, 4) == "nchw"
    view = _nhwc_view(2, 8, 5, 5)
    assert layout_of(view.shape, view.strides, 4) == "nhwc"
    assert layout_of(view[:, 2:5].shape, view[:, 2:5].strides, 4) == "nhwc"  # a split's channel slice
    concat = np.empty((2, 12, 5, 5), np.float32)[:, 4:8]
    assert layout_of(concat.shape, concat.strides, 4) == "nchw"
    for shape in [(2, 1, 5, 5), (2, 8, 1, 1)]:  # one channel or one pixel: both layouts coincide
        assert layout_of(shape, np.empty(shape, np.float32).strides, 4) is None


def test_epilogue_walk_order_follows_the_destination():
    nchw = np.empty((2, 8, 5, 6), np.float32)
    assert _walk_order([nchw, nchw]) == "planes"
    assert _walk_order([nchw[:, 1:4], np.empty((2, 10, 5, 6), np.float32)[:, 5:8]]) == "planes"
    nhwc = _nhwc_view(2, 8, 5, 6)
    assert _walk_order([nhwc, nhwc]) == "channels"
    cropped = np.empty((2, 8, 5, 9), np.float32)[:, :, :, 1:7]  # rows not contiguous with each other
    assert _walk_order([cropped, cropped]) == "nchw"


def test_extent_counts_the_furthest_element():
    assert extent(np.empty((2, 3), np.float32)) == 6
    assert extent(np.empty((2, 10, 4, 4), np.float32)[:, 2:5]) == (1 * 160 + 2 * 16 + 3 * 4 + 3) + 1
    assert extent(np.empty((0, 3), np.float32)) == 0


@pytest.mark.parametrize("dtype,channels,expected", [(np.float16, 64, 8), (np.float16, 12, 4), (np.float16, 6, 2),
                                                     (np.float16, 5, 0), (np.float32, 64, 4), (np.float32, 6, 2),
                                                     (np.float32, 3, 0)])
def test_vector_width_follows_the_channel_count(dtype, channels, expected):
    x, y = _nhwc_view(2, channels, 9, 9, dtype), _nhwc_view(2, channels, 5, 5, dtype)
    assert vector_width(x.itemsize, channels, x.strides, y.strides, 4096, 8192) == expected


def test_vector_width_needs_channels_last_and_aligned_slices():
    x = np.empty((2, 64, 9, 9), np.float16)
    y = np.empty((2, 64, 5, 5), np.float16)
    assert vector_width(2, 64, x.strides, y.strides, 0, 0) == 0  # NCHW: channels are not contiguous
    x, y = _nhwc_view(2, 64, 9, 9, np.float16), _nhwc_view(2, 64, 5, 5, np.float16)
    assert vector_width(2, 64, x.strides, y.strides, 4096 + 4, 8192) == 2  # 4-byte aligned base only
    assert vector_width(2, 64, x.strides, y.strides, 4096, 8192 + 2) == 0
    wide = _nhwc_view(2, 68, 9, 9, np.float16)[:, 4:]  # 64 channels of a 68-channel buffer
    assert vector_width(2, 64, wide.strides, y.strides, 4096, 8192) == 4  # 136-byte pixel stride: 8-byte loads


@pytest.mark.parametrize("shape,rows,cols,strides", [((), 4, 6, (1, 1)), ((6,), 4, 6, (1, 6)), ((1, 6), 4, 6, (1, 6)),
                                                     ((4, 1), 4, 6, (4, 1)), ((4, 6), 4, 6, (4, 6))])
def test_bias_2d_keeps_what_broadcasts(shape, rows, cols, strides):
    c = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    out = bias_2d(c, rows, cols)
    assert out.dtype == np.float32 and out.shape == strides
    np.testing.assert_array_equal(np.broadcast_to(out, (rows, cols)), np.broadcast_to(c, (rows, cols)))


@pytest.mark.parametrize("shape", [(5,), (3, 6), (4, 6, 1)])
def test_bias_2d_refuses_what_does_not_broadcast(shape):
    with pytest.raises(Unsupported):
        bias_2d(np.zeros(shape), 4, 6)


def test_activation_expressions():
    assert activation_expr("", []) == "v"
    assert "fmaxf" in activation_expr("Clip", [0, 6]) and "6.0f" in activation_expr("Clip", [0, 6])
    assert "3.4e38f" in activation_expr("Clip", [-math.inf, math.inf])
    assert "0.0f" in activation_expr("LeakyRelu", [0])  # an int parameter still makes a float literal
    with pytest.raises(Unsupported):
        activation_expr("Gelu", [])
