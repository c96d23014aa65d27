"""Convolutions: Conv and ConvTranspose over images with any number of spatial dimensions.

Layouts are ONNX's: X is (N, C, *spatial); W is (M, C/group, *kernel) for Conv and
(C, M/group, *kernel) for ConvTranspose.

Conv is im2col + GEMM. The batch is processed in chunks of images: a chunk is zero-padded into a
reused buffer (only when there is padding), unrolled into a reused column buffer laid out as
(C * prod(kernel), images, positions) with one copy from a strided window view, and multiplied by
the (M, C/group * prod(kernel)) weight matrix of each group in one np.matmul, so BLAS does the
arithmetic. Large images go one per chunk and the GEMM writes straight into the NCHW output; small
images are batched together so the GEMM still sees enough columns to run near peak. 1x1 stride-1
convolutions of large images need no copy at all; one image's column buffer stays under
_COLUMN_BUFFER_BYTES by unrolling large images a block of output rows at a time.

Groups, depthwise convolutions included, share that path: one np.matmul call multiplies every
group's (M/G, C/G * prod(kernel)) weights by its slice of the columns, looping over the groups in
C. For depthwise convolutions this measured 1.3-1.5x faster than accumulating over the kernel
offsets with broadcasting (3x3 kernels, 32 to 512 channels, stride 1 and 2, batch 8).

float32 and float64 are computed in their own precision; float16 and bfloat16 in float32, then
rounded back.

The window helpers at the top (attribute checks, auto_pad, output sizes) are shared with pool.py.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from kernels.cpu._registry import op
from kernels.registry import KernelError

# Images with at least this many output positions go through the GEMM one at a time, written
# straight into the output; smaller ones are gathered into chunks of about _GEMM_COLUMNS output
# positions (columns), enough for BLAS to reach its full speed, at the price of moving the image
# axis of the product out of the way afterwards. (Measured on ResNet-50 shapes.)
_SINGLE_IMAGE_POSITIONS = 512
_GEMM_COLUMNS = 2048
# The column buffer is kept under this size: chunks hold fewer images, and one large image is
# unrolled a block of output rows at a time.
_COLUMN_BUFFER_BYTES = 16 << 20
# 1x1 stride-1 convolutions use the input in place, one image at a time, down to this image size.
_IN_PLACE_POINTWISE_POSITIONS = 128


# --------------------------------------------------------------------------------------------
# Window geometry, shared by convolutions and pools


@dataclasses.dataclass(frozen=True)
class Window:
    """A sliding window over the spatial dimensions, attributes resolved to one int per axis."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def has_padding(self) -> bool:
        return any(self.pads_begin) or any(self.pads_end)

    def taps(self):
        """Every kernel offset, as a tuple of per-axis indices, in row-major order."""
        return itertools.product(*(range(k) for k in self.kernel))


def _per_axis(op_name: str, name: str, value, count: int, default: int, minimum: int) -> tuple[int, ...]:
    if value is None or len(value) == 0:
        return (default,) * count
    value = tuple(int(v) for v in value)
    if len(value) != count:
        raise KernelError(f"{op_name}: '{name}' has {len(value)} values, expected {count} for {count} spatial dims")
    if any(v < minimum for v in value):
        raise KernelError(f"{op_name}: '{name}' {list(value)} has a value below {minimum}")
    return value


