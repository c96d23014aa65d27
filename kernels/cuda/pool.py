"""Pooling as CuPy raw kernels over strided 4-D views, in three forms:

- channels-last, vectorized: each thread pools 2 to 8 consecutive channels of one output pixel with
  4-, 8- or 16-byte loads, the window geometry and sizes compiled in (divisions by constants, an
  unrolled window); used when the channel count, every stride and both base addresses allow.
- global pooling over contiguous (h, w) planes (NCHW): one warp per (n, c) plane, then a shuffle
  reduction.
- generic: one thread per output element, in the order the input's memory runs (channels fastest
  on NHWC, w fastest on NCHW) so neighbouring threads read neighbouring addresses.
All accumulate in float32 and use 32-bit index math (64-bit division is slow on the GPU); a layer
whose offsets do not fit 32 bits runs on the host.
"""

from __future__ import annotations

import functools

import numpy as np

from kernels.cuda import GPU_OPS
from kernels.cuda.spec import LayerSpec, Unsupported

_INT32_LIMIT = 2**31 - 1
_THREADS = 256
_MAX_BLOCKS = 65535 * 8  # a grid-stride loop covers the rest

_PRELUDE = r"""
#define NEG_INF (-__int_as_float(0x7f800000))
"""

_GENERIC = r"""
extern "C" __global__ void pool2d(const T* __restrict__ x, T* __restrict__ y,
    int N, int C, int H, int W, int OH, int OW,
    int sxn, int sxc, int sxh, int sxw, int syn, int syc, int syh, int syw,
    int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW, int include_pad) {
  int total = N * OH * OW * C;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
#if CHANNELS_FASTEST
    int c = i % C; int r = i / C; int ow = r % OW; r /= OW; int oh = r % OH; int n = r / OH;
#else
    int ow = i % OW; int r = i / OW; int oh = r % OH; r /= OH; int c = r % C; int n = r / C;
#endif
    float acc = IS_MAX ? NEG_INF : 0.f; int count = 0;
    for (int kh = 0; kh < KH; ++kh) {
      int ih = oh * SH - PH + kh * DH;
      for (int kw = 0; kw < KW; ++kw) {
        int iw = ow * SW - PW + kw * DW;
        bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
        bool in_padded = ih < H + PH && iw < W + PW;  // count_include_pad counts the padded frame only
        if (inside) {
          float v = (float)x[n * sxn + c * sxc + ih * sxh + iw * sxw];
          acc = IS_MAX ? fmaxf(acc, v) : acc + v; ++count;
        } else if (include_pad && in_padded) { ++count; }
      }
    }
    if (!IS_MAX) acc = count > 0 ? acc / count : 0.f;
    y[n * syn + c * syc + oh * syh + ow * syw] = (T)acc;
  }
}
"""

