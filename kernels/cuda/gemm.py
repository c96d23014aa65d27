"""An FP32 GEMM that needs neither TF32 nor cuBLAS: Y = act(A @ B + C) as one CuPy raw kernel.

cuDNN offers no FP32 matmul plan once its tensor-core (TF32) engines are excluded, and CuPy's cuBLAS
calls cannot be captured in a CUDA graph, so an FP32 plan without --tf32 would run its classifier
on the host and its forward pass without a graph. This kernel is the fallback for that case
(kernels/cuda/elementwise.py's Gemm, FusedGemm and MatMul factories try cuDNN first).

Tiling: a block of 256 threads computes a 64x64 tile of Y, stepping over K 16 at a time through
shared memory; each thread accumulates a 4x4 grid of outputs (rows ty + 16 i, columns tx + 16 j, so
a warp's shared-memory reads hit distinct banks or broadcast). Edges are zero-filled on load and
masked on store, so any M, N, K work. Accumulation is float32 FMA, in k order within each thread.
"""

from __future__ import annotations

import functools

import numpy as np

from kernels.cuda.elementwise import activation_expr
from kernels.cuda.spec import Unsupported

TILE_M, TILE_N, TILE_K, THREADS = 64, 64, 16, 256
_INT32_LIMIT = 2**31 - 1
_MAX_GRID_Y = 65535

_SOURCE = r"""
#define TM 64
#define TN 64
#define TK 16
extern "C" __global__ void __launch_bounds__(256) sgemm_tiled(
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias,
    float* __restrict__ Y, int M, int N, int K, int sam, int sak, int sbk, int scm, int scn, int sym, int syn) {
  // A is (M, K) with element strides (sam, sak); B is (K, N) with rows sbk apart and unit column
  // stride; bias is read at r * scm + c * scn (a zero stride broadcasts); Y is (M, N) at (sym, syn).
  __shared__ float As[TK][TM + 1];  // A's tile, k-major; +1 spreads the k-fastest stores over banks
  __shared__ float Bs[TK][TN];
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int row0 = blockIdx.y * TM, col0 = blockIdx.x * TN;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

  for (int k0 = 0; k0 < K; k0 += TK) {
#pragma unroll
    for (int l = 0; l < (TM * TK) / 256; ++l) {
      const int e = tid + 256 * l;
      const int kk = e % TK, r = e / TK;  // k fastest: a row-major A is read along its rows
      const int gr = row0 + r, gk = k0 + kk;
      As[kk][r] = (gr < M && gk < K) ? A[gr * sam + gk * sak] : 0.f;
    }
#pragma unroll
    for (int l = 0; l < (TK * TN) / 256; ++l) {
      const int e = tid + 256 * l;
      const int c = e % TN, kk = e / TN;  // n fastest: B's rows are contiguous
      const int gc = col0 + c, gk = k0 + kk;
      Bs[kk][c] = (gc < N && gk < K) ? B[gk * sbk + gc] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < TK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();  // the next step overwrites the tiles
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = row0 + ty + 16 * i;
    if (r >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = col0 + tx + 16 * j;
      if (c >= N) continue;
      float v = acc[i][j];
#if HAS_BIAS
      v += bias[r * scm + c * scn];
#endif
      v = ACT;
      Y[r * sym + c * syn] = v;
    }
  }
}
"""


@functools.lru_cache(maxsize=None)
def _kernel(act: str, has_bias: bool):
    import cupy as cp

    head = f"#define HAS_BIAS {int(has_bias)}\n#define ACT ({act})\n"
    return cp.RawKernel(head + _SOURCE, "sgemm_tiled")


