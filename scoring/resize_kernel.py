"""The preprocessing kernels of the GPU decoder: per output pixel of the crop, Pillow's antialiased
BILINEAR resize straight from the decoded uint8 image, center crop, /255, mean/std, layout, dtype and
channel order, for a whole batch in one launch of each kernel, driven by a per-image parameter table.

`reference_resize_crop` states exactly the kernel's math in numpy (the tests hold the kernel to
it and it to Pillow); `batch_geometry` is torchvision's Resize + CenterCrop geometry vectorised
over a batch; `fill_table` writes the table, `kernel_source` the CUDA C of one (layout, dtype) and
`PreprocessKernels` launches them. Two kernels share the table and the math: the tiled one
(scoring/resize_tiles.py) takes the 3-channel images of ordinary scale factors, this module's
per-pixel one everything else (grayscale, alpha, shorter sides over ~15x the resize target).
$BATCHSCORE_RESIZE_TILES=0 sends every image to the per-pixel kernel (for A/B runs). See
scoring/gpu_decode.py for where the decoded images come from.
"""

from __future__ import annotations

import os
import threading
from typing import NamedTuple

import numpy as np

from scoring.decode import Preprocess
from scoring.resize_tiles import tile_columns, tiled_source, tiles_per_image

# One row of the per-batch parameter table (int64): where an image's pixels are and how its crop
# maps onto them. The kernel source below is formatted with the same column numbers.
# TILE_COLS: the tiled kernel's crop columns per block for this row.
_COLUMNS = ("PTR", "HEIGHT", "WIDTH", "PITCH", "CHANNELS", "RESIZED_W", "RESIZED_H", "OFFSET_X", "OFFSET_Y",
            "MODE", "TILE_COLS")
_COL = {name: i for i, name in enumerate(_COLUMNS)}
# skip: the row is written elsewhere (CPU upload) or not at all; pixel / tiled: which kernel computes it
_MODE_SKIP, _MODE_COMPUTE, _MODE_TILED = 0, 1, 2

_MAX_GRID_Y = 65535  # CUDA's limit on gridDim.y: larger batches are launched in slices
_BLOCK = 256


