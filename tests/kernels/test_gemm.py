"""Gemm and MatMul kernels against naive loop references."""

import numpy as np
import pytest

from kernels.cpu import CPU_OPS
from kernels.cpu.gemm import gemm_7, gemm_11, matmul
from kernels.registry import KernelError

RNG = np.random.default_rng(0)


def naive_matmul_2d(a, b):
    m, k = a.shape
    k2, n = b.shape
    assert k == k2
    out = np.zeros((m, n), np.float64)
    for i in range(m):
        for j in range(n):
            out[i, j] = sum(float(a[i, p]) * float(b[p, j]) for p in range(k))
    return out


def naive_gemm(a, b, c, alpha, beta, trans_a, trans_b):
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    y = alpha * naive_matmul_2d(a, b)
    if c is not None:
        m, n = y.shape
        c2 = np.asarray(c, np.float64).reshape((1,) * (2 - np.ndim(c)) + np.shape(c))
        for i in range(m):
            for j in range(n):
                y[i, j] += beta * c2[i % c2.shape[0], j % c2.shape[1]]
    return y


# --- Gemm --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [(), (1,), (5,), (1, 5), (3, 1), (3, 5), (1, 1)])
def test_gemm_matches_naive(trans_a, trans_b, c_shape):
    m, k, n = 3, 4, 5
    a = RNG.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = RNG.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c = RNG.standard_normal(c_shape).astype(np.float32)
    got = gemm_11(a, b, c, alpha=0.5, beta=-2.0, transA=trans_a, transB=trans_b)
    assert got.dtype == np.float32 and got.shape == (m, n)
    np.testing.assert_allclose(got, naive_gemm(a, b, c, 0.5, -2.0, trans_a, trans_b), rtol=1e-5, atol=1e-5)


def test_gemm_defaults_and_optional_c():
    a = RNG.standard_normal((2, 3)).astype(np.float32)
    b = RNG.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(gemm_11(a, b), naive_matmul_2d(a, b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gemm_11(a, b, None), naive_matmul_2d(a, b), rtol=1e-5, atol=1e-6)


def test_gemm_7_requires_c():
    a = np.ones((2, 3), np.float32)
    b = np.ones((3, 4), np.float32)
    with pytest.raises(KernelError, match="Gemm-11"):
        gemm_7(a, b)
    np.testing.assert_array_equal(gemm_7(a, b, np.float32(1)), np.full((2, 4), 4, np.float32))


def test_gemm_versions_registered():
    assert CPU_OPS.versions("Gemm") == [7, 11]
    assert CPU_OPS.lookup("Gemm", 9).fn is gemm_7
    assert CPU_OPS.lookup("Gemm", 13).fn is gemm_11
    assert CPU_OPS.lookup("MatMul", 7).fn is matmul


def test_gemm_beta_zero_ignores_c():
    a = np.eye(2, dtype=np.float32)
    b = np.array([[1, 2], [3, 4]], np.float32)
    c = np.array([np.nan, np.inf], np.float32)
    np.testing.assert_array_equal(gemm_11(a, b, c, beta=0.0), b)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_gemm_keeps_float_dtype(dtype):
    a = RNG.standard_normal((4, 6)).astype(dtype)
    b = RNG.standard_normal((6, 2)).astype(dtype)
    c = RNG.standard_normal((2,)).astype(dtype)
    got = gemm_11(a, b, c, alpha=2.0, beta=0.5)
    assert got.dtype == dtype
    tol = 1e-2 if dtype == np.float16 else 1e-12
    np.testing.assert_allclose(got.astype(np.float64), naive_gemm(a, b, c, 2.0, 0.5, 0, 0), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32, np.uint64])
def test_gemm_integer_exact(dtype):
    a = RNG.integers(0, 10, (3, 4)).astype(dtype)
    b = RNG.integers(0, 10, (4, 2)).astype(dtype)
    c = RNG.integers(0, 10, (3, 1)).astype(dtype)
    got = gemm_11(a, b, c, alpha=2.0, beta=3.0)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, naive_gemm(a, b, c, 2, 3, 0, 0).astype(dtype))


