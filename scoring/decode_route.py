"""Where each item of a batch goes on the GPU decode path (scoring.gpu_decode), decided on the host
before any GPU work: pure host work, so a reader thread can do it ahead of the decoder threads.

    route = route_batch(items, hardware=True, pixel_limit=2 * Image.MAX_IMAGE_PIXELS)
    route.hardware     HardwareRows: rows for the GPU's hardware JPEG decoder, with their JPEGs'
                       sizes, addresses and lengths (what nvJPEG's batched call takes)
    route.jpegs        rows for nvImageCodec: other complete JPEGs
    route.arrays       rows holding decoded HWC / HW uint8 arrays, uploaded as they are
    route.cpu          everything else: Pillow (PNG, WebP, truncated or broken bytes, None, ...)

`items` is EncodedItems (a dataset's batch: rows sorted in numpy, no Python per JPEG row) or a list
of bytes-like objects, arrays and None; a list's bytes are packed into one EncodedItems first, so
both kinds are sorted by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scoring.encoded_items import EncodedItems
from scoring.jpeg_header_batch import complete_jpeg_rows, hardware_decodable_rows


@dataclass(frozen=True)
class HardwareRows:
    """Batch rows for the hardware decoder and their JPEGs' (height, width), addresses and lengths
    (uint64; valid while `owner`, which holds the bytes, lives)."""

    rows: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    pointers: np.ndarray
    lengths: np.ndarray
    owner: object = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class BatchRoute:
    items: int
    hardware: HardwareRows
    jpegs: list[int]
    arrays: list[int]
    cpu: list[int]


def array_shape(item: np.ndarray):
    """(height, width, channels) of an array CpuDecoder would accept, else None (CPU gives the message)."""
    if item.dtype != np.uint8:
        return None
    if item.ndim == 2:
        channels = 1
    elif item.ndim == 3 and item.shape[2] in (1, 3, 4):
        channels = item.shape[2]
    else:
        return None
    height, width = item.shape[:2]
    if height == 0 or width == 0:
        return None
    return height, width, channels


def route_batch(items, hardware: bool, pixel_limit: int | None) -> BatchRoute:
    """Sort a batch's rows. ``hardware``: whether a hardware decoder is there to take JPEGs;
    ``pixel_limit``: JPEGs with more pixels go to the CPU path, which gives Pillow's message."""
    if isinstance(items, EncodedItems):
        return _route_encoded(items, np.arange(len(items)), [], [], len(items), hardware, pixel_limit)
    encoded_rows, arrays, cpu = [], [], []
    for i, item in enumerate(items):
        if isinstance(item, (bytes, bytearray, memoryview)):
            encoded_rows.append(i)
        elif isinstance(item, np.ndarray) and array_shape(item) is not None:
            arrays.append(i)
        else:
            cpu.append(i)
    packed = EncodedItems.from_list([items[i] for i in encoded_rows])
    return _route_encoded(packed, np.array(encoded_rows, np.int64), arrays, cpu, len(items), hardware, pixel_limit)


def _route_encoded(items: EncodedItems, rows: np.ndarray, arrays: list[int], cpu: list[int], n: int,
                   hardware: bool, pixel_limit: int | None) -> BatchRoute:
    """Route the encoded rows `items`, which are batch rows `rows`; arrays and cpu: rows already sorted."""
    jpeg = items.valid & complete_jpeg_rows(items.data, items.starts, items.ends)
    taken = np.zeros(len(items), bool)
    heights, widths = np.zeros(len(items), np.int64), np.zeros(len(items), np.int64)
    if hardware and jpeg.any():
        at = np.flatnonzero(jpeg)
        decodable, heights[at], widths[at] = hardware_decodable_rows(items.data, items.starts[at], items.ends[at])
        if pixel_limit is not None:
            decodable &= heights[at] * widths[at] <= pixel_limit
        taken[at] = decodable
    chosen = np.flatnonzero(taken)
    route_hardware = HardwareRows(rows[chosen], heights[chosen], widths[chosen], items.pointers()[chosen],
                                  items.lengths()[chosen].astype(np.uint64), owner=items)
    cpu = sorted(cpu + rows[~jpeg].tolist())
    return BatchRoute(n, route_hardware, rows[jpeg & ~taken].tolist(), arrays, cpu)