# ---- geometry, vectorised over a batch --------------------------------------------------------------
def batch_geometry(widths, heights, preprocess: Preprocess, keep_size=None):
    """(resized_w, resized_h, offset_x, offset_y) int64 arrays for images of widths x heights.

    The same numbers as scoring.decode.resized_size and center_crop_box, for a whole batch at once:
    crop pixel (ox, oy) is pixel (ox + offset_x, oy + offset_y) of the resized image, and a pixel
    outside [0, resized_w) x [0, resized_h) is zero padding. ``keep_size`` (bool array) marks images
    that are not resized (CpuDecoder takes a crop x crop tensor item as it is).
    """
    w = np.asarray(widths, np.int64)
    h = np.asarray(heights, np.int64)
    s = preprocess.resize_shorter
    crop = preprocess.crop
    portrait = w <= h
    # int(s * long / short): s * long is exact in float64 for any real image, and IEEE division is
    # correctly rounded like Python's int / int, so the truncation gives the same integer.
    long_side = np.floor((s * np.where(portrait, h, w)).astype(np.float64) / np.where(portrait, w, h))
    rw = np.where(portrait, s, long_side).astype(np.int64)
    rh = np.where(portrait, long_side, s).astype(np.int64)
    if keep_size is not None:
        keep = np.asarray(keep_size, bool)
        rw = np.where(keep, w, rw)
        rh = np.where(keep, h, rh)
    offsets = []
    for size in (rw, rh):
        pad = np.where(crop > size, (crop - size) // 2, 0)
        # round() of a multiple of 0.5 rounds half to even in Python and in numpy alike
        start = np.round((np.maximum(size, crop) - crop) / 2.0).astype(np.int64)
        offsets.append(start - pad)
    return rw, rh, offsets[0], offsets[1]


# ---- the numpy reference of the kernel ---------------------------------------------------------------
def axis_taps(in_size, out_size, positions):
    """(centers, lo, hi, 1 / filterscale) of Pillow's triangle filter at output coordinates
    `positions` on an axis of `in_size` source samples resized to `out_size`, in the kernels'
    float32 steps: the taps of each are [lo, hi). Sizes may be scalars or arrays (per image)."""
    f32 = np.float32
    scale = np.asarray(in_size).astype(f32) / np.asarray(out_size).astype(f32)
    filterscale = np.maximum(scale, f32(1))
    support = filterscale  # the bilinear filter's support is 1, scaled by the downscale factor
    centers = (np.asarray(positions).astype(f32) + f32(0.5)) * scale
    lo = np.maximum(np.trunc(centers - support + f32(0.5)).astype(np.int64), 0)
    hi = np.minimum(np.trunc(centers + support + f32(0.5)).astype(np.int64), in_size)
    return centers, lo, hi, f32(1) / filterscale


def _axis_weights(in_size: int, out_size: int, positions: np.ndarray) -> np.ndarray:
    """(len(positions), in_size) float32 weights of Pillow's triangle filter, as the kernel computes them.

    positions are output coordinates (float32) inside [0, out_size); each row sums to 1.
    """
    f32 = np.float32
    centers, lo, hi, inv = axis_taps(in_size, out_size, positions)
    taps = np.arange(in_size, dtype=f32)
    weights = np.maximum(f32(0), f32(1) - np.abs((taps[None, :] - centers[:, None] + f32(0.5)) * inv))
    index = np.arange(in_size)[None, :]
    weights[(index < lo[:, None]) | (index >= hi[:, None])] = 0
    sums = weights.sum(axis=1, dtype=f32)
    return weights / np.where(sums == 0, f32(1), sums)[:, None]


def reference_resize_crop(pixels: np.ndarray, preprocess: Preprocess, *, tensor_item: bool = False) -> np.ndarray:
    """One model row from decoded pixels with exactly the GPU kernel's math, in numpy.

    pixels: HWC (1, 3 or 4 channels; alpha ignored) or HW uint8, upright. ``tensor_item``: the pixels
    came as an already-decoded tensor item, which (like CpuDecoder) is not resized when it is already
    crop x crop. Returns an array of preprocess.output_shape and preprocess.np_dtype.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (1, 3, 4)):
        raise ValueError(f"pixels must be HW or HWC (1, 3 or 4 channels) uint8, got {pixels.dtype} {pixels.shape}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    rgb = pixels[:, :, [0, 0, 0]] if pixels.shape[2] == 1 else pixels[:, :, :3]
    height, width = rgb.shape[:2]
    p = preprocess
    keep = tensor_item and height == p.crop and width == p.crop
    rw, rh, ox, oy = (int(v[0]) for v in batch_geometry([width], [height], p, keep_size=[keep]))
    cols = np.arange(p.crop) + ox  # resized-image coordinates of the crop's columns and rows
    rows = np.arange(p.crop) + oy
    inside_x = (cols >= 0) & (cols < rw)
    inside_y = (rows >= 0) & (rows < rh)
    wx = np.zeros((p.crop, width), np.float32)
    wy = np.zeros((p.crop, height), np.float32)
    wx[inside_x] = _axis_weights(width, rw, cols[inside_x].astype(np.float32))
    wy[inside_y] = _axis_weights(height, rh, rows[inside_y].astype(np.float32))
    src = rgb.astype(np.float32)
    # y then x as two matrix products (padding rows and columns have zero weights, so stay 0):
    # (crop, H) @ (H, W*3) -> (crop, W, 3); then (crop, 3, W) @ (W, crop) -> (crop, 3, crop)
    resized = (wy @ src.reshape(height, width * 3)).reshape(p.crop, width, 3)
    resized = (resized.transpose(0, 2, 1) @ wx.T).transpose(0, 2, 1)
    order = [0, 1, 2] if p.channel_order == "RGB" else [2, 1, 0]
    values = resized[:, :, order]
    mean = np.array(p.mean, np.float32)
    std = np.array(p.std, np.float32)
    normalized = (values / np.float32(255) - mean) / std
    if p.layout == "NCHW":
        normalized = normalized.transpose(2, 0, 1)
    return np.ascontiguousarray(normalized).astype(p.np_dtype)


# ---- the kernel -------------------------------------------------------------------------------------
# What both kernels' sources begin with: the output type, the layout and the store of one value.
_PRELUDE = r"""
#define OUT_T {out_t}
#define NHWC {nhwc}
__device__ __forceinline__ void store(float* out, long long i, float v) {{ out[i] = v; }}
__device__ __forceinline__ void store(unsigned short* out, long long i, float v) {{
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));  // round to nearest even, like numpy's astype
    out[i] = h;
}}
"""

_KERNEL_SOURCE = r"""
// One thread per crop pixel (x of the grid) and image (y of the grid): Pillow's antialiased bilinear
// resize of the source at that pixel, straight from uint8, then normalise and store 3 channels.
#define COLS {ncols}