def test_gemm_bfloat16_stays_bfloat16():
    import ml_dtypes

    a = RNG.standard_normal((3, 8)).astype(ml_dtypes.bfloat16)
    b = RNG.standard_normal((8, 2)).astype(ml_dtypes.bfloat16)
    got = gemm_11(a, b)
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(got.astype(np.float64), naive_matmul_2d(a, b), rtol=2e-2, atol=2e-2)


def test_gemm_inner_dimension_mismatch():
    with pytest.raises(KernelError, match=r"\(2, 3\).*\(4, 5\)"):
        gemm_11(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32))
    # transB makes the same shapes agree
    assert gemm_11(np.ones((2, 3), np.float32), np.ones((5, 3), np.float32), transB=1).shape == (2, 5)


@pytest.mark.parametrize("c_shape", [(3,), (2, 5), (1, 2, 4), (4, 4), (2, 1, 1)])
def test_gemm_c_must_broadcast_one_way(c_shape):
    with pytest.raises(KernelError, match="does not broadcast"):
        gemm_11(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32), np.ones(c_shape, np.float32))


def test_gemm_rejects_non_matrix():
    with pytest.raises(KernelError, match="2-D"):
        gemm_11(np.ones((2, 3, 4), np.float32), np.ones((4, 5), np.float32))


# --- MatMul ------------------------------------------------------------------------------------------


def naive_matmul(a, b):
    """numpy matmul rules spelled out: promote 1-D, broadcast batch dims, loop, squeeze."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    a2 = np.broadcast_to(a2, batch + a2.shape[-2:])
    b2 = np.broadcast_to(b2, batch + b2.shape[-2:])
    out = np.zeros(batch + (a2.shape[-2], b2.shape[-1]), np.float64)
    for index in np.ndindex(*batch):
        out[index] = naive_matmul_2d(a2[index], b2[index])
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [((4,), (4,)), ((4,), (4, 3)), ((2, 4), (4,)), ((3, 4), (4, 2)), ((2, 1, 3, 4), (5, 4, 2)),
     ((4,), (2, 4, 3)), ((2, 3, 4), (4,)), ((1, 3, 4), (6, 4, 2)), ((0, 3, 4), (4, 2))],
)
def test_matmul_matches_naive(a_shape, b_shape):
    a = RNG.standard_normal(a_shape).astype(np.float32)
    b = RNG.standard_normal(b_shape).astype(np.float32)
    got = matmul(a, b)
    expected = naive_matmul(a, b)
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32, np.uint64])
def test_matmul_integer_exact(dtype):
    a = RNG.integers(0, 50, (2, 3, 4)).astype(dtype)
    b = RNG.integers(0, 50, (4, 5)).astype(dtype)
    got = matmul(a, b)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, naive_matmul(a, b).astype(dtype))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_matmul_narrow_float_keeps_dtype(dtype):
    from kernels.dtypes import resolve

    dtype = resolve(dtype)
    x = RNG.standard_normal((2, 3, 16)).astype(dtype)
    y = RNG.standard_normal((16, 2)).astype(dtype)
    got = matmul(x, y)
    assert got.dtype == dtype and got.shape == (2, 3, 2)
    np.testing.assert_allclose(got.astype(np.float64), naive_matmul(x, y), rtol=3e-2, atol=3e-2)


def test_matmul_inner_mismatch():
    with pytest.raises(KernelError, match=r"\(2, 3\).*\(4, 5\)"):
        matmul(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32))
    with pytest.raises(KernelError, match="inner"):
        matmul(np.ones((3,), np.float32), np.ones((4,), np.float32))


def test_matmul_batch_mismatch():
    with pytest.raises(KernelError, match="batch"):
        matmul(np.ones((2, 3, 4), np.float32), np.ones((3, 4, 5), np.float32))


def test_matmul_rejects_scalars():
    with pytest.raises(KernelError, match="rank"):
        matmul(np.float32(2.0) * np.ones((), np.float32), np.ones((3,), np.float32))
