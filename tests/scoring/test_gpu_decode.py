"""scoring/gpu_decode.py: the numpy reference of the kernel against CpuDecoder (Pillow), the batch
geometry, JPEG routing, the kernel source run on the host, and (marked gpu) the GpuDecoder itself
against the reference and against CpuDecoder."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import time

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from engine.errors import BatchscoreError  # noqa: E402
from scoring import gpu_decode as gd  # noqa: E402
from scoring import resize_kernel as rk  # noqa: E402
from scoring import resize_tiles as rt  # noqa: E402
from scoring.decode import CpuDecoder, Preprocess, center_crop_box, resized_size  # noqa: E402
from tests.scoring.test_decode import encode, exif_with_orientation, photo  # noqa: E402

BGR_MEAN = (0.406, 0.456, 0.485)
BGR_STD = (0.225, 0.224, 0.229)

# Preprocess variants: the default; a crop larger than the resized image (zero padding); channels
# last in float16 with BGR order; a small crop.
SETTINGS = {
    "default": Preprocess(),
    "padded": Preprocess(resize_shorter=200, crop=224),
    "nhwc-fp16-bgr": Preprocess(layout="NHWC", dtype="float16", channel_order="BGR", mean=BGR_MEAN, std=BGR_STD),
    "small": Preprocess(resize_shorter=66, crop=50),  # tiles of 32 and 18 rows: a chunk of 2
}
# (width, height): downscale, portrait, strong downscale, upscale, non-square extremes, tiny
SIZES = [(400, 350), (350, 400), (1200, 900), (100, 80), (640, 131), (257, 600), (31, 45)]


def one_level(p: Preprocess) -> float:
    """One uint8 step after normalisation, in the channel where it is largest."""
    return 1.0 / 255.0 / min(p.std)


def within_pillow_rounding(actual: np.ndarray, expected: np.ndarray, p: Preprocess) -> tuple[bool, str]:
    """Pillow rounds to uint8 after each resize pass and the kernel does not: each value may differ
    by up to one uint8 level (plus float16's own rounding), and on average by about a third of one.
    A half-pixel shift or a crop one pixel off is many times over these bounds."""
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    fp16 = 4e-3 if p.dtype == "float16" else 0.0
    max_ok = diff.max() <= 1.02 * one_level(p) + fp16
    mean_ok = diff.mean() <= 0.4 * one_level(p) + fp16 / 4
    return bool(max_ok and mean_ok), f"max {diff.max():.5f}, mean {diff.mean():.5f} (one level {one_level(p):.5f})"


def cpu_row(item, p: Preprocess) -> np.ndarray:
    out, errors = CpuDecoder(p).decode([item])
    assert errors == [None], errors
    return out[0]


def jpeg_bytes(img: np.ndarray, **kw) -> bytes:
    return encode(Image.fromarray(img), "JPEG", quality=kw.pop("quality", 92), **kw)


# ---- geometry ------------------------------------------------------------------------------------
def test_batch_geometry_equals_resized_size_and_center_crop_box():
    rng = np.random.default_rng(0)
    sizes = [(w, h) for w, h in rng.integers(1, 3000, size=(400, 2))] + [
        (292, 256), (257, 256), (259, 256), (201, 300), (224, 224), (1, 1), (1000, 3), (3, 1000), (225, 224)]
    for p in SETTINGS.values():
        widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
        keep = [(w == p.crop and h == p.crop) for w, h in sizes]
        rw, rh, ox, oy = rk.batch_geometry(widths, heights, p, keep_size=keep)
        for i, (w, h) in enumerate(sizes):
            size = (w, h) if keep[i] else resized_size(int(w), int(h), p.resize_shorter)
            pad_left, pad_top, left, top = center_crop_box(size[0], size[1], p.crop)
            assert (rw[i], rh[i], ox[i], oy[i]) == (size[0], size[1], left - pad_left, top - pad_top), (w, h, p)


# ---- the reference against Pillow ------------------------------------------------------------------
@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_reference_matches_cpu_decoder_within_pillow_rounding(setting, size):
    p = SETTINGS[setting]
    img = photo(*size, seed=size[0] + size[1])
    png = encode(Image.fromarray(img), "PNG")
    ok, text = within_pillow_rounding(rk.reference_resize_crop(img, p), cpu_row(png, p), p)
    assert ok, text


@pytest.mark.parametrize("channels", ["gray", "gray-hwc1", "rgba"])
def test_reference_reads_grayscale_as_three_channels_and_ignores_alpha(channels):
    p = Preprocess()
    img = photo(300, 220, seed=3)
    if channels == "gray":
        pixels = img[:, :, 1]
    elif channels == "gray-hwc1":
        pixels = img[:, :, 1:2]
    else:
        pixels = np.concatenate([img, np.full(img.shape[:2] + (1,), 77, np.uint8)], axis=2)
    ok, text = within_pillow_rounding(rk.reference_resize_crop(pixels, p), cpu_row(pixels, p), p)
    assert ok, text


def test_reference_takes_a_crop_sized_tensor_item_as_it_is():
    p = Preprocess()
    img = photo(224, 224, seed=5)
    np.testing.assert_array_equal(rk.reference_resize_crop(img, p, tensor_item=True), cpu_row(img, p))
    # as decoded bytes the same pixels are resized to 256 first, as CpuDecoder does for an encoded image
    png = encode(Image.fromarray(img), "PNG")
    ok, text = within_pillow_rounding(rk.reference_resize_crop(img, p), cpu_row(png, p), p)
    assert ok, text


def test_a_half_pixel_shift_fails_the_bound(monkeypatch):
    p = Preprocess()
    img = photo(400, 350, seed=1)
    expected = cpu_row(img, p)
    original = rk._axis_weights
    monkeypatch.setattr(rk, "_axis_weights", lambda n_in, n_out, pos: original(n_in, n_out, pos + np.float32(0.5)))
    ok, text = within_pillow_rounding(rk.reference_resize_crop(img, p), expected, p)
    assert not ok, text


@pytest.mark.parametrize("dx, dy", [(1, 0), (0, 1), (-1, -1)])
def test_a_crop_one_pixel_off_fails_the_bound(monkeypatch, dx, dy):
    p = Preprocess()
    img = photo(500, 375, seed=2)
    expected = cpu_row(img, p)
    original = rk.batch_geometry

    def shifted(*args, **kwargs):
        rw, rh, ox, oy = original(*args, **kwargs)
        return rw, rh, ox + dx, oy + dy

    monkeypatch.setattr(rk, "batch_geometry", shifted)
    ok, text = within_pillow_rounding(rk.reference_resize_crop(img, p), expected, p)
    assert not ok, text


def test_reference_rejects_pixels_that_are_not_uint8_hwc():
    with pytest.raises(ValueError, match="uint8"):
        rk.reference_resize_crop(np.zeros((10, 10, 3), np.float32), Preprocess())
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        rk.reference_resize_crop(np.zeros((10, 10, 2), np.uint8), Preprocess())


# ---- the kernel source, compiled for the host --------------------------------------------------------
_HOST_SHIMS = r"""
#include <cmath>
#include <algorithm>
using std::max; using std::min;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
#define __syncthreads() ((void)0)
#define asm(...) ((void)0)
#define __align__(n) __attribute__((aligned(n)))
#define LANES 1  // one thread per block: the tiled kernel's warp is one lane
struct Dim3 { unsigned x, y, z; };
static Dim3 blockIdx, blockDim, threadIdx;
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __int_as_float(int i) { float f; __builtin_memcpy(&f, &i, sizeof f); return f; }
template <class T> static inline T __ldg(const T* p) { T v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {  // byte i: byte (s >> 4i) & 7 of y:x
    const unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
    return r;
}
static inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
    return (unsigned)((((unsigned long long)hi << 32) | lo) >> (shift & 31));
}
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
static inline float4 make_float4(float x, float y, float z, float w) { float4 v = {x, y, z, w}; return v; }
using std::fmaf;
"""

_HOST_DRIVER = r"""
extern "C" void run_on_host(const long long* table, int images, int crop, float* out, const int* order,
                            const float* mean, const float* stdv) {
    blockDim.x = 256;
    const unsigned blocks = (crop * crop + 255) / 256;
    for (unsigned image = 0; image < (unsigned)images; ++image)
        for (unsigned b = 0; b < blocks; ++b)
            for (unsigned t = 0; t < 256; ++t) {
                blockIdx.x = b; blockIdx.y = image; threadIdx.x = t;
                KERNEL(table, 0, crop, out, order[0], order[1], order[2], mean[0], mean[1], mean[2],
                       stdv[0], stdv[1], stdv[2]);
            }
}
"""

# The tiled kernel run as one thread per block: its loops stride by the block's warps and lanes, and
# its barriers then have nothing to order, so this is the same computation a block of 256 threads does.
_HOST_TILED_DRIVER = r"""
extern "C" void run_on_host(const long long* table, int images, int crop, float* out, const int* order,
                            const float* mean, const float* stdv, long long tiles) {
    blockDim.x = 1; threadIdx.x = 0;
    for (unsigned image = 0; image < (unsigned)images; ++image)
        for (long long b = 0; b < tiles; ++b) {
            blockIdx.x = (unsigned)b; blockIdx.y = image;
            KERNEL(table, 0, crop, out, order[0], order[1], order[2], mean[0], mean[1], mean[2],
                   stdv[0], stdv[1], stdv[2]);
        }
}
"""


class HostKernels:
    """Both kernels of one layout (float32), compiled from their CUDA source as C++ for the host."""

    def __init__(self, pixel, tiled):
        self.pixel, self.tiled = pixel, tiled


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    """The CUDA kernels' own sources compiled as C++ for the host, by layout (float32)."""
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the kernel source for the host")
    libs = {}
    for layout in ("NCHW", "NHWC"):
        built = []
        for tiled, driver in ((False, _HOST_DRIVER), (True, _HOST_TILED_DRIVER)):
            source, name = rk.kernel_source(layout, "float32", tiled)
            path = tmp_path_factory.mktemp("kernel") / f"{layout}_{'tiled' if tiled else 'pixel'}.cpp"
            path.write_text(_HOST_SHIMS + source + driver.replace("KERNEL", name))
            lib = path.with_suffix(".so")
            subprocess.run([compiler, "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-w", "-o", str(lib), str(path)],
                           check=True, capture_output=True)
            built.append(ctypes.CDLL(str(lib)))
        libs[layout] = HostKernels(*built)
    return libs


def run_host_kernel(kernels: HostKernels, pixels: list[np.ndarray], p: Preprocess, skip_rows=(), out=None,
                    tensor_rows=(), tiled: bool = True):
    """Fill the table as GpuDecoder does (host pointers instead of device ones) and run the kernels
    as PreprocessKernels.launch does: the tiled one over its tiles, then the per-pixel one."""
    arrays, sources = [], []
    for i, img in enumerate(pixels):
        if i in skip_rows:
            continue
        arr = np.ascontiguousarray(img if img.ndim == 3 else img[:, :, None])
        arrays.append(arr)
        h, w, c = arr.shape
        sources.append((i, arr.ctypes.data, h, w, w * c, c, i in tensor_rows and h == p.crop and w == p.crop))
    table = np.zeros((len(pixels), len(rk._COLUMNS)), np.int64)
    launches = rk.fill_table(table, rk.Sources.of(sources), p, tiled=tiled)
    if out is None:
        out = np.zeros((len(pixels),) + p.output_shape, np.float32)
    order = np.array([0, 1, 2] if p.channel_order == "RGB" else [2, 1, 0], np.int32)
    mean, std = np.array(p.mean, np.float32), np.array(p.std, np.float32)
    ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    args = (ptr(table), ctypes.c_int(len(pixels)), ctypes.c_int(p.crop), ptr(out), ptr(order), ptr(mean), ptr(std))
    if launches.tiled_rows:
        kernels.tiled.run_on_host(*args, ctypes.c_longlong(launches.tiles))
    if launches.pixel_rows:
        kernels.pixel.run_on_host(*args)
    return out, launches


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "per-pixel"])
@pytest.mark.parametrize("setting", ["default", "padded", "small", "nhwc-bgr"])
def test_kernel_source_on_the_host_equals_the_reference(host_kernels, setting, tiled):
    p = SETTINGS.get(setting) or Preprocess(layout="NHWC", channel_order="BGR", mean=BGR_MEAN, std=BGR_STD)
    pixels = [photo(w, h, seed=w) for w, h in SIZES] + [photo(200, 150, seed=9)[:, :, 0],  # grayscale
                                                        np.dstack([photo(90, 120), np.zeros((120, 90), np.uint8)]),
                                                        photo(p.crop, p.crop, seed=4)]
    tensor_rows = {len(pixels) - 1}
    out, launches = run_host_kernel(host_kernels[p.layout], pixels, p, tensor_rows=tensor_rows, tiled=tiled)
    # grayscale and RGBA always take the per-pixel kernel; with tiles, every 3-channel image here is tiled
    assert launches.pixel_rows == (2 if tiled else len(pixels))
    assert launches.tiled_rows == (len(pixels) - 2 if tiled else 0)
    for i, img in enumerate(pixels):
        expected = rk.reference_resize_crop(img, p, tensor_item=i in tensor_rows)
        np.testing.assert_allclose(out[i], expected, rtol=0, atol=1e-4, err_msg=f"image {i} {img.shape}")


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "per-pixel"])
def test_kernel_leaves_rows_it_does_not_compute(host_kernels, tiled):
    p = Preprocess(resize_shorter=40, crop=32)
    pixels = [photo(60, 50, seed=s) for s in range(4)]
    out = np.full((4,) + p.output_shape, 7.0, np.float32)
    run_host_kernel(host_kernels["NCHW"], pixels, p, skip_rows={1, 3}, out=out, tiled=tiled)
    assert (out[1] == 7.0).all() and (out[3] == 7.0).all()
    np.testing.assert_allclose(out[2], rk.reference_resize_crop(pixels[2], p), atol=1e-4)


