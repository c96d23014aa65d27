"""engine/weights.py: each function against a direct computation of what it claims."""

import numpy as np
import pytest

from engine import weights
from kernels.cpu import CPU_OPS

RNG = np.random.default_rng(0)


def _bn_params(c, dtype=np.float32):
    gamma = RNG.uniform(0.5, 2.0, c).astype(dtype)
    beta = RNG.standard_normal(c).astype(dtype)
    mean = RNG.standard_normal(c).astype(dtype)
    var = RNG.uniform(0.1, 3.0, c).astype(dtype)
    return gamma, beta, mean, var


def _bn(y, gamma, beta, mean, var, eps, axis=1):
    shape = [1] * y.ndim
    shape[axis] = -1
    r = lambda a: np.asarray(a, np.float64).reshape(shape)  # noqa: E731
    return (y.astype(np.float64) - r(mean)) / np.sqrt(r(var) + eps) * r(gamma) + r(beta)


def _conv(x, w, b, group=1):
    return CPU_OPS.lookup("Conv", 13).fn(x, w, b, group=group, pads=[1] * (2 * (w.ndim - 2)))


def _conv_transpose(x, w, b, group=1):
    return CPU_OPS.lookup("ConvTranspose", 13).fn(x, w, b, group=group, strides=[2] * (w.ndim - 2))


def test_batch_norm_affine_is_the_normalisation():
    gamma, beta, mean, var = _bn_params(5)
    scale, shift = weights.batch_norm_affine(gamma, beta, mean, var, 1e-3)
    assert scale.dtype == shift.dtype == np.float32
    x = RNG.standard_normal((3, 5, 4)).astype(np.float32)
    got = x * scale[:, None] + shift[:, None]
    np.testing.assert_allclose(got, _bn(x, gamma, beta, mean, var, 1e-3), rtol=1e-5, atol=1e-5)
    s64, _ = weights.batch_norm_affine(gamma, beta, mean, var, 1e-3, dtype=np.float64)
    assert s64.dtype == np.float64
    np.testing.assert_allclose(s64, gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + 1e-3))


def test_batch_norm_affine_rejects_mismatched_parameters():
    gamma, beta, mean, var = _bn_params(5)
    with pytest.raises(ValueError, match="1-D of one length"):
        weights.batch_norm_affine(gamma, beta[:4], mean, var, 1e-5)


def test_affine_into_conv_scales_each_output_channel():
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(4).astype(np.float32)
    scale, shift = RNG.standard_normal(4), RNG.standard_normal(4)
    new_w, new_b = weights.fold_affine_into_conv(w, b, scale, shift)
    assert new_w.dtype == new_b.dtype == np.float32 and new_w.flags.c_contiguous
    for m in range(4):
        np.testing.assert_allclose(new_w[m], w[m] * scale[m], rtol=1e-6)
        np.testing.assert_allclose(new_b[m], b[m] * scale[m] + shift[m], rtol=1e-6)
    # None means scale 1 / shift 0; a scalar broadcasts; a missing bias is zeros.
    only_w, zero_b = weights.fold_affine_into_conv(w, None, 2.0)
    np.testing.assert_array_equal(only_w, w * 2)
    np.testing.assert_array_equal(zero_b, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="3 values for 4 output channels"):
        weights.fold_affine_into_conv(w, b, np.ones(3))


@pytest.mark.parametrize("group", [1, 2])
def test_batch_norm_into_conv_matches_conv_then_batch_norm(group):
    w = RNG.standard_normal((6, 4 // group, 3, 3)).astype(np.float32)
    x = RNG.standard_normal((2, 4, 5, 5)).astype(np.float32)
    params = _bn_params(6)
    for b in (None, RNG.standard_normal(6).astype(np.float32)):
        new_w, new_b = weights.fold_batch_norm_into_conv(w, b, *params, 1e-5)
        want = _bn(_conv(x, w, b, group), *params, 1e-5)
        np.testing.assert_allclose(_conv(x, new_w, new_b, group), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("group", [1, 3])
def test_batch_norm_into_conv_transpose_scales_output_channels_of_each_group(group):
    # ConvTranspose W is (C, M/group, k...): output channel g * M/group + j is column j of group g.
    w = RNG.standard_normal((6, 2, 3, 3)).astype(np.float32)
    x = RNG.standard_normal((2, 6, 4, 4)).astype(np.float32)
    m = 2 * group
    params = _bn_params(m)
    b = RNG.standard_normal(m).astype(np.float32)
    new_w, new_b = weights.fold_batch_norm_into_conv_transpose(w, b, *params, 1e-5, group)
    assert new_w.shape == w.shape and new_w.dtype == np.float32
    want = _bn(_conv_transpose(x, w, b, group), *params, 1e-5)
    np.testing.assert_allclose(_conv_transpose(x, new_w, new_b, group), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="groups"):
        weights.fold_affine_into_conv_transpose(w, None, None, None, group=4)


@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("c_shape", [None, (), (5,), (1, 5), (3, 1), (3, 5)])
def test_affine_into_gemm(trans_b, c_shape):
    a = RNG.standard_normal((3, 4)).astype(np.float32)
    b = RNG.standard_normal((5, 4) if trans_b else (4, 5)).astype(np.float32)
    c = None if c_shape is None else RNG.standard_normal(c_shape).astype(np.float32)
    alpha, beta = 1.5, 0.5
    scale, shift = RNG.standard_normal(5), RNG.standard_normal(5)
    y = alpha * a.astype(np.float64) @ (b.T if trans_b else b) + (0 if c is None else beta * c)
    new_b, new_c = weights.fold_affine_into_gemm(b, c, scale, shift, trans_b=trans_b, beta=beta)
    assert new_b.shape == b.shape and new_b.dtype == np.float32 and new_c.dtype == np.float32
    got = alpha * a.astype(np.float64) @ (new_b.T if trans_b else new_b) + new_c  # C' is for beta = 1
    np.testing.assert_allclose(got, y * scale + shift, rtol=1e-5, atol=1e-5)
    # Scale only: C stays absent when it was.
    _, c_only = weights.fold_affine_into_gemm(b, c, scale, trans_b=trans_b, beta=beta)
    assert (c_only is None) == (c is None)


def test_batch_norm_into_gemm_matches_gemm_then_batch_norm():
    a = RNG.standard_normal((3, 4)).astype(np.float32)
    b = RNG.standard_normal((4, 6)).astype(np.float32)
    params = _bn_params(6)
    new_b, new_c = weights.fold_batch_norm_into_gemm(b, None, *params, 1e-5)
    np.testing.assert_allclose(a @ new_b + new_c, _bn(a @ b, *params, 1e-5), rtol=1e-4, atol=1e-4)


def test_weight_dtype_is_kept():
    w = RNG.standard_normal((2, 1, 1, 1)).astype(np.float16)
    new_w, new_b = weights.fold_batch_norm_into_conv(w, None, *_bn_params(2, np.float32), 1e-5)
    assert new_w.dtype == new_b.dtype == np.float16
    w64 = w.astype(np.float64)
    new_w64, _ = weights.fold_affine_into_conv(w64, None, np.array([1 / 3, 3.0]))
    assert new_w64.dtype == np.float64
    np.testing.assert_array_equal(new_w64[0], w64[0] * (1 / 3))