# Compiled per layer geometry: T, VEC (channels per thread), WORD (the load type of VEC channels),
# IS_HALF, IS_MAX, CV (= C / VEC), H, W, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW, INCLUDE_PAD.
_VECTOR = r"""
#if IS_HALF
__device__ __forceinline__ void load_vec(const __half* p, float* f) {
  WORD word = *reinterpret_cast<const WORD*>(p);
  const __half2* h = reinterpret_cast<const __half2*>(&word);
#pragma unroll
  for (int j = 0; j < VEC / 2; ++j) { float2 t = __half22float2(h[j]); f[2 * j] = t.x; f[2 * j + 1] = t.y; }
}
__device__ __forceinline__ void store_vec(__half* p, const float* f) {
  WORD word;
  __half2* h = reinterpret_cast<__half2*>(&word);
#pragma unroll
  for (int j = 0; j < VEC / 2; ++j) h[j] = __floats2half2_rn(f[2 * j], f[2 * j + 1]);
  *reinterpret_cast<WORD*>(p) = word;
}
#else
__device__ __forceinline__ void load_vec(const float* p, float* f) {
  WORD word = *reinterpret_cast<const WORD*>(p);
  const float* s = reinterpret_cast<const float*>(&word);
#pragma unroll
  for (int j = 0; j < VEC; ++j) f[j] = s[j];
}
__device__ __forceinline__ void store_vec(float* p, const float* f) {
  WORD word;
  float* s = reinterpret_cast<float*>(&word);
#pragma unroll
  for (int j = 0; j < VEC; ++j) s[j] = f[j];
  *reinterpret_cast<WORD*>(p) = word;
}
#endif

extern "C" __global__ void pool2d_vec(const T* __restrict__ x, T* __restrict__ y, int total,
    int sxn, int sxh, int sxw, int syn, int syh, int syw) {
  // One thread per (n, oh, ow, group of VEC channels); strides in elements, the channel stride 1.
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int cv = i % CV; int r = i / CV; const int ow = r % OW; r /= OW; const int oh = r % OH; const int n = r / OH;
    const T* xn = x + (n * sxn + cv * VEC);
    const int ih0 = oh * SH - PH, iw0 = ow * SW - PW;
    float acc[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc[j] = IS_MAX ? NEG_INF : 0.f;
#pragma unroll
    for (int kh = 0; kh < KH; ++kh) {
      const int ih = ih0 + kh * DH;
      if (ih < 0 || ih >= H) continue;
      const T* row = xn + ih * sxh;
#pragma unroll
      for (int kw = 0; kw < KW; ++kw) {
        const int iw = iw0 + kw * DW;
        if (iw < 0 || iw >= W) continue;
        float v[VEC];
        load_vec(row + iw * sxw, v);
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc[j] = IS_MAX ? fmaxf(acc[j], v[j]) : acc[j] + v[j];
      }
    }
    if (!IS_MAX) {
      // The taps counted factor into rows x columns: inside the image, or with count_include_pad
      // inside the padded frame (ih >= -PH always holds, so only the far edge needs a test).
      int rows = 0, cols = 0;
#pragma unroll
      for (int kh = 0; kh < KH; ++kh) {
        const int ih = ih0 + kh * DH;
        rows += INCLUDE_PAD ? (ih < H + PH) : (ih >= 0 && ih < H);
      }
#pragma unroll
      for (int kw = 0; kw < KW; ++kw) {
        const int iw = iw0 + kw * DW;
        cols += INCLUDE_PAD ? (iw < W + PW) : (iw >= 0 && iw < W);
      }
      const int count = rows * cols;
#pragma unroll
      for (int j = 0; j < VEC; ++j) acc[j] = count > 0 ? acc[j] / count : 0.f;
    }
    store_vec(y + (n * syn + oh * syh + ow * syw + cv * VEC), acc);
  }
}
"""

_PLANES = r"""
extern "C" __global__ void pool_planes(const T* __restrict__ x, T* __restrict__ y, int planes, int C, int HW,
    int sxn, int sxc, int syn, int syc) {
  // Global pooling over contiguous (h, w) planes: one warp per (n, c) plane, lanes striding over
  // it, then a shuffle reduction. blockDim is a multiple of 32, so every warp is whole and all its
  // lanes take the same plane (p is uniform across the warp).
  const int lane = threadIdx.x & 31;
  const int warps = (gridDim.x * blockDim.x) >> 5;
  for (int p = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; p < planes; p += warps) {
    const int n = p / C, c = p - n * C;
    const T* plane = x + (n * sxn + c * sxc);
    float acc = IS_MAX ? NEG_INF : 0.f;
    for (int j = lane; j < HW; j += 32) {
      const float v = (float)plane[j];
      acc = IS_MAX ? fmaxf(acc, v) : acc + v;
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float other = __shfl_down_sync(0xffffffffu, acc, offset);
      acc = IS_MAX ? fmaxf(acc, other) : acc + other;
    }
    if (lane == 0) y[n * syn + c * syc] = (T)(IS_MAX ? acc : acc / HW);
  }
}
"""


