"""The tiled preprocessing kernel: the same math as scoring/resize_kernel.py's per-pixel kernel,
computed a tile of the crop at a time in two separable passes through shared memory.

Why: the per-pixel kernel recomputes both axes' taps and weights at every output pixel and reads
the source a byte at a time from each thread's own chain of loads: instruction bound (ncu: 74% SM
throughput, 30% of the memory system; benchmarks/results/scoring/h100_2026-11-22_s13_resize_rows_trial/
NOTES.md), and its time is taken from the model that shares the GPU. Here a block of TILE_ROWS crop
rows x up to MAX_TILE_COLS crop columns of one image:

1. computes each tile row's and column's taps and normalised weights once, into shared memory, and
   on one thread the tile's source span and the normalisation as a multiply-add per channel
   ((x / 255 - mean) / std, a few float32 roundings from the per-pixel kernel's two divisions: the
   tests hold both kernels to the reference within 1e-4);
2. filters the span's source pixels in y into a float buffer in shared memory, a plane per channel,
   CHUNK_ROWS rows at a time: a warp per row, each lane 4 pixels (12 bytes, read as aligned 32-bit
   words and funnel-shifted into place, so any row pitch will do), each byte made a float by one
   byte permute and one add;
3. filters that buffer in x, a pixel (3 channels) per lane, and writes it normalised.

Loops stride by LANES, a compile-time 32, so none of them divides. On an H100 with a batch of 256
500x375 images (2026-11-23, session 21, call 3: `benchmarks/device/resize_load_probe.py PLAN`):
0.156 ms against 0.243 ms for session 18's version (ncu: 116 M warp instructions against 179 M);
beside ResNet-50 FP16 at 26,000 images/s the model kept 98.0-98.4% of its rate against 97.6%.
Session 18's version read single bytes with a division per loop, recomputed every tile's weights
for 16 rows, and its x pass met 4-way bank conflicts in an interleaved buffer (ncu in session 21's
call 1: benchmarks/results/scoring/h100_2026-11-23_s21/NOTES.md). Earlier still (session 18, calls 1-3):
a search per block for its image and column weights that a warp's lanes read from one bank
(0.584 ms); without those (0.418 ms); with bytes made floats without the conversion unit (0.349 ms).

A tile's source span grows with the downscale factor, so the columns per tile shrink with it
(`tile_columns`). Images whose filters need more than MAX_TAPS taps (shorter sides over about 15x
the resize target) and images that are not 3-channel stay on the per-pixel kernel.

A launch is a grid of (the batch's most tiles per image) x (images): an image with fewer tiles
leaves the rest of its blocks idle, which costs nothing in a batch of one image size. Every per-row
loop strides by the block's warps and lanes, so the code is also correct run as one thread per
block with LANES defined as 1: that is how the tests run it on the host.
"""

from __future__ import annotations

import numpy as np

TILE_ROWS = 32  # crop rows per block
CHUNK_ROWS = 16  # crop rows per pass through the shared row buffer
MAX_TILE_COLS = 96  # crop columns per block, at most
MAX_TAPS = 32  # taps per output coordinate that a tile's weights may hold
MAX_SPAN = 128  # source pixels a tile's crop columns may reach across (its shared row buffer)