def window_output_size(size: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int,
                       ceil_mode: bool = False) -> int:
    """Outputs along one axis; a ceil-mode window that would start inside the end padding is dropped."""
    room = size + pad_begin + pad_end - ((kernel - 1) * dilation + 1)
    if room < 0:
        return 0
    if not ceil_mode:
        return room // stride + 1
    out = -(-room // stride) + 1
    if (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


def make_window(op_name: str, spatial: tuple[int, ...], kernel, strides=None, dilations=None, pads=None,
                auto_pad: str = "NOTSET", ceil_mode: bool = False) -> Window:
    """Resolve and check the window attributes of a Conv or a pool over `spatial` input sizes.

    auto_pad SAME_UPPER / SAME_LOWER give ceil(size / stride) outputs, padding split evenly with the
    odd element at the end (UPPER) or the beginning (LOWER); VALID means no padding.
    """
    nd = len(spatial)
    kernel = _per_axis(op_name, "kernel_shape", kernel, nd, 1, 1)
    strides = _per_axis(op_name, "strides", strides, nd, 1, 1)
    dilations = _per_axis(op_name, "dilations", dilations, nd, 1, 1)
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else (auto_pad or "NOTSET")
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = tuple(-(-n // s) for n, s in zip(spatial, strides))
        totals = [max(0, (o - 1) * s + span - n) for o, s, span, n in zip(out, strides, spans, spatial)]
        small = [t // 2 for t in totals]
        large = [t - t // 2 for t in totals]
        begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        ceil_mode = False
    elif auto_pad == "VALID":
        begin = end = (0,) * nd
    elif auto_pad == "NOTSET":
        both = _per_axis(op_name, "pads", pads, 2 * nd, 0, 0)
        begin, end = both[:nd], both[nd:]
    else:
        raise KernelError(f"{op_name}: unknown auto_pad '{auto_pad}'")
    out = tuple(
        window_output_size(n, k, s, d, b, e, ceil_mode)
        for n, k, s, d, b, e in zip(spatial, kernel, strides, dilations, begin, end)
    )
    if any(o < 1 for o in out):
        raise KernelError(
            f"{op_name}: window {list(kernel)} (dilations {list(dilations)}, pads {list(begin) + list(end)}) "
            f"does not fit the input's spatial shape {list(spatial)}"
        )
    return Window(kernel, strides, dilations, tuple(begin), tuple(end), out)


def compute_dtype(dtype: np.dtype, op_name: str) -> np.dtype:
    """float32/float64 compute natively; narrower floats (float16, bfloat16, float8) in float32."""
    if dtype in (np.float32, np.float64):
        return dtype
    if dtype.kind == "f" or dtype.name.startswith(("bfloat16", "float8", "float4")):
        return np.dtype(np.float32)
    raise KernelError(f"{op_name}: element type {dtype} is not supported (floating point only)")


def _pad_into(buffer: np.ndarray, x: np.ndarray, window: Window) -> np.ndarray:
    """Copy x (images, C, *spatial) into the interior of a buffer whose border is already filled."""
    interior = tuple(slice(b, b + n) for b, n in zip(window.pads_begin, x.shape[2:]))
    buffer[(slice(None), slice(None)) + interior] = x
    return buffer


# --------------------------------------------------------------------------------------------
# Conv


@op("Conv", since=1)
def conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
         strides=None, out=None):
    """N-D convolution (cross-correlation) with groups, dilations, strides, pads and auto_pad.

    Versions 1, 11 and 22 differ only in documentation and types, so one kernel serves them all.
    `out` (not an ONNX attribute): an array of the result's shape and dtype to write the result
    into and return, as fused layers do with their output buffers; it must not overlap X.
    """
    _check_conv_inputs(x, w, b, group, kernel_shape)
    dtype = compute_dtype(x.dtype, "Conv")
    window = make_window("Conv", x.shape[2:], w.shape[2:], strides, dilations, pads, auto_pad)
    y_shape = (x.shape[0], w.shape[0]) + window.out_shape
    if out is not None and (out.shape != y_shape or out.dtype != x.dtype):
        raise KernelError(f"Conv: out is {out.dtype} {out.shape}, the result is {x.dtype} {y_shape}")
    dest = _destination(out, dtype, (y_shape[0], y_shape[1], math.prod(window.out_shape)))
    if x.shape[0]:
        bc = None if b is None else b.astype(dtype, copy=False)
        _conv_gemm(x.astype(dtype, copy=False), w.astype(dtype, copy=False), bc, window, group, dest)
    y = dest.reshape(y_shape)
    if out is None:
        return y.astype(x.dtype, copy=False)
    if not np.may_share_memory(y, out):
        np.copyto(out, y)
    return out


def _destination(out, dtype, shape) -> np.ndarray:
    """Where the GEMMs write: `out` seen as (N, M, positions) if that needs no copy, else a new array."""
    if out is not None and out.dtype == dtype:
        try:
            return out.reshape(shape, copy=False)
        except ValueError:  # e.g. a channel slice of a larger buffer with padded rows
            pass
    return np.empty(shape, dtype)


def _check_conv_inputs(x, w, b, group: int, kernel_shape) -> None:
    if x.ndim < 3:
        raise KernelError(f"Conv: X must be (N, C, spatial...), got shape {x.shape}")
    if w.ndim != x.ndim:
        raise KernelError(f"Conv: W has shape {w.shape}, expected rank {x.ndim} to match X {x.shape}")
    if group < 1 or x.shape[1] % group or w.shape[0] % group:
        raise KernelError(f"Conv: group={group} does not divide X's channels {x.shape[1]} and W's {w.shape[0]}")
    if w.shape[1] * group != x.shape[1]:
        raise KernelError(
            f"Conv: X {x.shape} has {x.shape[1]} channels but W {w.shape} expects {w.shape[1]} x group {group}"
        )
    if kernel_shape is not None and len(kernel_shape) and tuple(kernel_shape) != w.shape[2:]:
        raise KernelError(f"Conv: kernel_shape {list(kernel_shape)} does not match W's shape {w.shape}")
    if b is not None and b.shape != (w.shape[0],):
        raise KernelError(f"Conv: bias has shape {b.shape}, expected ({w.shape[0]},)")


def _images_per_chunk(images: int, positions: int, bytes_per_position: int) -> int:
    if positions >= _SINGLE_IMAGE_POSITIONS:
        return 1
    chunks = max(1, math.ceil(images * positions / _GEMM_COLUMNS))
    per_chunk = math.ceil(images / chunks)
    return max(1, min(per_chunk, _COLUMN_BUFFER_BYTES // (bytes_per_position * positions)))


def _conv_gemm(x, w, b, window: Window, group: int, y: np.ndarray) -> None:
    """im2col + one batched-over-groups GEMM per chunk of images, into y (N, M, positions)."""
    n_images, channels = x.shape[:2]
    m = w.shape[0]
    positions = math.prod(window.out_shape)
    wmat = w.reshape(group, m // group, -1)  # (G, M/G, C/G * prod(kernel))
    pointwise = all(k == 1 for k in window.kernel) and not window.has_padding
    k_total = channels * math.prod(window.kernel)
    per_chunk = _images_per_chunk(n_images, positions, k_total * x.dtype.itemsize)

    if pointwise and all(s == 1 for s in window.strides) and positions >= _IN_PLACE_POINTWISE_POSITIONS:
        # A 1x1 stride-1 conv is a GEMM on the input as it lies: no copy.
        for n in range(n_images):
            np.matmul(wmat, x[n].reshape(group, channels // group, positions),
                      out=y[n].reshape(group, m // group, positions))
            if b is not None:
                y[n] += b[:, None]
        return

    blocks = _row_blocks(window, k_total * x.dtype.itemsize) if per_chunk == 1 else [(0, window.out_shape[0])]
    row_positions = positions // window.out_shape[0]
    padded_shape = tuple(b0 + n + e for b0, n, e in zip(window.pads_begin, x.shape[2:], window.pads_end))
    padded = None  # reused across chunks of the same size
    columns = np.empty(k_total * max(per_chunk * (r1 - r0) * row_positions for r0, r1 in blocks), x.dtype)
    for n0 in range(0, n_images, per_chunk):
        chunk = x[n0:n0 + per_chunk]
        count = chunk.shape[0]
        source = chunk
        if window.has_padding:
            if padded is None or padded.shape[0] != count:
                padded = np.zeros((count, channels) + padded_shape, x.dtype)
            source = _pad_into(padded, chunk, window)
        for r0, r1 in blocks:
            n_cols = count * (r1 - r0) * row_positions
            cols = columns[:k_total * n_cols].reshape(k_total, n_cols)
            _unroll(*_row_block(source, window, r0, r1), cols)
            cols_g = cols.reshape(group, -1, n_cols)
            if count == 1:
                # Write the GEMM straight into this block of the output (a strided view is fine).
                out = y[n0][:, r0 * row_positions:r1 * row_positions]
                np.matmul(wmat, cols_g, out=out.reshape(wmat.shape[0], wmat.shape[1], n_cols))
                if b is not None:
                    out += b[:, None]
            else:
                # The GEMM gives (M, images, positions); move the image axis out while adding the bias.
                product = np.matmul(wmat, cols_g).reshape(m, count, positions).transpose(1, 0, 2)
                if b is None:
                    y[n0:n0 + count] = product
                else:
                    np.add(product, b[:, None], out=y[n0:n0 + count])


def _row_blocks(window: Window, bytes_per_position: int) -> list[tuple[int, int]]:
    """Split one image's outputs along its first spatial axis so the column buffer stays near
    _COLUMN_BUFFER_BYTES (large images, as in VGG, would otherwise unroll into 100+ MB)."""
    rows = window.out_shape[0]
    row_bytes = bytes_per_position * (math.prod(window.out_shape) // rows)
    per_block = max(1, _COLUMN_BUFFER_BYTES // row_bytes)
    if per_block >= rows:
        return [(0, rows)]
    count = math.ceil(rows / per_block)
    per_block = math.ceil(rows / count)  # even blocks
    return [(r, min(rows, r + per_block)) for r in range(0, rows, per_block)]


def _row_block(source: np.ndarray, window: Window, r0: int, r1: int) -> tuple[np.ndarray, Window]:
    """The input rows and the window that produce output rows [r0, r1) along the first spatial axis."""
    if (r0, r1) == (0, window.out_shape[0]):
        return source, window
    s, span = window.strides[0], (window.kernel[0] - 1) * window.dilations[0] + 1
    rows = source[:, :, r0 * s:(r1 - 1) * s + span]
    return rows, dataclasses.replace(window, out_shape=(r1 - r0,) + window.out_shape[1:])


def _unroll(source: np.ndarray, window: Window, cols: np.ndarray) -> None:
    """im2col: cols[(c, *tap), (image, *output)] = source[image, c, output * stride + tap * dilation].

    One copy from a strided view that presents every window of source in the column layout
    (measured 10-40% faster than one slice copy per kernel offset).
    """
    count, channels = source.shape[:2]
    image_stride, channel_stride = source.strides[:2]
    spatial_strides = source.strides[2:]
    shape = (channels,) + window.kernel + (count,) + window.out_shape
    strides = ((channel_stride,) + tuple(st * d for st, d in zip(spatial_strides, window.dilations))
               + (image_stride,) + tuple(st * s for st, s in zip(spatial_strides, window.strides)))
    windows = np.lib.stride_tricks.as_strided(source, shape, strides, writeable=False)
    np.copyto(cols.reshape(shape), windows)


# --------------------------------------------------------------------------------------------
# ConvTranspose


@op("ConvTranspose", since=1)
def conv_transpose(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                   output_padding=None, output_shape=None, pads=None, strides=None):
    """N-D transposed convolution: one GEMM (W^T @ X per group) then col2im, a strided add per tap.

    Output size per axis: stride * (in - 1) + output_padding + (kernel - 1) * dilation + 1 minus the
    pads. Given output_shape (or auto_pad SAME_*, which asks for in * stride), the pads are derived
    from it: total = full - output_shape, split with the odd element at the end for SAME_UPPER and
    at the beginning otherwise. A negative total extends the output with zeros (plus bias).
    That split is opset 11's; opset 1's text had it the other way round, which onnxruntime never
    followed, so one kernel serves every version.
    """
    _check_conv_transpose_inputs(x, w, b, group, kernel_shape)
    dtype = compute_dtype(x.dtype, "ConvTranspose")
    spatial = x.shape[2:]
    nd = len(spatial)
    kernel = w.shape[2:]
    strides = _per_axis("ConvTranspose", "strides", strides, nd, 1, 1)
    dilations = _per_axis("ConvTranspose", "dilations", dilations, nd, 1, 1)
    extra = _per_axis("ConvTranspose", "output_padding", output_padding, nd, 0, 0)
    full = tuple(s * (n - 1) + e + (k - 1) * d + 1 for s, n, e, k, d in zip(strides, spatial, extra, kernel, dilations))
    begin, end = _conv_transpose_pads(spatial, full, strides, pads, auto_pad, output_shape)
    out_shape = tuple(f - pb - pe for f, pb, pe in zip(full, begin, end))
    if any(o < 1 for o in out_shape):
        raise KernelError(f"ConvTranspose: pads {list(begin) + list(end)} leave no output from full size {list(full)}")

    n_images, channels = x.shape[:2]
    m = w.shape[1] * group
    xc = x.astype(dtype, copy=False).reshape(n_images, group, channels // group, -1)
    # (G, C/G, M/G * taps) -> (G, M/G * taps, C/G): each group's columns are W_g^T @ X_g.
    wt = w.astype(dtype, copy=False).reshape(group, channels // group, -1).transpose(0, 2, 1)
    cols = np.matmul(wt, xc).reshape((n_images, m) + kernel + spatial)

    # Scatter-add every tap into a canvas that holds the full output plus any negative padding.
    lead = tuple(max(0, -pb) for pb in begin)
    canvas_shape = tuple(l + max(f, pb + o) for l, f, pb, o in zip(lead, full, begin, out_shape))
    canvas = np.zeros((n_images, m) + canvas_shape, dtype)
    for tap in itertools.product(*(range(k) for k in kernel)):
        dest = tuple(slice(l + t * d, l + t * d + s * (n - 1) + 1, s)
                     for l, t, d, s, n in zip(lead, tap, dilations, strides, spatial))
        canvas[(slice(None), slice(None)) + dest] += cols[(slice(None), slice(None)) + tap]
    crop = tuple(slice(l + pb, l + pb + o) for l, pb, o in zip(lead, begin, out_shape))
    y = canvas[(slice(None), slice(None)) + crop]
    if b is not None:
        y = y + b.astype(dtype, copy=False).reshape((1, m) + (1,) * nd)
    return np.ascontiguousarray(y).astype(x.dtype, copy=False)


def _check_conv_transpose_inputs(x, w, b, group: int, kernel_shape) -> None:
    if x.ndim < 3:
        raise KernelError(f"ConvTranspose: X must be (N, C, spatial...), got shape {x.shape}")
    if w.ndim != x.ndim:
        raise KernelError(f"ConvTranspose: W has shape {w.shape}, expected rank {x.ndim} to match X {x.shape}")
    if group < 1 or x.shape[1] % group:
        raise KernelError(f"ConvTranspose: group={group} does not divide X's {x.shape[1]} channels")
    if w.shape[0] != x.shape[1]:
        raise KernelError(f"ConvTranspose: X {x.shape} has {x.shape[1]} channels but W {w.shape} expects {w.shape[0]}")
    if kernel_shape is not None and len(kernel_shape) and tuple(kernel_shape) != w.shape[2:]:
        raise KernelError(f"ConvTranspose: kernel_shape {list(kernel_shape)} does not match W's shape {w.shape}")
    if b is not None and b.shape != (w.shape[1] * group,):
        raise KernelError(f"ConvTranspose: bias has shape {b.shape}, expected ({w.shape[1] * group},)")


def _conv_transpose_pads(spatial, full, strides, pads, auto_pad, output_shape):
    nd = len(spatial)
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else (auto_pad or "NOTSET")
    if auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise KernelError(f"ConvTranspose: unknown auto_pad '{auto_pad}'")
    target = None
    if output_shape is not None and len(output_shape):
        target = tuple(int(v) for v in output_shape)[-nd:]  # some exporters include N and C
        if len(target) != nd:
            raise KernelError(f"ConvTranspose: output_shape {list(output_shape)} has fewer than {nd} spatial dims")
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = tuple(n * s for n, s in zip(spatial, strides))
    if target is None:
        if auto_pad == "VALID":
            return (0,) * nd, (0,) * nd
        both = _per_axis("ConvTranspose", "pads", pads, 2 * nd, 0, 0)
        return both[:nd], both[nd:]
    totals = [f - t for f, t in zip(full, target)]
    small = tuple(t // 2 for t in totals)
    large = tuple(t - t // 2 for t in totals)
    return (small, large) if auto_pad == "SAME_UPPER" else (large, small)