def _ctype(dtype_name: str) -> str:
    return {"float16": "__half", "float32": "float"}[dtype_name]


def _source(body: str, defines: dict) -> str:
    head = "#include <cuda_fp16.h>\n" if defines["T"] == "__half" else ""
    head += "".join(f"#define {key} {value}\n" for key, value in defines.items())
    return head + _PRELUDE + body


@functools.lru_cache(maxsize=None)
def _generic_kernel(dtype_name: str, is_max: bool, channels_fastest: bool):
    import cupy as cp

    defines = {"T": _ctype(dtype_name), "IS_MAX": int(is_max), "CHANNELS_FASTEST": int(channels_fastest)}
    return cp.RawKernel(_source(_GENERIC, defines), "pool2d")


@functools.lru_cache(maxsize=None)
def _vector_kernel(geometry: tuple):
    import cupy as cp

    return cp.RawKernel(_source(_VECTOR, dict(geometry)), "pool2d_vec")


@functools.lru_cache(maxsize=None)
def _planes_kernel(dtype_name: str, is_max: bool):
    import cupy as cp

    return cp.RawKernel(_source(_PLANES, {"T": _ctype(dtype_name), "IS_MAX": int(is_max)}), "pool_planes")


_WORDS = {4: "unsigned int", 8: "uint2", 16: "uint4"}
_FLOAT_WORDS = {8: "float2", 16: "float4"}


def vector_width(itemsize: int, channels: int, x_strides, y_strides, x_ptr: int, y_ptr: int) -> int:
    """Channels per thread for the vectorized channels-last kernel: the widest load of 16, 8 or 4
    bytes (2 channels at least) that the channel count, every stride (bytes) and both base
    addresses allow; 0 when none does (not channels-last, an odd channel count, a misaligned
    slice), and the generic kernel runs."""
    if x_strides[1] != itemsize or y_strides[1] != itemsize:
        return 0
    others = [x_strides[0], x_strides[2], x_strides[3], y_strides[0], y_strides[2], y_strides[3]]
    for nbytes in (16, 8, 4):
        vec = nbytes // itemsize
        if vec < 2 or channels % vec:
            continue
        if any(s % nbytes for s in others) or x_ptr % nbytes or y_ptr % nbytes:
            continue
        return vec
    return 0


