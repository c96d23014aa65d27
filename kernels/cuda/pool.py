"""Pooling as CuPy raw kernels over strided 4-D views (channels-last or not): one thread per output
element, channels fastest so neighbouring threads read neighbouring NHWC addresses."""

from __future__ import annotations

import functools

from kernels.cuda import GPU_OPS
from kernels.cuda.spec import LayerSpec, Unsupported

_SOURCE = r"""
extern "C" __global__ void pool2d(const T* x, T* y,
    int N, int C, int H, int W, int OH, int OW,
    int sxn, int sxc, int sxh, int sxw, int syn, int syc, int syh, int syw,
    int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW, int include_pad) {
  // 32-bit index math (64-bit division is slow on the GPU): the caller checks the sizes fit.
  int total = N * OH * OW * C;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    int c = i % C; int r = i / C; int ow = r % OW; r /= OW; int oh = r % OH; int n = r / OH;
    float acc = IS_MAX ? -3.4e38f : 0.f; int count = 0;
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


@functools.lru_cache(maxsize=None)
def _kernel(dtype_name: str, is_max: bool):
    import cupy as cp

    ctype = {"float16": "__half", "float32": "float"}[dtype_name]
    code = ("#include <cuda_fp16.h>\n" if ctype == "__half" else "") + _SOURCE.replace("T*", f"{ctype}*").replace(
        "(T)", f"({ctype})").replace("IS_MAX", "1" if is_max else "0")
    return cp.RawKernel(code, "pool2d")


class Pool2d:
    def __init__(self, spec: LayerSpec, inputs: list, outputs: list, is_max: bool, global_pool: bool = False):
        x, y = inputs[0], outputs[0]
        if x.ndim != 4 or str(x.dtype) not in ("float16", "float32"):
            raise Unsupported(f"{x.ndim - 2}-D or {x.dtype} pooling")
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
            if include and pads[:2] != pads[2:]:
                raise Unsupported("count_include_pad with asymmetric padding")  # the kernel counts one pad size
        _, _, oh, ow = y.shape
        e = x.itemsize
        self.kernel = _kernel(str(x.dtype), is_max)
        self.args = (x, y, n, c, h, w, oh, ow, *[s // e for s in x.strides], *[s // e for s in y.strides],
                     kernel[0], kernel[1], strides[0], strides[1], pads[0], pads[1], dilations[0], dilations[1], include)
        total = n * c * oh * ow
        if max(total, x.size, y.size) >= 2**31 - 1:
            raise Unsupported("pooling over more than 2^31 elements")
        self.grid = (min((total + 255) // 256, 65535 * 8),)
        import numpy as np

        self.args = tuple(np.int32(a) if isinstance(a, int) else a for a in self.args)

    def __call__(self) -> None:
        self.kernel(self.grid, (256,), self.args)


GPU_OPS.register("MaxPool", since=1)(lambda spec, i, o, d: Pool2d(spec, i, o, is_max=True))
GPU_OPS.register("AveragePool", since=1)(lambda spec, i, o, d: Pool2d(spec, i, o, is_max=False))
GPU_OPS.register("GlobalAveragePool", since=1)(lambda spec, i, o, d: Pool2d(spec, i, o, is_max=False, global_pool=True))
GPU_OPS.register("GlobalMaxPool", since=1)(lambda spec, i, o, d: Pool2d(spec, i, o, is_max=True, global_pool=True))