def test_tiles_shrink_with_the_downscale_and_large_ones_take_the_per_pixel_kernel(host_kernels):
    """Small crops keep the host run short: a 32x32 crop from shorter sides of 32 to 1,200 px covers
    scale factors from 1 (the whole crop in one tile across) through 4.4 (two across), 7.5 (three)
    and 12.5 (four) to past the taps a tile holds (per-pixel), both kernels in one table."""
    p = Preprocess(resize_shorter=32, crop=32)
    sizes = [(40, 60), (200, 140), (600, 400), (480, 241), (1400, 1200), (90, 32)]
    pixels = [photo(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    out, launches = run_host_kernel(host_kernels[p.layout], pixels, p)
    widths, heights = np.array([w for w, _ in sizes]), np.array([h for _, h in sizes])
    rw, rh, _, _ = rk.batch_geometry(widths, heights, p)
    columns = rt.tile_columns(widths, heights, rw, rh, np.full(len(sizes), 3), p.crop)
    assert columns.tolist() == [32, 16, 8, 11, 0, 32]
    down = -(-p.crop // rt.TILE_ROWS)  # tiles down the crop (each in passes of rt.CHUNK_ROWS rows)
    assert launches == rk.Launches(tiled_rows=5, tiles=down * 4, pixel_rows=1)  # the most: 4 across
    for i, img in enumerate(pixels):
        np.testing.assert_allclose(out[i], rk.reference_resize_crop(img, p), rtol=0, atol=1e-4,
                                   err_msg=f"image {i} {img.shape}")


@pytest.mark.parametrize("value, tiled_rows", [(None, 2), ("1", 2), ("0", 0)])
def test_the_tiled_kernel_can_be_turned_off_for_a_b_runs(monkeypatch, value, tiled_rows):
    if value is None:
        monkeypatch.delenv("BATCHSCORE_RESIZE_TILES", raising=False)
    else:
        monkeypatch.setenv("BATCHSCORE_RESIZE_TILES", value)
    p = Preprocess()
    sources = rk.Sources.of([(0, 1 << 20, 375, 500, 1500, 3, False), (2, 1 << 21, 480, 640, 1920, 3, False),
                             (3, 1 << 22, 100, 100, 100, 1, False)])
    table = np.zeros((4, len(rk._COLUMNS)), np.int64)
    launches = rk.fill_table(table, sources, p)
    assert launches.tiled_rows == tiled_rows and launches.pixel_rows == 3 - tiled_rows
    modes = table[:, rk._COL["MODE"]].tolist()
    assert modes == ([2, 0, 2, 1] if tiled_rows else [1, 0, 1, 1])  # row 1 is not listed: skipped


def test_a_tiles_source_span_and_taps_stay_inside_its_buffers():
    """Over many image sizes and crops, the span of source pixels that a tile's columns reach and
    the taps of each column, computed in the kernel's float32 steps, fit the shared buffers."""
    f32 = np.float32
    rng = np.random.default_rng(0)
    for crop, shorter in ((224, 256), (32, 40), (299, 342), (17, 17)):
        p = Preprocess(resize_shorter=shorter, crop=crop)
        widths = rng.integers(1, 6000, 400)
        heights = rng.integers(1, 6000, 400)
        rw, rh, ox, _ = rk.batch_geometry(widths, heights, p)
        columns = rt.tile_columns(widths, heights, rw, rh, np.full(400, 3), crop)
        for w, size, off, cols in zip(widths, rw, ox, columns):
            if cols == 0:
                continue
            scale = f32(w) / f32(size)
            fs = max(scale, f32(1))
            pos = np.arange(crop) + off
            pos = pos[(pos >= 0) & (pos < size)].astype(f32)
            center = (pos + f32(0.5)) * scale
            lo = np.maximum(np.trunc(center - fs + f32(0.5)).astype(np.int64), 0)
            hi = np.minimum(np.trunc(center + fs + f32(0.5)).astype(np.int64), w)
            assert (hi - lo).max() <= rt.MAX_TAPS, (w, size)
            for start in range(0, len(pos), cols):
                assert hi[start: start + cols].max() - lo[start] <= rt.MAX_SPAN, (w, size, cols)


# ---- without the GPU packages ------------------------------------------------------------------------
def _cupy_importable() -> bool:
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_cupy_importable(), reason="CuPy is installed here")
def test_without_cupy_the_reason_and_the_error_name_the_gpu_extra():
    reason = gd.gpu_decode_unavailable()
    assert reason is not None and "CuPy" in reason and "batchscore[gpu]" in reason
    with pytest.raises(BatchscoreError, match=r"CuPy.*batchscore\[gpu\]"):
        gd.GpuDecoder(Preprocess())


@pytest.mark.parametrize("threads, cores, expected", [
    (1, 16, 1), (3, 16, 3), (8, 16, gd.NVIMGCODEC_MAX_THREADS), (0, 16, gd.NVIMGCODEC_MAX_THREADS),
    (0, 2, 2), (0, 1, 1)])
def test_nvimgcodec_threads_are_capped_so_its_streams_stay_few(threads, cores, expected):
    # each nvImageCodec thread brings CUDA streams; past the GPU's 32 work queues one shares the model's
    assert gd.nvimgcodec_thread_count(threads, cores) == expected


def test_without_libnvjpeg_the_error_names_the_gpu_extra(monkeypatch):
    from scoring import nvjpeg_hardware as nh

    monkeypatch.setattr(nh, "_LIBRARY", None)
    monkeypatch.setattr(nh, "_candidates", lambda: ["/nonexistent/libnvjpeg.so.13"])
    with pytest.raises(nh.NvjpegUnavailable, match=r"libnvjpeg cannot be loaded \(pip install 'batchscore\[gpu\]'\)"):
        nh.load_library()


@pytest.mark.parametrize("value, wanted", [(None, True), ("1", True), ("0", False), ("off", False), ("False", False)])
def test_the_hardware_path_can_be_turned_off(monkeypatch, value, wanted):
    from scoring.nvjpeg_hardware import hardware_decoding_wanted

    if value is None:
        monkeypatch.delenv("BATCHSCORE_NVJPEG_HARDWARE", raising=False)
    else:
        monkeypatch.setenv("BATCHSCORE_NVJPEG_HARDWARE", value)
    assert hardware_decoding_wanted() is wanted


# ---- on the GPU ------------------------------------------------------------------------------------------
def _gpu_decoder(p: Preprocess, **kw):
    if gd.gpu_decode_unavailable() is not None:
        pytest.skip(gd.gpu_decode_unavailable())
    return gd.GpuDecoder(p, **kw)


def _decode_gpu(dec, items, extra_rows: int = 0, fill: float = 0.0, route=None):
    import cupy

    out = cupy.full((len(items) + extra_rows,) + dec.preprocess.output_shape, fill, dec.preprocess.np_dtype)
    errors = dec.decode_into(items, out) if route is None else dec.decode_into(items, out, route)
    return cupy.asnumpy(out), errors


# Per-row bounds on |GPU - CpuDecoder| after normalisation (one uint8 level is about 0.017).
# nvImageCodec (fancy chroma upsampling asked for): nvJPEG's IDCT differs a little from libjpeg's;
# measured on an H100 up to mean 0.0053, max 0.034. The hardware decoder, created with interpolated
# chroma upsampling (scoring.nvjpeg_hardware.CREATE_FLAGS): up to mean 0.0053, 99th percentile
# 0.0155, max 0.0335 on these images and 512 synthetic-dataset rows; without that flag it was mean
# 0.042, p99 0.32, max 1.50 (2026-11-22; benchmarks/device/hardware_decode_diff.py, benchmarks/
# results/gpu/hardware_decode_diff_h100_2026-11-22_s6_{interpolation,no_interpolation}.json).
CLOSE = {"nvimgcodec": {"mean": 0.03, "max": 0.6}, "hardware": {"mean": 0.03, "p99": 0.1, "max": 0.6}}


def _assert_close_to_cpu_decoder(gpu_row, cpu, p, hardware: bool = False):
    diff = np.abs(gpu_row.astype(np.float64) - cpu.astype(np.float64))
    bound = CLOSE["hardware" if hardware else "nvimgcodec"]
    p99 = float(np.percentile(diff, 99))
    assert diff.mean() < bound["mean"] and diff.max() < bound["max"] and p99 < bound.get("p99", np.inf), (
        f"mean {diff.mean():.4f}, p99 {p99:.4f}, max {diff.max():.4f} (hardware decoder: {hardware})")


def _hardware_taken(dec, items) -> set[int]:
    """The rows this decoder sends to the hardware JPEG decoder."""
    return set(dec.route(items).hardware.rows.tolist())


@pytest.mark.gpu
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_gpu_kernel_equals_the_reference_on_array_items(setting):
    p = SETTINGS[setting]
    pixels = [photo(w, h, seed=w) for w, h in SIZES] + [photo(200, 150, seed=9)[:, :, 0], photo(150, 200)[:, :, :1],
                                                        np.dstack([photo(90, 120), np.zeros((120, 90), np.uint8)]),
                                                        photo(p.crop, p.crop, seed=4)]
    with _gpu_decoder(p) as dec:
        out, errors = _decode_gpu(dec, pixels)
    assert errors == [None] * len(pixels)
    atol = 1e-3 if p.dtype == "float32" else 4e-3
    for i, img in enumerate(pixels):
        expected = rk.reference_resize_crop(img, p, tensor_item=True)
        np.testing.assert_allclose(out[i].astype(np.float32), expected.astype(np.float32), rtol=0, atol=atol,
                                   err_msg=f"image {i} {img.shape}")


def _assert_every_item_close_to_cpu_decoder(items, p, jpeg_hardware):
    with _gpu_decoder(p, jpeg_hardware=jpeg_hardware) as dec:
        out, errors = _decode_gpu(dec, items)
        taken = _hardware_taken(dec, items)
        assert dec.hardware_images == len(taken)
    cpu, cpu_errors = CpuDecoder(p).decode(items)
    assert errors == cpu_errors == [None] * len(items)
    for i in range(len(items)):
        _assert_close_to_cpu_decoder(out[i], cpu[i], p, hardware=i in taken)


@pytest.mark.gpu
@pytest.mark.parametrize("jpeg_hardware", [False, None], ids=["nvimgcodec", "hardware"])
@pytest.mark.parametrize("setting", ["default", "nhwc-fp16-bgr"])
def test_gpu_jpegs_are_close_to_cpu_decoder(setting, jpeg_hardware):
    p = SETTINGS[setting]
    items = [jpeg_bytes(photo(w, h, seed=w)) for w, h in SIZES]
    items.append(jpeg_bytes(photo(500, 375, seed=11), progressive=True))
    items.append(jpeg_bytes(photo(375, 500, seed=12), subsampling=0))  # 4:4:4
    _assert_every_item_close_to_cpu_decoder(items, p, jpeg_hardware)


@pytest.mark.gpu
@pytest.mark.parametrize("jpeg_hardware", [False, None], ids=["nvimgcodec", "hardware"])
def test_gpu_synthetic_dataset_jpegs_are_close_to_cpu_decoder(tmp_path, jpeg_hardware):
    import pyarrow.parquet as pq

    from scoring.make_data import make_dataset

    made = make_dataset(tmp_path / "d.parquet", 48, row_groups=1, column_kind="binary", grayscale=0.2,
                        exif_rotated=0.2, workers=1)
    items = pq.read_table(made.files[0]).column("image").to_pylist()
    p = Preprocess()
    _assert_every_item_close_to_cpu_decoder(items, p, jpeg_hardware)


@pytest.mark.gpu
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_gpu_applies_exif_orientation(orientation):
    p = Preprocess()
    img = photo(420, 300, seed=orientation)
    data = jpeg_bytes(img, exif=exif_with_orientation(orientation))
    with _gpu_decoder(p) as dec:
        out, errors = _decode_gpu(dec, [data])
    assert errors == [None]
    _assert_close_to_cpu_decoder(out[0], cpu_row(data, p), p)


@pytest.mark.gpu
def test_gpu_grayscale_jpeg_is_read_as_three_equal_channels():
    p = Preprocess()
    data = encode(Image.fromarray(photo(330, 260, seed=8)).convert("L"), "JPEG", quality=90)
    with _gpu_decoder(p) as dec:
        out, errors = _decode_gpu(dec, [data])
    assert errors == [None]
    _assert_close_to_cpu_decoder(out[0], cpu_row(data, p), p)


@pytest.mark.gpu
def test_gpu_bad_and_odd_items_give_exactly_cpu_decoders_results():
    p = Preprocess()
    good = jpeg_bytes(photo(400, 300, seed=1))
    rgba = Image.fromarray(photo(200, 160, seed=2)).convert("RGBA")
    items = [
        None, b"", good[: len(good) // 2], good[:16],
        np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes(),  # garbage
        b"\xff\xd8\xff" + b"\x00" * 200 + b"\xff\xd9",  # looks complete, is not a JPEG
        encode(Image.fromarray(photo(300, 200, seed=3)), "PNG"), encode(rgba, "PNG"),
        encode(Image.fromarray(photo(300, 200, seed=4)).convert("CMYK"), "JPEG"),
        encode(Image.fromarray(photo(260, 200, seed=5)), "WEBP"),
        np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 2), np.uint8), np.zeros((0, 5, 3), np.uint8),
        "not an image", good,
    ]
    with _gpu_decoder(p) as dec:
        out, errors = _decode_gpu(dec, items, fill=5.0)
        hardware = dec._hardware is not None  # `good`, the one clean JPEG, then went to the hardware decoder
        counts = dict(dec.decoded_by)
    assert counts == {"hardware": int(hardware), "nvimgcodec": int(not hardware), "tensor": 0, "cpu": len(items) - 1}
    cpu, cpu_errors = CpuDecoder(p).decode(items)
    assert errors == cpu_errors
    assert errors[-1] is None and errors[0] == "missing image (null value)"
    for i, error in enumerate(errors[:-1]):
        if error is not None:
            assert (out[i] == 0).all(), i
        else:  # taken by the CPU fallback: CpuDecoder's row, bit for bit
            np.testing.assert_array_equal(out[i], cpu[i], err_msg=f"item {i}")
    _assert_close_to_cpu_decoder(out[-1], cpu[-1], p, hardware=hardware)


@pytest.mark.gpu
def test_gpu_rows_past_the_items_are_not_touched_and_the_decoder_is_reusable():
    import cupy

    p = Preprocess(resize_shorter=160, crop=128)
    stream = cupy.cuda.Stream(non_blocking=True)
    with _gpu_decoder(p, stream=stream, threads=2) as dec:
        for batch, size in enumerate([(400, 300), (120, 90), (640, 480)]):
            items = [jpeg_bytes(photo(*size, seed=s)) for s in range(3 + batch)] + [photo(*size, seed=99)]
            out, errors = _decode_gpu(dec, items, extra_rows=5, fill=3.0)
            assert errors == [None] * len(items)
            assert (out[len(items):] == 3.0).all()
            cpu, _ = CpuDecoder(p).decode(items)
            taken = _hardware_taken(dec, items)
            for i in range(len(items)):
                _assert_close_to_cpu_decoder(out[i], cpu[i], p, hardware=i in taken)


@pytest.mark.gpu
def test_gpu_decoder_checks_out():
    import cupy

    p = Preprocess(resize_shorter=40, crop=32)
    with _gpu_decoder(p) as dec:
        with pytest.raises(TypeError, match="CuPy array"):
            dec.decode_into([None], np.zeros((1,) + p.output_shape, np.float32))
        with pytest.raises(ValueError, match="shape"):
            dec.decode_into([None, None], cupy.zeros((1,) + p.output_shape, np.float32))
        with pytest.raises(ValueError, match="dtype"):
            dec.decode_into([None], cupy.zeros((1,) + p.output_shape, np.float16))
        with pytest.raises(ValueError, match="C-contiguous"):
            dec.decode_into([None], cupy.zeros((1, 32, 32, 3), np.float32).transpose(0, 3, 1, 2))
        assert dec.decode_into([], cupy.zeros((1,) + p.output_shape, np.float32)) == []


@pytest.mark.gpu
def test_gpu_throughput_on_photo_sized_jpegs():
    """Prints images/s for 500x375 JPEGs (target > 20,000/s on an H100); asserts only a loose floor."""
    p = Preprocess()
    base = [jpeg_bytes(photo(500, 375, seed=s), quality=85) for s in range(64)]
    items = base * 4  # batches of 256
    with _gpu_decoder(p, threads=8) as dec:
        import cupy

        out = cupy.empty((len(items),) + p.output_shape, np.float32)
        dec.decode_into(items, out)  # warm-up: kernel compile, nvJPEG buffers
        rounds = 8
        start = time.perf_counter()
        for _ in range(rounds):
            errors = dec.decode_into(items, out)
        rate = rounds * len(items) / (time.perf_counter() - start)
    assert errors == [None] * len(items)
    print(f"\nGpuDecoder: {rate:,.0f} images/s (500x375 JPEG -> 3x224x224 float32, batch {len(items)})")
    assert rate > 1000, rate


@pytest.mark.gpu
def test_a_gpu_decoder_in_a_child_process_writes_the_shared_device_ring():
    import cupy

    from scoring.decode_processes import DecoderRecipe, ProcessDecoder, SharedBuffers

    p = SETTINGS["nhwc-fp16-bgr"]
    items = [jpeg_bytes(photo(w, h, seed=w)) for w, h in SIZES] + [b"\xff\xd8\xff broken", None]
    with _gpu_decoder(p) as dec:
        want, want_errors = _decode_gpu(dec, items)
    shared = SharedBuffers.on_device()
    try:
        slots = [shared.allocate((len(items) + 2,) + p.output_shape, p.np_dtype) for _ in range(2)]
        slots[1][...] = 5  # stale rows beyond the batch stay as they are
        with ProcessDecoder(DecoderRecipe("gpu", p, threads=2, device_id=cupy.cuda.Device().id)) as child:
            child.attach(shared)
            errors = child.decode_into(items, slots[1])
        got = cupy.asnumpy(slots[1])
    finally:
        shared.close()
    assert errors == want_errors and errors[-1] is not None and errors[-2] is not None
    np.testing.assert_allclose(got[:len(items)].astype(np.float32), want.astype(np.float32), rtol=0, atol=1e-6)
    assert (got[len(items):] == 5).all()


@pytest.mark.gpu
def test_the_decoder_stream_outranks_the_models():
    import cupy

    with _gpu_decoder(Preprocess()) as dec:
        assert dec.stream.priority < cupy.cuda.Stream(non_blocking=True).priority


@pytest.mark.gpu
def test_the_hardware_decoder_takes_the_baseline_jpegs_close_to_cpu_decoder(tmp_path):
    import pyarrow.parquet as pq

    from scoring.make_data import make_dataset

    made = make_dataset(tmp_path / "d.parquet", 64, row_groups=1, column_kind="binary", grayscale=0.2,
                        exif_rotated=0.2, workers=1)
    items = pq.read_table(made.files[0]).column("image").to_pylist()
    p = Preprocess()
    with _gpu_decoder(p) as dec:
        if dec._hardware is None:
            pytest.skip("this GPU has no hardware JPEG decoder (or libnvjpeg is missing)")
        out, errors = _decode_gpu(dec, items)
        taken = set(dec.route(items).hardware.rows.tolist())
        assert 0 < len(taken) < len(items) and dec.hardware_images == len(taken)  # grey, rotated: nvImageCodec
    cpu, cpu_errors = CpuDecoder(p).decode(items)
    assert errors == cpu_errors == [None] * len(items)
    for i in range(len(items)):
        _assert_close_to_cpu_decoder(out[i], cpu[i], p, hardware=i in taken)


@pytest.mark.gpu
def test_a_route_made_ahead_and_arrow_rows_give_the_rows_of_a_list():
    import pyarrow as pa

    from scoring.encoded_items import EncodedItems

    p = SETTINGS["default"]
    good = [jpeg_bytes(photo(w, h, seed=w)) for w, h in SIZES[:4] if min(w, h) >= 16]
    blobs = good[:2] + [jpeg_bytes(photo(300, 200), progressive=True), None, b"junk",
                        encode(Image.fromarray(photo(50, 40)), "PNG")] + good[2:]
    arrow = EncodedItems.from_arrow(pa.array(blobs, pa.binary()))
    k = len(good)
    with _gpu_decoder(p) as dec, _gpu_decoder(p, jpeg_hardware=False) as plain:
        route = dec.route(arrow)
        assert route.items == len(blobs) and route.cpu == [3, 4, 5] and route.arrays == []
        if dec._hardware is not None:
            assert route.hardware.rows.tolist() == [0, 1] + list(range(6, 4 + k)) and route.jpegs == [2]
        else:
            assert len(route.hardware) == 0 and route.jpegs == [0, 1, 2] + list(range(6, 4 + k))
        ahead, errors_ahead = _decode_gpu(dec, arrow, route=route)
        from_list, errors_list = _decode_gpu(dec, blobs)
        np.testing.assert_array_equal(ahead, from_list)
        assert errors_ahead == errors_list
        by_plain, errors_plain = _decode_gpu(plain, arrow, route=route)  # hardware rows go to nvImageCodec
        assert plain.hardware_images == 0 and errors_plain == errors_list
    cpu, cpu_errors = CpuDecoder(p).decode(blobs)
    assert errors_list == cpu_errors
    for i in [0, 1, 2] + list(range(6, 4 + k)):
        _assert_close_to_cpu_decoder(by_plain[i], cpu[i], p)
        _assert_close_to_cpu_decoder(ahead[i], cpu[i], p, hardware=i in set(route.hardware.rows.tolist()))


@pytest.mark.gpu
def test_a_batch_the_hardware_refuses_goes_to_nvimagecodec(monkeypatch):
    from scoring.nvjpeg_hardware import HardwareDecodeError

    p = SETTINGS["default"]
    items = [jpeg_bytes(photo(w, h, seed=w)) for w, h in SIZES[:4]]
    with _gpu_decoder(p) as dec:
        if dec._hardware is None:
            pytest.skip("this GPU has no hardware JPEG decoder (or libnvjpeg is missing)")
        by_hardware, _ = _decode_gpu(dec, items)
        assert dec.hardware_images == 4

        def refuse(*args, **kwargs):
            raise HardwareDecodeError("refused for the test")

        monkeypatch.setattr(dec._hardware, "decode", refuse)
        got, errors = _decode_gpu(dec, items)
        assert errors == [None] * 4 and dec.hardware_images == 4 and len(dec._image_pool) >= 4
    for i in range(4):
        _assert_close_to_cpu_decoder(got[i], by_hardware[i], p, hardware=True)


@pytest.mark.gpu
@pytest.mark.parametrize("hardware", ["0", "1"])
def test_reused_buffers_give_each_batch_its_own_pixels(monkeypatch, hardware):
    # nvImageCodec's Images (hardware path off) or the hardware path's pooled buffer, and its
    # batched state re-initialized for a new batch size
    monkeypatch.setenv("BATCHSCORE_NVJPEG_HARDWARE", hardware)
    p = SETTINGS["default"]
    small = [jpeg_bytes(photo(w, h, seed=w)) for w, h in SIZES[:4] if min(w, h) >= 16]
    large = [jpeg_bytes(photo(1600, 1200, seed=k)) for k in range(4)]  # buffers must grow
    want = {}
    for name, items in (("small", small), ("large", large)):
        with _gpu_decoder(p) as fresh:  # a first batch: nothing to reuse
            want[name] = _decode_gpu(fresh, items)[0]
    with _gpu_decoder(p) as dec:
        for name in ("small", "large", "small", "large"):
            items = small if name == "small" else large
            got, errors = _decode_gpu(dec, items)
            assert errors == [None] * len(items)
            np.testing.assert_array_equal(got, want[name], err_msg=name)
        if hardware == "0":
            assert len(dec._image_pool) >= 4  # the later batches decoded into earlier batches' Images
        elif dec._hardware is not None:
            assert dec.hardware_images == 2 * (len(small) + len(large))


@pytest.mark.parametrize("value, flags", [(None, None), ("", None), ("interpolation", 32),
                                          ("memory_pools+interpolation", 34), ("none", 0)])
def test_nvjpeg_creation_flags_come_from_names(monkeypatch, value, flags):
    from scoring import nvjpeg_hardware as nh

    if value is None:
        monkeypatch.delenv("BATCHSCORE_NVJPEG_FLAGS", raising=False)
    else:
        monkeypatch.setenv("BATCHSCORE_NVJPEG_FLAGS", value)
    assert nh.creation_flags() == (nh.CREATE_FLAGS if flags is None else flags)


def test_an_unknown_nvjpeg_flag_is_named(monkeypatch):
    from scoring import nvjpeg_hardware as nh

    monkeypatch.setenv("BATCHSCORE_NVJPEG_FLAGS", "interpolation+fast")
    with pytest.raises(ValueError, match="unknown flag 'fast'"):
        nh.creation_flags()


def test_the_nvjpeg_image_rows_have_the_structs_layout():
    import ctypes

    from scoring import nvjpeg_hardware as nh

    assert nh._IMAGE_WORDS * 8 == ctypes.sizeof(nh._Image) == 64
    assert nh._Image.pitch.offset == 4 * 8  # decode() writes pitches at word 4


@pytest.mark.parametrize("value, padding", [(None, 0), ("", 0), ("16777216", 16777216)])
def test_nvjpeg_padding_comes_from_the_environment(monkeypatch, value, padding):
    from scoring import nvjpeg_hardware as nh

    if value is None:
        monkeypatch.delenv("BATCHSCORE_NVJPEG_PADDING", raising=False)
    else:
        monkeypatch.setenv("BATCHSCORE_NVJPEG_PADDING", value)
    assert nh.device_padding() == (nh.DEVICE_PADDING if not value else padding)


def test_a_padding_that_is_not_a_number_is_named(monkeypatch):
    from scoring import nvjpeg_hardware as nh

    monkeypatch.setenv("BATCHSCORE_NVJPEG_PADDING", "16MB")
    with pytest.raises(ValueError, match="BATCHSCORE_NVJPEG_PADDING must be a whole number of bytes, got '16MB'"):
        nh.device_padding()