def extent(array) -> int:
    """One past the largest element offset a strided view reaches from its first element."""
    if array.size == 0:
        return 0
    return 1 + sum((d - 1) * (s // array.itemsize) for d, s in zip(array.shape, array.strides))


def _planes_contiguous(array) -> bool:
    _, _, h, w = array.shape
    return array.strides[3] == array.itemsize and (h == 1 or array.strides[2] == w * array.itemsize)


class Pool2d:
    def __init__(self, spec: LayerSpec, inputs: list, outputs: list, is_max: bool, global_pool: bool = False):
        x, y = inputs[0], outputs[0]
        if x.ndim != 4 or str(x.dtype) not in ("float16", "float32"):
            raise Unsupported(f"{x.ndim - 2}-D or {x.dtype} pooling")
        if y.dtype != x.dtype or y.ndim != 4:
            raise Unsupported(f"pooling {x.dtype} into {y.dtype} {y.shape}")
        attrs = spec.attrs
        n, c, h, w = x.shape
        if global_pool:
            kernel, strides, pads, dilations, include = [h, w], [1, 1], [0, 0, 0, 0], [1, 1], 0
        else:
            if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
                raise Unsupported("auto_pad SAME pooling")
            if len(outputs) > 1 and outputs[1] is not None:
                raise Unsupported("MaxPool with an Indices output")
            kernel = list(attrs["kernel_shape"])
            strides = list(attrs.get("strides") or [1, 1])
            pads = list(attrs.get("pads") or [0, 0, 0, 0])
            dilations = list(attrs.get("dilations") or [1, 1])
            include = int(attrs.get("count_include_pad", 0))
            if attrs.get("auto_pad", "NOTSET") == "VALID":
                pads = [0, 0, 0, 0]
            if include and pads[:2] != pads[2:]:
                raise Unsupported("count_include_pad with asymmetric padding")  # the kernels count one pad size
        _, _, oh, ow = y.shape
        if y.shape[:2] != x.shape[:2]:
            raise Unsupported(f"pooling {x.shape} into {y.shape}")
        if any(s < 0 or s % x.itemsize for a in (x, y) for s in a.strides):
            raise Unsupported("pooling over negative or unaligned strides")
        e = x.itemsize
        dtype_name = str(x.dtype)
        vec = vector_width(e, c, x.strides, y.strides, x.data.ptr, y.data.ptr)
        if vec:
            threads = n * oh * ow * (c // vec)
        elif global_pool and _planes_contiguous(x):
            threads = n * c * 32
        else:
            threads = n * c * oh * ow
        blocks = max(1, min((threads + _THREADS - 1) // _THREADS, _MAX_BLOCKS))
        # 32-bit index math: every offset, and the grid-stride loop's last step past the end, must fit.
        if max(threads, extent(x), extent(y)) + blocks * _THREADS > _INT32_LIMIT:
            raise Unsupported("pooling over more than 2^31 elements")
        self.grid, self.kind = (blocks,), "generic"
        i32 = np.int32
        if vec:
            word = _FLOAT_WORDS[vec * e] if dtype_name == "float32" else _WORDS[vec * e]
            geometry = (("T", _ctype(dtype_name)), ("VEC", vec), ("WORD", word), ("IS_HALF", int(e == 2)),
                        ("IS_MAX", int(is_max)), ("CV", c // vec), ("H", h), ("W", w), ("OH", oh), ("OW", ow),
                        ("KH", kernel[0]), ("KW", kernel[1]), ("SH", strides[0]), ("SW", strides[1]),
                        ("PH", pads[0]), ("PW", pads[1]), ("DH", dilations[0]), ("DW", dilations[1]),
                        ("INCLUDE_PAD", int(bool(include))))
            self.kernel, self.kind = _vector_kernel(geometry), f"vector{vec}"
            self.args = (x, y, i32(threads), *[i32(s // e) for s in (x.strides[0], x.strides[2], x.strides[3])],
                         *[i32(s // e) for s in (y.strides[0], y.strides[2], y.strides[3])])
        elif global_pool and _planes_contiguous(x):
            self.kernel, self.kind = _planes_kernel(dtype_name, is_max), "planes"
            self.args = (x, y, i32(n * c), i32(c), i32(h * w), i32(x.strides[0] // e), i32(x.strides[1] // e),
                         i32(y.strides[0] // e), i32(y.strides[1] // e))
        else:
            self.kernel = _generic_kernel(dtype_name, is_max, channels_fastest=x.strides[1] == e)
            self.args = tuple(i32(v) if isinstance(v, int) else v for v in (
                x, y, n, c, h, w, oh, ow, *[s // e for s in x.strides], *[s // e for s in y.strides],
                kernel[0], kernel[1], strides[0], strides[1], pads[0], pads[1], dilations[0], dilations[1], include))

    def __call__(self) -> None:
        self.kernel(self.grid, (_THREADS,), self.args)


GPU_OPS.register("MaxPool", since=1)(lambda spec, i, o, d: Pool2d(spec, i, o, is_max=True))
GPU_OPS.register("AveragePool", since=1)(lambda spec, i, o, d: Pool2d(spec, i, o, is_max=False))
GPU_OPS.register("GlobalAveragePool", since=1)(lambda spec, i, o, d: Pool2d(spec, i, o, is_max=False, global_pool=True))
GPU_OPS.register("GlobalMaxPool", since=1)(lambda spec, i, o, d: Pool2d(spec, i, o, is_max=True, global_pool=True))