// Where the triangle filter of output coordinate `pos` (resized image) lies on a source axis of
// `in_size` samples: taps [lo, hi), centre, 1/filterscale, and the weight sum (Pillow's
// precompute_coeffs in float32). __fmul_rn keeps the centre from being fused into the bounds.
struct Axis {{ int lo, hi; float center, inv, sum; }};

__device__ __forceinline__ Axis axis(int pos, int in_size, int out_size) {{
    Axis a;
    float scale = (float)in_size / (float)out_size;
    float filterscale = fmaxf(scale, 1.0f);
    float support = filterscale;
    a.inv = 1.0f / filterscale;
    a.center = __fmul_rn((float)pos + 0.5f, scale);
    a.lo = max((int)(a.center - support + 0.5f), 0);
    a.hi = min((int)(a.center + support + 0.5f), in_size);
    a.sum = 0.0f;
    for (int i = a.lo; i < a.hi; ++i) a.sum += fmaxf(0.0f, 1.0f - fabsf(((float)i - a.center + 0.5f) * a.inv));
    return a;
}}

__device__ __forceinline__ float weight(const Axis& a, int i) {{
    return fmaxf(0.0f, 1.0f - fabsf(((float)i - a.center + 0.5f) * a.inv));
}}

__device__ __forceinline__ float pick(float v0, float v1, float v2, int c) {{
    return c == 0 ? v0 : (c == 1 ? v1 : v2);
}}