def bias_2d(c: np.ndarray | None, rows: int, cols: int) -> np.ndarray | None:
    """C (already scaled by beta) as a float32 2-D array whose every dimension is 1 or the result's,
    as ONNX Gemm's unidirectional broadcast allows: a scalar, (N,), (1, N), (M, 1) or (M, N)."""
    if c is None:
        return None
    c = np.asarray(c, dtype=np.float32)
    if c.ndim > 2:
        raise Unsupported(f"GEMM bias of shape {c.shape}")
    c2 = c.reshape((1,) * (2 - c.ndim) + c.shape)
    if c2.shape[0] not in (1, rows) or c2.shape[1] not in (1, cols):
        raise Unsupported(f"GEMM bias of shape {c.shape} for a ({rows}, {cols}) result")
    return np.ascontiguousarray(c2)


def _extent(shape, elem_strides) -> int:
    return 1 + sum((d - 1) * s for d, s in zip(shape, elem_strides)) if all(shape) else 0


class TiledSgemm:
    """Y = act(A @ B + C) over bound FP32 buffers: A an activation (2-D, or N-D with a contiguous
    layout, its leading dims flattened into rows), B a constant (K, N), C a constant that
    broadcasts to (M, N). One raw-kernel launch per run (capturable in a CUDA graph)."""

    tactic = "sgemm"

    def __init__(self, a, b_host: np.ndarray, c_host: np.ndarray | None, y, activation: str, params):
        import cupy as cp

        if a.dtype != np.float32 or y.dtype != np.float32:
            raise Unsupported(f"the tiled SGEMM takes float32, got A {a.dtype} and Y {y.dtype}")
        if b_host.ndim != 2:
            raise Unsupported(f"a GEMM with a {b_host.ndim}-D constant B")
        if a.ndim != 2:  # MatMul over a batch of rows: only when the rows are one contiguous run
            if a.ndim < 2 or not (a.flags.c_contiguous and y.flags.c_contiguous):
                raise Unsupported(f"a GEMM on a strided {a.ndim}-D activation")
            a, y = a.reshape(-1, a.shape[-1]), y.reshape(-1, y.shape[-1])
        m, k = a.shape
        if b_host.shape[0] != k or y.shape != (m, b_host.shape[1]):
            raise Unsupported(f"GEMM shapes A {a.shape}, B {b_host.shape}, Y {y.shape} do not agree")
        n = b_host.shape[1]
        if any(s < 0 or s % 4 for s in a.strides + y.strides):
            raise Unsupported("a GEMM over negative or unaligned strides")
        self.b = cp.asarray(np.ascontiguousarray(b_host, dtype=np.float32))
        c2 = bias_2d(c_host, m, n)
        self.c = None if c2 is None else cp.asarray(c2)
        sam, sak = (s // 4 for s in a.strides)
        sym, syn = (s // 4 for s in y.strides)
        scm, scn = (0, 0) if c2 is None else (0 if c2.shape[0] == 1 else c2.shape[1], 0 if c2.shape[1] == 1 else 1)
        grid = ((n + TILE_N - 1) // TILE_N, (m + TILE_M - 1) // TILE_M)
        if grid[1] > _MAX_GRID_Y:
            raise Unsupported(f"a GEMM with {m} rows (more than {_MAX_GRID_Y * TILE_M})")
        # 32-bit index math in the kernel: every offset it forms must fit.
        biggest = max(_extent((m, k), (sam, sak)), k * n, _extent((m, n), (sym, syn)),
                      _extent((m, n), (scm, scn)), m + TILE_M, n + TILE_N, k + TILE_K)
        if biggest > _INT32_LIMIT:
            raise Unsupported("a GEMM over more than 2^31 elements")
        self.grid = grid
        self.kernel = _kernel(activation_expr(activation, params), self.c is not None)
        i32 = np.int32
        self.args = (a, self.b, self.c if self.c is not None else self.b, y, i32(m), i32(n), i32(k), i32(sam), i32(sak),
                     i32(n), i32(scm), i32(scn), i32(sym), i32(syn))

    def __call__(self) -> None:
        if self.grid[0] and self.grid[1]:
            self.kernel(self.grid, (THREADS,), self.args)
