"""Images -> model input rows: decode (Pillow), EXIF orientation, resize the shorter side, center crop,
/255, mean/std, layout and dtype, written straight into the caller's batch buffer.

The geometry and the numbers match torchvision's classic ImageNet recipe on PIL images,
``Resize(256) + CenterCrop(224) + ToTensor() + Normalize(mean, std)``:

- the shorter side becomes ``resize_shorter`` and the longer ``int(resize_shorter * long / short)``;
  Pillow's antialiased bilinear filter (``Image.resize(size, BILINEAR)``, reducing_gap None) does the
  resize, as torchvision's PIL backend does;
- the crop offsets are ``int(round((size - crop) / 2.0))``; a crop larger than the resized image pads
  with zeros first, as torchvision's ``center_crop`` does;
- each value is ``(float32(x) / 255 - mean[c]) / std[c]`` computed in float32 in that order, so float32
  rows are bit-identical to torchvision's; float16 rows are those values rounded once.

One deliberate difference: a JPEG much larger than the target is decoded at a reduced scale
(libjpeg's DCT scaling through ``Image.draft``, 1/2, 1/4 or 1/8), but only down to at least twice
the resize target, where the bilinear resize still averages over several source pixels and the
result stays within the resize's own accuracy. ``CpuDecoder(..., jpeg_draft=False)`` turns it off.

Bad images never raise: ``decode_into`` returns one short message per failed item (and zero-fills
its row) so the caller can write an error row and carry on.
"""

from __future__ import annotations

import io
import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from engine.errors import BatchscoreError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_LAYOUTS = ("NCHW", "NHWC")
_DTYPES = ("float32", "float16")
_CHANNEL_ORDERS = ("RGB", "BGR")

# A JPEG is decoded at a reduced DCT scale only while its shorter side stays >= this many times the
# resize target: the bilinear filter then still averages >= 2 source pixels per output pixel.
_DRAFT_MARGIN = 2