extern "C" __global__ void {name}(
    const long long* __restrict__ table, const int first_image, const int crop, OUT_T* __restrict__ out,
    const int c0, const int c1, const int c2,
    const float m0, const float m1, const float m2, const float s0, const float s1, const float s2)
{{
    const int pixels = crop * crop;
    const int pix = blockIdx.x * blockDim.x + threadIdx.x;
    if (pix >= pixels) return;
    const long long image = (long long)first_image + blockIdx.y;
    const long long* t = table + image * COLS;
    if (t[{MODE}] != {compute}) return;

    const int oy = pix / crop;
    const int ox = pix - oy * crop;
    const int rx = ox + (int)t[{OFFSET_X}];
    const int ry = oy + (int)t[{OFFSET_Y}];
    const int rw = (int)t[{RESIZED_W}];
    const int rh = (int)t[{RESIZED_H}];
    float v0 = 0.0f, v1 = 0.0f, v2 = 0.0f;  // zero padding outside the resized image
    if (rx >= 0 && rx < rw && ry >= 0 && ry < rh) {{
        const unsigned char* src = (const unsigned char*)t[{PTR}];
        const int height = (int)t[{HEIGHT}];
        const int width = (int)t[{WIDTH}];
        const long long pitch = t[{PITCH}];
        const int channels = (int)t[{CHANNELS}];
        const Axis ax = axis(rx, width, rw);
        const Axis ay = axis(ry, height, rh);
        for (int y = ay.lo; y < ay.hi; ++y) {{
            const float wy = weight(ay, y);
            if (wy == 0.0f) continue;
            const unsigned char* line = src + (long long)y * pitch;
            float b0 = 0.0f, b1 = 0.0f, b2 = 0.0f;
            if (channels == 1) {{
                for (int x = ax.lo; x < ax.hi; ++x) b0 += weight(ax, x) * (float)line[x];
                b1 = b0; b2 = b0;
            }} else {{
                for (int x = ax.lo; x < ax.hi; ++x) {{
                    const float wx = weight(ax, x);
                    const unsigned char* p = line + (long long)x * channels;
                    b0 += wx * (float)p[0];
                    b1 += wx * (float)p[1];
                    b2 += wx * (float)p[2];
                }}
            }}
            v0 += wy * b0; v1 += wy * b1; v2 += wy * b2;
        }}
        const float norm = ax.sum * ay.sum;
        if (norm > 0.0f) {{ v0 /= norm; v1 /= norm; v2 /= norm; }}
    }}
    // (x / 255 - mean) / std in float32, the steps of ToTensor + Normalize (and CpuDecoder's LUTs)
    const float r0 = (pick(v0, v1, v2, c0) / 255.0f - m0) / s0;
    const float r1 = (pick(v0, v1, v2, c1) / 255.0f - m1) / s1;
    const float r2 = (pick(v0, v1, v2, c2) / 255.0f - m2) / s2;
    const long long base = image * 3LL * pixels;
#if NHWC
    store(out, base + 3LL * pix + 0, r0);
    store(out, base + 3LL * pix + 1, r1);
    store(out, base + 3LL * pix + 2, r2);
#else
    store(out, base + pix, r0);
    store(out, base + pixels + pix, r1);
    store(out, base + 2LL * pixels + pix, r2);
#endif
}}
"""

_kernels: dict = {}
_kernels_lock = threading.Lock()


def _kernel(layout: str, dtype: str, tiled: bool = False):
    """The compiled RawKernel for one (layout, dtype) and kind; CuPy compiles it once per device on
    first launch."""
    key = (layout, dtype, tiled)
    with _kernels_lock:
        if key not in _kernels:
            import cupy  # the decoder checked it is installed

            source, name = kernel_source(layout, dtype, tiled)
            _kernels[key] = cupy.RawKernel(source, name)
        return _kernels[key]


class PreprocessKernels:
    """Both kernels of one (layout, dtype), launched over a filled table on the current stream."""

    def __init__(self, layout: str, dtype: str):
        self.pixel = _kernel(layout, dtype)
        self.tiled = _kernel(layout, dtype, tiled=True)

    def launch(self, launches: "Launches", device_table, n: int, crop: int, out, scalars) -> None:
        """Compute the table's n rows into `out`; `scalars`: the channel order, mean and std
        (3 np.int32, 3 + 3 np.float32) that both kernels take after `out`."""
        if launches.tiled_rows:
            self._over_rows(self.tiled, launches.tiles, device_table, n, crop, out, scalars)
        if launches.pixel_rows:
            self._over_rows(self.pixel, (crop * crop + _BLOCK - 1) // _BLOCK, device_table, n, crop, out, scalars)

    @staticmethod
    def _over_rows(kernel, grid_x: int, device_table, n: int, crop: int, out, scalars) -> None:
        """grid_x blocks per row, the rows in slices of CUDA's largest grid y."""
        for first in range(0, n, _MAX_GRID_Y):
            count = min(_MAX_GRID_Y, n - first)
            kernel((grid_x, count), (_BLOCK,), (device_table, np.int32(first), np.int32(crop), out, *scalars))


_SOURCE_DTYPES = (np.int64, np.uint64, np.int64, np.int64, np.int64, np.int64, bool)  # Sources' columns


