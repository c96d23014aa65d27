"""scoring/decode_route.py: which way each row of a batch goes on the GPU decode path."""

from __future__ import annotations

import ctypes

import numpy as np
import pyarrow as pa
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from scoring.decode_route import array_shape, route_batch  # noqa: E402
from scoring.encoded_items import EncodedItems  # noqa: E402
from tests.scoring.test_decode import encode, exif_with_orientation, photo  # noqa: E402


def _jpeg(width=120, height=90, **kw) -> bytes:
    return encode(Image.fromarray(photo(width, height, seed=width)), "JPEG", quality=90, **kw)


def _batch():
    return [_jpeg(), _jpeg(progressive=True), photo(30, 20), None, b"junk",
            _jpeg(exif=exif_with_orientation(8)), bytearray(_jpeg(300, 200)), memoryview(_jpeg(64, 48)),
            encode(Image.fromarray(photo(40, 30)), "PNG"), np.zeros((4, 4), np.float32)]


def test_a_list_is_sorted_into_hardware_nvimagecodec_arrays_and_cpu_rows():
    items = _batch()
    route = route_batch(items, hardware=True, pixel_limit=300 * 200 - 1)
    assert route.items == len(items)
    assert route.hardware.rows.tolist() == [0, 7]  # upright baseline colour JPEGs within the limit
    assert route.hardware.heights.tolist() == [90, 48] and route.hardware.widths.tolist() == [120, 64]
    assert route.jpegs == [1, 5, 6]  # progressive, rotated, over the pixel limit: nvImageCodec
    assert route.arrays == [2] and route.cpu == [3, 4, 8, 9]
    for row, pointer, length in zip(route.hardware.rows, route.hardware.pointers, route.hardware.lengths):
        assert ctypes.string_at(int(pointer), int(length)) == bytes(items[row])


def test_without_a_hardware_decoder_every_complete_jpeg_goes_to_nvimagecodec():
    route = route_batch(_batch(), hardware=False, pixel_limit=None)
    assert len(route.hardware) == 0 and route.jpegs == [0, 1, 5, 6, 7]


def test_arrow_rows_are_routed_as_the_same_rows_in_a_list():
    blobs = [item if item is None or isinstance(item, bytes) else bytes(item)
             for item in _batch() if not isinstance(item, np.ndarray)]
    from_list = route_batch(blobs, hardware=True, pixel_limit=None)
    from_arrow = route_batch(EncodedItems.from_arrow(pa.array(blobs, pa.binary())), hardware=True, pixel_limit=None)
    assert from_arrow.hardware.rows.tolist() == from_list.hardware.rows.tolist() == [0, 5, 6]
    assert (from_arrow.jpegs, from_arrow.cpu) == (from_list.jpegs, from_list.cpu) == ([1, 4], [2, 3, 7])


def test_arrays_the_cpu_decoder_would_refuse_go_to_it_for_its_message():
    assert array_shape(np.zeros((5, 6), np.uint8)) == (5, 6, 1)
    assert array_shape(np.zeros((5, 6, 4), np.uint8)) == (5, 6, 4)
    assert array_shape(np.zeros((5, 6, 2), np.uint8)) is None
    assert array_shape(np.zeros((0, 6, 3), np.uint8)) is None
    assert array_shape(np.zeros((5, 6, 3), np.int16)) is None


def test_batches_without_encoded_rows_and_empty_batches_route():
    route = route_batch([np.zeros((4, 4, 3), np.uint8), None], hardware=True, pixel_limit=None)
    assert (route.arrays, route.cpu, route.jpegs, len(route.hardware)) == ([0], [1], [], 0)
    empty = route_batch(EncodedItems.from_list([]), hardware=True, pixel_limit=None)
    assert (empty.items, empty.cpu, empty.jpegs, len(empty.hardware)) == (0, [], [], 0)