def tile_columns(widths, heights, resized_w, resized_h, channels, crop: int) -> np.ndarray:
    """Crop columns per tile for each image (int64), 0 where the per-pixel kernel takes it.

    A column's filter reaches at most 2 * filterscale + 1 source pixels, and C consecutive columns
    at most (C - 1) * scale + 2 * filterscale + 1: each bound gets one pixel of margin for float
    rounding. The columns are spread evenly over the tiles across the crop.
    """
    f32 = np.float32
    scale_x = np.asarray(widths).astype(f32) / np.asarray(resized_w).astype(f32)
    scale_y = np.asarray(heights).astype(f32) / np.asarray(resized_h).astype(f32)
    reach_x = 2 * np.maximum(scale_x, f32(1)) + 2
    reach_y = 2 * np.maximum(scale_y, f32(1)) + 2
    fits = (reach_x <= MAX_TAPS) & (reach_y <= MAX_TAPS) & (np.asarray(channels) == 3)
    limit = np.floor((MAX_SPAN - reach_x) / scale_x) + 1
    limit = np.clip(np.where(fits, limit, 0), 0, min(MAX_TILE_COLS, crop)).astype(np.int64)
    across = -(-crop // np.maximum(limit, 1))  # tiles across the crop
    return np.where(limit >= 1, -(-crop // across), 0).astype(np.int64)


def tiles_per_image(columns: np.ndarray, crop: int) -> np.ndarray:
    """Blocks each image takes in the tiled kernel (0 where `columns` is 0)."""
    columns = np.asarray(columns, np.int64)
    down = -(-crop // TILE_ROWS)
    return np.where(columns > 0, down * (-(-crop // np.maximum(columns, 1))), 0).astype(np.int64)


_SOURCE = r"""
// A block per tile of one image's crop (blockIdx.y: the image, blockIdx.x: the tile): TILE_ROWS rows x
// the image's TILE_COLS columns. Warps take tile rows in turn and their lanes the row's values; column
// weights are stored tap-major, so a warp's lanes read neighbouring words of shared memory.
#define COLS {ncols}
#define TILE_ROWS {tile_rows}
#define CHUNK_ROWS {chunk_rows}
#define MAX_TILE_COLS {max_cols}
#define MAX_TAPS {max_taps}
#define MAX_SPAN {max_span}
#define PLANE (MAX_SPAN + 4)  // floats of one channel of a filtered row: whole 4-pixel groups, 16-byte aligned
#ifndef LANES
#define LANES 32  // a warp's lanes, a compile-time constant so that no loop divides (the host tests: 1)
#endif

// The source taps [lo, lo + n) of output coordinate `pos` on an axis of `in_size` samples resized to
// `out_size` (the per-pixel kernel's `axis`, in the same float32 steps).
struct Taps {{ int lo, n; float center, inv; }};

__device__ __forceinline__ Taps taps(int pos, int in_size, int out_size) {{
    Taps a;
    const float scale = (float)in_size / (float)out_size;
    const float filterscale = fmaxf(scale, 1.0f);
    a.inv = 1.0f / filterscale;
    a.center = __fmul_rn((float)pos + 0.5f, scale);
    a.lo = max((int)(a.center - filterscale + 0.5f), 0);
    const int hi = min((int)(a.center + filterscale + 0.5f), in_size);
    a.n = min(max(hi - a.lo, 0), MAX_TAPS);
    return a;
}}

// Byte m (0-3) of a little-endian word as a float, without the conversion unit (a quarter of the
// FMA rate): one byte permute makes the bits of 2^23 + b, then less 2^23.
__device__ __forceinline__ float byte_of(unsigned int word, int m) {{
    return __int_as_float(__byte_perm(word, 0x4B000000u, 0x7440u + m)) - 8388608.0f;
}}

// The 12 bytes at p (4 RGB pixels, any alignment) as 3 little-endian words, from aligned word loads.
// Only the aligned words that hold one of the bytes [p, p + valid) are read, so never a word wholly
// outside the image's memory.
__device__ __forceinline__ void load12(const unsigned char* p, int valid, unsigned int* w) {{
    const unsigned long long address = (unsigned long long)p;
    const unsigned int* q = (const unsigned int*)(address & ~3ULL);
    const int skew = (int)(address & 3ULL);
    const int last = (skew + valid - 1) >> 2;  // the word that holds the last valid byte
    unsigned int v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = i <= last ? __ldg(q + i) : 0u;
#pragma unroll
    for (int i = 0; i < 3; ++i) w[i] = __funnelshift_r(v[i], v[i + 1], 8 * skew);
}}

// Normalised weights of one output coordinate, w[k * stride]; none outside the resized image (zero
// padding).
__device__ __forceinline__ void weights(int pos, int in_size, int out_size, float* w, int stride, int* lo, int* n) {{
    if (pos < 0 || pos >= out_size) {{ *lo = 0; *n = 0; return; }}
    const Taps a = taps(pos, in_size, out_size);
    float sum = 0.0f;
    for (int k = 0; k < a.n; ++k) {{
        const float v = fmaxf(0.0f, 1.0f - fabsf(((float)(a.lo + k) - a.center + 0.5f) * a.inv));
        w[k * stride] = v;
        sum += v;
    }}
    const float inv_sum = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int k = 0; k < a.n; ++k) w[k * stride] *= inv_sum;
    *lo = a.lo;
    *n = a.n;
}}

extern "C" __global__ void {name}(
    const long long* __restrict__ table, const int first_image, const int crop, OUT_T* __restrict__ out,
    const int c0, const int c1, const int c2,
    const float m0, const float m1, const float m2, const float s0, const float s1, const float s2)
{{
    __shared__ float wy[TILE_ROWS][MAX_TAPS];
    __shared__ float wx[MAX_TAPS][MAX_TILE_COLS];
    __shared__ int ylo[TILE_ROWS], yn[TILE_ROWS], xlo[MAX_TILE_COLS], xn[MAX_TILE_COLS];
    __shared__ __align__(16) float lines[CHUNK_ROWS][3][PLANE];  // filtered in y, a plane per channel
    __shared__ float scale[3], shift[3];
    __shared__ int span_at[2];  // the source columns [base, base + span) of the tile

    const long long image = (long long)first_image + blockIdx.y;
    const long long* t = table + image * COLS;
    const int tile_cols = (int)t[{TILE_COLS}];
    if (t[{MODE}] != {tiled} || tile_cols < 1) return;
    const int across = (crop + tile_cols - 1) / tile_cols;
    const int down = (crop + TILE_ROWS - 1) / TILE_ROWS;
    if ((int)blockIdx.x >= across * down) return;  // a smaller image's share of a batch's largest grid
    const int oy0 = ((int)blockIdx.x / across) * TILE_ROWS;
    const int ox0 = ((int)blockIdx.x % across) * tile_cols;
    const int rows = min(TILE_ROWS, crop - oy0);
    const int cols = min(tile_cols, crop - ox0);
    const int height = (int)t[{HEIGHT}], width = (int)t[{WIDTH}];
    const int rw = (int)t[{RESIZED_W}], rh = (int)t[{RESIZED_H}];
    const int off_x = (int)t[{OFFSET_X}], off_y = (int)t[{OFFSET_Y}];
    const long long pitch = t[{PITCH}];

    // 1. taps and weights of the tile's rows and columns; on one thread, the source columns the tile's
    // columns inside the resized image reach, and (x / 255 - mean) / std as x * scale + shift
    for (int i = threadIdx.x; i < rows + cols; i += blockDim.x) {{
        if (i < rows) weights(oy0 + i + off_y, height, rh, wy[i], 1, &ylo[i], &yn[i]);
        else weights(ox0 + (i - rows) + off_x, width, rw, &wx[0][i - rows], MAX_TILE_COLS, &xlo[i - rows], &xn[i - rows]);
    }}
    if (threadIdx.x == 0) {{
        const int first = max(ox0 + off_x, 0), last = min(ox0 + cols + off_x, rw) - 1;
        span_at[0] = span_at[1] = 0;
        if (first <= last) {{
            const Taps a = taps(first, width, rw), b = taps(last, width, rw);
            span_at[0] = a.lo;
            span_at[1] = min(b.lo + b.n - a.lo, MAX_SPAN);
        }}
        scale[0] = 1.0f / (255.0f * s0); scale[1] = 1.0f / (255.0f * s1); scale[2] = 1.0f / (255.0f * s2);
        shift[0] = -m0 / s0; shift[1] = -m1 / s1; shift[2] = -m2 / s2;
    }}
    __syncthreads();
    const int base = span_at[0], span = span_at[1];

    // Warps take rows in turn, lanes the values of a row (on the host: one thread, all of them).
    const int warps = (int)blockDim.x / LANES;
    const int warp = (int)threadIdx.x / LANES, lane = (int)threadIdx.x % LANES;

    // 2 and 3 for each chunk of CHUNK_ROWS rows in turn, through the shared row buffer.
    const int groups = (span + 3) / 4;
    const int row_bytes = 3 * (width - base);  // a source row's bytes from the span's first pixel on
    const unsigned char* src = (const unsigned char*)t[{PTR}] + 3LL * base;
    const float scale0 = scale[0], scale1 = scale[1], scale2 = scale[2];
    const float shift0 = shift[0], shift1 = shift[1], shift2 = shift[2];
    const int pixels = crop * crop;
    OUT_T* image_out = out + image * 3LL * pixels;
    for (int chunk = 0; chunk < rows; chunk += CHUNK_ROWS) {{
        const int chunk_rows = min(CHUNK_ROWS, rows - chunk);
        if (chunk > 0) __syncthreads();  // the previous chunk's x pass has read the buffer

        // 2. in y: each row over the span, a lane per 4 pixels (12 bytes, read as 3 words, so each
        // tap's weight and address serve 12 values), into shared memory as a plane per channel
        for (int r = warp; r < chunk_rows; r += warps) {{
            const float* w = wy[chunk + r];
            const int n = yn[chunk + r];
            const unsigned char* first_line = src + (long long)ylo[chunk + r] * pitch;
            for (int g = lane; g < groups; g += LANES) {{
                const int valid = min(12, row_bytes - 12 * g);
                float acc[12];
#pragma unroll
                for (int m = 0; m < 12; ++m) acc[m] = 0.0f;
                const unsigned char* p = first_line + 12 * g;
                for (int k = 0; k < n; ++k, p += pitch) {{
                    unsigned int word[3];
                    load12(p, valid, word);
                    const float wk = w[k];
#pragma unroll
                    for (int m = 0; m < 12; ++m) acc[m] = fmaf(wk, byte_of(word[m >> 2], m & 3), acc[m]);
                }}
                // pixel 4g + q's channel c is byte 3q + c
#pragma unroll
                for (int c = 0; c < 3; ++c)
                    *(float4*)&lines[r][c][4 * g] = make_float4(acc[c], acc[3 + c], acc[6 + c], acc[9 + c]);
            }}
        }}
        __syncthreads();

        // 3. in x, a pixel per lane, each output channel from its source channel's plane, normalised
        // as one multiply-add per channel, and the stores
        for (int r = warp; r < chunk_rows; r += warps) {{
            const float* p0 = lines[r][c0];
            const float* p1 = lines[r][c1];
            const float* p2 = lines[r][c2];
            const long long row = (long long)(oy0 + chunk + r) * crop + ox0;
            for (int x = lane; x < cols; x += LANES) {{
                const int at = xlo[x] - base, n = xn[x];
                float v0 = 0.0f, v1 = 0.0f, v2 = 0.0f;
                for (int k = 0; k < n; ++k) {{
                    const float wk = wx[k][x];
                    v0 = fmaf(wk, p0[at + k], v0);
                    v1 = fmaf(wk, p1[at + k], v1);
                    v2 = fmaf(wk, p2[at + k], v2);
                }}
                const float r0 = fmaf(v0, scale0, shift0);
                const float r1 = fmaf(v1, scale1, shift1);
                const float r2 = fmaf(v2, scale2, shift2);
#if NHWC
                store(image_out, 3LL * (row + x) + 0, r0);
                store(image_out, 3LL * (row + x) + 1, r1);
                store(image_out, 3LL * (row + x) + 2, r2);
#else
                store(image_out, row + x, r0);
                store(image_out, pixels + row + x, r1);
                store(image_out, 2LL * pixels + row + x, r2);
#endif
            }}
        }}
    }}
}}
"""


def tiled_source(name: str, columns: dict[str, int], tiled_mode: int) -> str:
    """The tiled kernel's CUDA C body (OUT_T, NHWC and store() come from the caller's prelude);
    `columns`: the parameter table's column numbers by name; it computes the rows whose MODE is
    `tiled_mode`."""
    return _SOURCE.format(name=name, ncols=len(columns), tile_rows=TILE_ROWS, chunk_rows=CHUNK_ROWS, max_cols=MAX_TILE_COLS,
                          max_taps=MAX_TAPS, max_span=MAX_SPAN, tiled=tiled_mode, **columns)