class Sources(NamedTuple):
    """The images the kernel computes, one entry per batch row, as columns: row, device pointer,
    height, width, row pitch in bytes, channels, keep size (a tensor item used as it is)."""

    rows: np.ndarray
    pointers: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    pitches: np.ndarray
    channels: np.ndarray
    keep_size: np.ndarray

    @classmethod
    def empty(cls) -> Sources:
        return cls(*(np.empty(0, dtype) for dtype in _SOURCE_DTYPES))

    @classmethod
    def of(cls, entries: list[tuple]) -> Sources:
        """From (row, pointer, height, width, pitch, channels, keep size) tuples."""
        if not entries:
            return cls.empty()
        return cls(*(np.array(column).astype(dtype) for column, dtype in zip(zip(*entries), _SOURCE_DTYPES)))

    @classmethod
    def join(cls, parts: list[Sources]) -> Sources:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate(column) for column in zip(*parts)))

    def __len__(self) -> int:  # images, not fields
        return len(self.rows)


class Launches(NamedTuple):
    """What a filled table asks of the kernels: rows for each, and the tiled kernel's blocks per row
    (the most tiles of any of its images)."""

    tiled_rows: int
    tiles: int
    pixel_rows: int


def tiles_wanted() -> bool:
    """False where $BATCHSCORE_RESIZE_TILES=0: every image then takes the per-pixel kernel."""
    return os.environ.get("BATCHSCORE_RESIZE_TILES", "1").strip() != "0"


def fill_table(table: np.ndarray, sources: Sources, preprocess: Preprocess, tiled: bool | None = None) -> Launches:
    """Write the kernels' parameter table: one int64 row per batch row, columns _COLUMNS, for the
    rows in `sources`; every other row gets MODE 0 and is left alone by both kernels. ``tiled``:
    whether images may take the tiled kernel (None: `tiles_wanted()`)."""
    table[:] = 0  # MODE = _MODE_SKIP for every row not listed, and no tiles
    if not len(sources):
        return Launches(0, 0, 0)
    rows = sources.rows
    rw, rh, ox, oy = batch_geometry(sources.widths, sources.heights, preprocess, keep_size=sources.keep_size)
    c = _COL
    table[rows, c["PTR"]] = np.asarray(sources.pointers, np.uint64).view(np.int64)
    table[rows, c["HEIGHT"]] = sources.heights
    table[rows, c["WIDTH"]] = sources.widths
    table[rows, c["PITCH"]] = sources.pitches
    table[rows, c["CHANNELS"]] = sources.channels
    table[rows, c["RESIZED_W"]] = rw
    table[rows, c["RESIZED_H"]] = rh
    table[rows, c["OFFSET_X"]] = ox
    table[rows, c["OFFSET_Y"]] = oy
    if tiles_wanted() if tiled is None else tiled:
        columns = tile_columns(sources.widths, sources.heights, rw, rh, sources.channels, preprocess.crop)
    else:
        columns = np.zeros(len(sources), np.int64)
    table[rows, c["MODE"]] = np.where(columns > 0, _MODE_TILED, _MODE_COMPUTE)
    table[rows, c["TILE_COLS"]] = columns
    tiled = int((columns > 0).sum())
    tiles = int(tiles_per_image(columns, preprocess.crop).max())
    return Launches(tiled, tiles, len(columns) - tiled)


def kernel_source(layout: str, dtype: str, tiled: bool = False) -> tuple[str, str]:
    """(CUDA source, kernel name) of a preprocessing kernel for one layout and output dtype: the
    per-pixel one, or the tiled one (scoring/resize_tiles.py)."""
    name = f"batchscore_preprocess{'_tiled' if tiled else ''}_{layout.lower()}_{dtype}"
    if tiled:
        body = tiled_source(name, _COL, _MODE_TILED)
    else:
        body = _KERNEL_SOURCE.format(ncols=len(_COLUMNS), name=name, compute=_MODE_COMPUTE, **_COL)
    out_t = "float" if dtype == "float32" else "unsigned short"
    return _PRELUDE.format(out_t=out_t, nhwc=int(layout == "NHWC")) + body, name
