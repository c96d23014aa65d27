"""Matrix products: Gemm and MatMul.

Both run through numpy's matmul, which hands float32 and float64 to BLAS. Narrow float types
(float16, bfloat16, ...) have no BLAS path in numpy and lose precision when accumulated in their own
type, so they are multiplied in float32 and rounded back once at the end. Integer types are
multiplied in their own type (wrapping on overflow, as integer matmul does).
"""

import numpy as np

from kernels.cpu._registry import op
from kernels.registry import KernelError

_BLAS_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype to multiply in: the input's own for BLAS floats and integers, else float32."""
    if dtype in _BLAS_FLOATS or dtype.kind in "iu":
        return dtype
    return np.dtype(np.float32)


def _scaled(x: np.ndarray, factor: float) -> np.ndarray:
    """x * factor in x's dtype (a float attribute times an integer array would give float64)."""
    if factor == 1.0:
        return x
    if x.dtype.kind in "iu":
        return (x * factor).astype(x.dtype)
    return x * x.dtype.type(factor)


def _check_gemm_shapes(a, b, c, trans_a, trans_b):
    if a.ndim != 2 or b.ndim != 2:
        raise KernelError(f"Gemm needs 2-D A and B, got A {a.shape} and B {b.shape}")
    m, k = a.shape[::-1] if trans_a else a.shape
    k_b, n = b.shape[::-1] if trans_b else b.shape
    if k != k_b:
        raise KernelError(
            f"Gemm: inner dimensions differ: A {a.shape} (transA={trans_a}) gives K={k}, "
            f"B {b.shape} (transB={trans_b}) gives K={k_b}"
        )
    if c is not None:
        # C broadcasts one way only: to (M, N), never growing the result.
        if c.ndim > 2 or any(dim not in (1, full) for dim, full in zip(c.shape[::-1], (n, m))):
            raise KernelError(f"Gemm: C {c.shape} does not broadcast to the result shape {(m, n)}")


def _gemm(a, b, c, alpha, beta, trans_a, trans_b):
    _check_gemm_shapes(a, b, c, trans_a, trans_b)
    out_dtype = a.dtype
    work = _compute_dtype(out_dtype)
    a = a.astype(work, copy=False)
    b = b.astype(work, copy=False)
    y = np.matmul(a.T if trans_a else a, b.T if trans_b else b)
    y = _scaled(y, alpha)
    # beta == 0 ignores C entirely, so inf/nan in an unused bias cannot leak into the result.
    if c is not None and beta != 0.0:
        y = y + _scaled(c.astype(work, copy=False), beta)
    return y.astype(out_dtype, copy=False)


@op("Gemm", since=7)
def gemm_7(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    """Y = alpha * A' @ B' + beta * C; before opset 11 C is a required input."""
    if c is None:
        raise KernelError("Gemm before opset 11 needs input C; it may be omitted only from Gemm-11")
    return _gemm(a, b, c, alpha, beta, bool(transA), bool(transB))


@op("Gemm", since=11)
def gemm_11(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    """Y = alpha * A' @ B' + beta * C, with C optional (omitted means no bias)."""
    return _gemm(a, b, c, alpha, beta, bool(transA), bool(transB))


@op("MatMul", since=1)
def matmul(a, b):
    """numpy.matmul semantics: 1-D operands are promoted then squeezed, batch dims broadcast."""
    if a.ndim == 0 or b.ndim == 0:
        raise KernelError(f"MatMul needs operands of rank >= 1, got A {a.shape} and B {b.shape}")
    if a.dtype != b.dtype:
        raise KernelError(f"MatMul: A is {a.dtype} but B is {b.dtype}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise KernelError(f"MatMul: inner dimensions differ: A {a.shape} has K={k_a}, B {b.shape} has K={k_b}")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise KernelError(f"MatMul: batch dimensions of A {a.shape} and B {b.shape} do not broadcast") from None
    work = _compute_dtype(a.dtype)
    y = np.matmul(a.astype(work, copy=False), b.astype(work, copy=False))
    return np.asarray(y).astype(a.dtype, copy=False)