class PreprocessError(BatchscoreError, ValueError):
    """A [preprocess] setting that cannot describe a model input."""


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes one model input row.

    mean and std are per *output* channel, in ``channel_order`` (for a BGR model, give them in BGR).
    """

    resize_shorter: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    layout: str = "NCHW"
    dtype: str = "float32"
    channel_order: str = "RGB"

    def __post_init__(self):
        for key in ("resize_shorter", "crop"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise PreprocessError(f"[preprocess] {key} must be a positive integer, got {value!r}")
            object.__setattr__(self, key, int(value))
        for key in ("mean", "std"):
            value = getattr(self, key)
            try:
                numbers = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                numbers = ()
            if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
                raise PreprocessError(f"[preprocess] {key} must be a list of 3 numbers (one per channel), got {value!r}")
            if key == "std" and any(v == 0 for v in numbers):
                raise PreprocessError(f"[preprocess] std must not contain 0, got {value!r}")
            object.__setattr__(self, key, numbers)
        for key, allowed in (("layout", _LAYOUTS), ("dtype", _DTYPES), ("channel_order", _CHANNEL_ORDERS)):
            value = getattr(self, key)
            if value not in allowed:
                raise PreprocessError(f"[preprocess] {key} must be one of {', '.join(map(repr, allowed))}, got {value!r}")

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Shape of one row: (3, crop, crop) for NCHW, (crop, crop, 3) for NHWC."""
        c = self.crop
        return (3, c, c) if self.layout == "NCHW" else (c, c, 3)

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(width, height) after torchvision's Resize(shorter) on an image of width x height."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def center_crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """torchvision's center_crop as (pad_left, pad_top, left, top) on a width x height image.

    When the crop is larger than the image, torchvision pads with zeros (left/top get the floor of
    half the shortfall); left/top are then offsets into the padded image.
    """
    pad_left = (crop - width) // 2 if crop > width else 0
    pad_top = (crop - height) // 2 if crop > height else 0
    padded_w = max(width, crop)
    padded_h = max(height, crop)
    left = int(round((padded_w - crop) / 2.0))
    top = int(round((padded_h - crop) / 2.0))
    return pad_left, pad_top, left, top


class CpuDecoder:
    """Decode and preprocess a batch of images into a caller-owned buffer with a thread pool.

    ``threads`` is the number of threads working on a batch (the calling thread is one of them);
    None or 0 means one per available core. Pillow releases the GIL while it decodes, converts and
    resizes, and numpy while it writes the rows, so the threads run in parallel.
    """

    def __init__(self, preprocess: Preprocess | None = None, threads: int | None = 1, *, jpeg_draft: bool = True):
        try:
            from PIL import Image  # noqa: F401
        except ImportError as exc:  # pragma: no cover - Pillow is a dependency
            raise BatchscoreError("CPU decoding needs Pillow: pip install pillow") from exc
        self.preprocess = preprocess if preprocess is not None else Preprocess()
        if threads is None or threads == 0:
            threads = available_cores()
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
            raise PreprocessError(f"decode threads must be a positive integer, got {threads!r}")
        self.threads = int(threads)
        self.jpeg_draft = bool(jpeg_draft)
        self._dtype = self.preprocess.np_dtype
        self._luts = _channel_luts(self.preprocess)
        self._flat_lut = np.ascontiguousarray(self._luts.reshape(-1))
        order = (0, 1, 2) if self.preprocess.channel_order == "RGB" else (2, 1, 0)
        self._order = order
        # NHWC index offsets: output channel c reads LUT row c (flat index c * 256 + value).
        self._nhwc_offsets = np.array([0, 256, 512], np.uint16)
        self._pool: ThreadPoolExecutor | None = None

    # ---- public -------------------------------------------------------------------------------
    def decode_into(self, items, out: np.ndarray) -> list[str | None]:
        """Write item i's row into ``out[i]``; return None or an error message per item.

        ``items`` holds encoded image bytes, HWC (or HW) uint8 arrays, or None (a missing image).
        Rows of failed items are zero-filled. Raises only for a wrong ``out`` (a programming error).
        """
        items = list(items)
        n = len(items)
        self._check_out(out, n)
        errors: list[str | None] = [None] * n
        if n == 0:
            return errors
        workers = min(self.threads, n)
        if workers <= 1:
            for i in range(n):
                errors[i] = self._process(items[i], out[i])
            return errors
        # Dynamic work sharing: every worker pulls the next index from one counter (next() on an
        # itertools.count is atomic under the GIL), so a slow image does not stall a fixed share.
        counter = itertools.count()

        def work():
            while True:
                i = next(counter)
                if i >= n:
                    return
                errors[i] = self._process(items[i], out[i])

        pool = self._executor()
        futures = [pool.submit(work) for _ in range(workers - 1)]
        work()
        for f in futures:
            f.result()
        return errors

    def decode(self, items) -> tuple[np.ndarray, list[str | None]]:
        """Convenience: allocate the batch, decode into it, return (batch, errors)."""
        items = list(items)
        out = np.empty((len(items),) + self.preprocess.output_shape, self._dtype)
        return out, self.decode_into(items, out)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- one item -----------------------------------------------------------------------------
    def _process(self, item, row: np.ndarray) -> str | None:
        try:
            if item is None:
                error = "missing image (null value)"
            elif isinstance(item, np.ndarray):
                error = self._from_array(item, row)
            elif isinstance(item, (bytes, bytearray, memoryview)):
                error = self._from_bytes(item, row)
            else:
                error = f"unsupported image item of type {type(item).__name__}"
        except Exception as exc:  # a bad image must never take the batch down
            error = _describe(exc, None)
        if error is not None:
            row[...] = 0
        return error

    def _from_bytes(self, data, row: np.ndarray) -> str | None:
        from PIL import Image, ImageOps

        if len(data) == 0:
            return "empty image data"
        fmt = None
        try:
            img = Image.open(io.BytesIO(data))
            fmt = img.format
            width, height = img.size
            if width == 0 or height == 0:
                return f"zero-size image ({width}x{height}, {fmt})"
            if self.jpeg_draft and fmt == "JPEG":
                self._draft(img)
            img.load()
            try:
                ImageOps.exif_transpose(img, in_place=True)
            except Exception:  # unreadable EXIF: keep the pixels as stored rather than lose the image
                pass
            img = _to_rgb_or_l(img)
            return self._resize_crop_write(img, row)
        except Exception as exc:
            return _describe(exc, fmt)

    def _draft(self, img) -> None:
        """Ask libjpeg for a 1/2, 1/4 or 1/8 scale decode that keeps >= 2x the resize target."""
        width, height = img.size
        short = min(width, height)
        need = _DRAFT_MARGIN * self.preprocess.resize_shorter
        if short < 2 * need:  # not even a 1/2 scale would keep enough pixels
            return
        factor = need / short
        img.draft(img.mode, (math.ceil(width * factor), math.ceil(height * factor)))

    def _from_array(self, arr: np.ndarray, row: np.ndarray) -> str | None:
        if arr.dtype != np.uint8:
            return f"decoded image must be uint8, got {arr.dtype}"
        if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
            channels = arr.shape[2]
        elif arr.ndim == 2:
            channels = 1
        else:
            return f"decoded image must be HWC with 1, 3 or 4 channels, got shape {arr.shape}"
        height, width = arr.shape[:2]
        if width == 0 or height == 0:
            return f"zero-size image ({width}x{height})"
        if channels == 1 and arr.ndim == 3:
            arr = arr[:, :, 0]
        elif channels == 4:
            arr = arr[:, :, :3]  # alpha dropped, as convert("RGB") does
        crop = self.preprocess.crop
        if height == crop and width == crop:  # already preprocessed to the model's size
            self._write(arr, row)
            return None
        from PIL import Image

        img = Image.fromarray(np.ascontiguousarray(arr), "L" if arr.ndim == 2 else "RGB")
        return self._resize_crop_write(img, row)

    def _resize_crop_write(self, img, row: np.ndarray) -> str | None:
        from PIL import Image

        p = self.preprocess
        width, height = img.size
        if width == 0 or height == 0:
            return f"zero-size image ({width}x{height})"
        size = resized_size(width, height, p.resize_shorter)
        if size != (width, height):
            img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
        arr = np.asarray(img)
        pad_left, pad_top, left, top = center_crop_box(size[0], size[1], p.crop)
        if pad_left or pad_top or size[0] < p.crop or size[1] < p.crop:
            padded = np.zeros((max(size[1], p.crop), max(size[0], p.crop)) + arr.shape[2:], np.uint8)
            padded[pad_top : pad_top + size[1], pad_left : pad_left + size[0]] = arr
            arr = padded
        self._write(arr[top : top + p.crop, left : left + p.crop], row)
        return None

    # ---- numbers ------------------------------------------------------------------------------
    def _write(self, pixels: np.ndarray, row: np.ndarray) -> None:
        """pixels: (crop, crop, 3) RGB or (crop, crop) gray uint8 -> normalized row, via the LUTs."""
        gray = pixels.ndim == 2
        if self.preprocess.layout == "NCHW":
            for c in range(3):
                src = pixels if gray else pixels[:, :, self._order[c]]
                np.take(self._luts[c], src, out=row[c], mode="clip")
            return
        # NHWC: one gather from the flat (3*256,) LUT with index = 256 * c + value.
        if gray:
            src = pixels[:, :, None]
        elif self._order != (0, 1, 2):
            src = pixels[:, :, list(self._order)]
        else:
            src = pixels
        index = np.add(src, self._nhwc_offsets, dtype=np.uint16)
        if row.flags.c_contiguous:
            np.take(self._flat_lut, index, out=row, mode="clip")
        else:
            row[...] = np.take(self._flat_lut, index, mode="clip")

    def _check_out(self, out, n: int) -> None:
        shape = self.preprocess.output_shape
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
        if out.ndim != 4 or tuple(out.shape[1:]) != shape or out.shape[0] < n:
            raise ValueError(f"out must have shape (>= {n},) + {shape}, got {out.shape}")
        if out.dtype != self._dtype:
            raise ValueError(f"out must have dtype {self._dtype}, got {out.dtype}")
        if not out.flags.writeable:
            raise ValueError("out must be writeable")

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads - 1, thread_name_prefix="decode")
        return self._pool


# ---- helpers ----------------------------------------------------------------------------------
def _channel_luts(p: Preprocess) -> np.ndarray:
    """(3, 256) table: row c maps a byte to (float32(v) / 255 - mean[c]) / std[c], in p.dtype.

    The float32 steps are those of torchvision's ToTensor + Normalize, in the same order.
    """
    values = np.arange(256, dtype=np.float32) / np.float32(255)
    rows = [(values - np.float32(p.mean[c])) / np.float32(p.std[c]) for c in range(3)]
    return np.stack(rows).astype(p.np_dtype)


def _to_rgb_or_l(img):
    """Grayscale stays one band (resized once, replicated into 3 channels by the LUT write: the same
    numbers as convert("RGB") first); everything else becomes RGB as convert("RGB") does (alpha
    dropped, palette expanded, CMYK converted)."""
    mode = img.mode
    if mode in ("RGB", "L"):
        return img
    if mode in ("1", "LA", "La"):
        return img.convert("L")
    return img.convert("RGB")


def _describe(exc: BaseException, fmt: str | None) -> str:
    """A short, stable message for a decoding failure (no object reprs, one line)."""
    from PIL import Image, UnidentifiedImageError

    where = f" ({fmt})" if fmt else ""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, UnidentifiedImageError):
        return "cannot identify image file"
    if isinstance(exc, Image.DecompressionBombError):
        return f"image too large to decode{where}: {text}"[:300]
    lowered = text.lower()
    if "truncated" in lowered or "broken data stream" in lowered or isinstance(exc, EOFError):
        return f"image file is truncated{where}"
    if isinstance(exc, MemoryError):
        return f"out of memory decoding image{where}"
    return f"cannot decode image{where}: {type(exc).__name__}: {text}"[:300]


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
