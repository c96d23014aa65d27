"""The part of each source image that the preprocessing kernels read: the taps of the crop's first
and last rows and columns, with a margin, aligned to JPEG blocks. nvjpeg_batched_probe.py's "roi"
output asks the hardware JPEG decoder for that region only (nvjpegDecodeBatchedEx, a region per
image); the kernels could read it through a base pointer moved back by the region's offset.

Why a margin: nvJPEG's interpolated chroma upsampling reads chroma samples from the neighbouring
block, and a region's edge may be treated as the image's edge; MARGIN pixels beyond the last tap,
then ALIGN-aligned, keep every pixel the kernels read as far inside the region as that.

Not in the worker: on an H100 (session 19, call 3) the regions held 74% of the pixels and their
pixels were identical to the whole images', but three decoders beside ResNet-50 decoded 40,000-41,100
images/s either way and the model kept the same rate (benchmarks/results/scoring/
h100_2026-11-22_s19/NOTES.md): the hardware decoder's time is not in the pixels it writes.

    x0, y0, w, h = source_windows(widths, heights, preprocess)   # int64 arrays, one per image
"""

from __future__ import annotations

import numpy as np

from scoring.decode import Preprocess
from scoring.resize_kernel import axis_taps, batch_geometry

MARGIN = 8  # pixels beyond the outermost taps
ALIGN = 16  # a 4:2:0 JPEG's MCU: regions start and end on MCU boundaries (or the image's edge)


def _axis_window(size: np.ndarray, resized: np.ndarray, offset: np.ndarray, crop: int, margin: int, align: int):
    first = np.maximum(offset, 0)  # the crop's positions inside the resized image (the rest is padding)
    last = np.minimum(offset + crop, resized) - 1
    _, lo, _, _ = axis_taps(size, resized, first)  # both ends are monotonic in position
    _, _, hi, _ = axis_taps(size, resized, last)
    start = np.maximum(lo - margin, 0) // align * align
    end = np.minimum(-(-(hi + margin) // align) * align, size)
    empty = last < first  # the crop misses the image: nothing is read, so any small region will do
    start = np.where(empty, 0, start)
    end = np.where(empty, np.minimum(size, align), end)
    return start, end - start


def source_windows(widths, heights, preprocess: Preprocess, margin: int = MARGIN, align: int = ALIGN):
    """(x0, y0, width, height) int64 arrays: the region of each image (widths x heights, resized and
    center-cropped as `preprocess` says) that holds every pixel the kernels read, with `margin`
    pixels more on each side, its edges on multiples of `align` or the image's own edges."""
    w = np.asarray(widths, np.int64)
    h = np.asarray(heights, np.int64)
    if len(w) and (w.min() < 1 or h.min() < 1):
        raise ValueError("source_windows: every image needs a width and height of at least 1")
    rw, rh, ox, oy = batch_geometry(w, h, preprocess)
    x0, ww = _axis_window(w, rw, ox, preprocess.crop, margin, align)
    y0, wh = _axis_window(h, rh, oy, preprocess.crop, margin, align)
    return x0, y0, ww, wh
