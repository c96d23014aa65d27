"""scoring/jpeg_header_batch.py: the numpy header reader gives the scalar reader's answers."""

from __future__ import annotations

import struct

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from scoring import jpeg_header_batch as jb  # noqa: E402
from scoring.encoded_items import EncodedItems  # noqa: E402
from scoring.jpeg_header import hardware_decodable, read_header  # noqa: E402
from tests.scoring.test_decode import encode, exif_with_orientation, photo  # noqa: E402


def _jpeg(width=120, height=90, mode="RGB", **kw) -> bytes:
    img = Image.fromarray(photo(width, height, seed=width + height))
    if mode != "RGB":
        img = img.convert(mode)
    return encode(img, "JPEG", quality=90, **kw)


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _adobe(transform: int) -> bytes:
    return _segment(0xEE, b"Adobe" + b"\x00\x64" + b"\x00\x00" * 2 + bytes([transform]))


def _variants() -> list[bytes]:
    base = _jpeg()
    made = [base, _jpeg(subsampling=0), _jpeg(subsampling=1), _jpeg(64, 300, subsampling=2),
            _jpeg(progressive=True), _jpeg(mode="L"), _jpeg(mode="CMYK"), _jpeg(8, 8), _jpeg(20000, 16),
            _jpeg(exif=exif_with_orientation(6)), _jpeg(exif=exif_with_orientation(1)),
            base[:2] + _adobe(0) + base[2:], base[:2] + _adobe(1) + base[2:],
            base[:2] + _segment(0xE2, b"ICC_PROFILE\x00" + bytes(3000)) + base[2:],
            base[:2] + b"\xff\xff\xff" + base[2:],  # fill bytes before a marker
            base[:2] + b"\xff\xd0" + base[2:],  # a standalone marker
            base[:2] + _segment(0xEC, b"x") * (jb.MAX_SEGMENTS + 3) + base[2:],  # more segments than the walk takes
            b"", b"\xff", b"\xff\xd8", b"\xff\xd8\xff\xda\x00\x02", b"GIF89a" + bytes(20),
            encode(Image.fromarray(photo(40, 30)), "PNG")]
    sof = base.index(b"\xff\xc0")
    made += [base[:cut] for cut in range(0, sof + 24)]  # truncated anywhere up to past the frame header
    exif = _exif_variants()
    made += exif
    rng = np.random.default_rng(0)
    for source in made[:14] + exif:
        for _ in range(40):  # one byte changed in the header region
            mutated = bytearray(source)
            at = int(rng.integers(0, min(len(source), 400)))
            mutated[at] = int(rng.integers(0, 256))
            made.append(bytes(mutated))
    return made


def test_the_batch_reader_decides_as_the_scalar_reader_on_every_variant():
    variants = _variants()
    items = EncodedItems.from_list(variants)
    decodable, heights, widths = jb.hardware_decodable_rows(items.data, items.starts, items.ends)
    assert 0 < decodable.sum() < len(variants)
    for i, data in enumerate(variants):
        header = read_header(data)
        assert decodable[i] == hardware_decodable(header), i
        if decodable[i]:
            assert (heights[i], widths[i]) == (header.height, header.width), i


def _exif(entries: list[tuple[int, int]], big_endian: bool = False, ifd: int = 8, count: int | None = None) -> bytes:
    """An APP1 EXIF segment whose IFD0 holds (tag, SHORT value) entries, in either byte order."""
    order = ">" if big_endian else "<"
    tiff = (b"MM" if big_endian else b"II") + struct.pack(order + "HI", 42, ifd) + bytes(ifd - 8)
    tiff += struct.pack(order + "H", len(entries) if count is None else count)
    for tag, value in entries:
        tiff += struct.pack(order + "HHI", tag, 3, 1) + struct.pack(order + "H", value) + b"\0\0"
    return _segment(0xE1, b"Exif\0\0" + tiff)


def _exif_variants() -> list[bytes]:
    base = _jpeg()
    other = [(0x010F, 1), (0x0110, 2), (0x011A, 72), (0x011B, 72)]  # make, model, resolutions
    segments = [_exif([(0x0112, 6)], big_endian=True), _exif([(0x0112, 1)], big_endian=True),
                _exif(other + [(0x0112, 3)]), _exif(other + [(0x0112, 1)], big_endian=True),
                _exif([]), _exif(other), _exif([(0x0112, 0)]), _exif([(0x0112, 8)], ifd=40),
                _exif([(0x0112, 6)], count=3),  # says 3 entries, holds one: the walk runs off the block
                _exif([(0x0112, 6)], ifd=8)[:-6],  # the entry cut short
                _exif([(0x0112, 6)]) + _exif(other),  # a second block without the tag keeps 6
                _exif([(0x0112, 6)]) + _exif([(0x0112, 1)]),  # the last one that has it wins
                _exif([(0x8000 + k, 1) for k in range(jb.MAX_EXIF_ENTRIES + 2)] + [(0x0112, 6)]),
                _segment(0xE1, b"Exif\0\0XX" + bytes(20)), _segment(0xE1, b"Exif\0\0II")]
    return [base[:2] + segment + base[2:] for segment in segments]


def test_exif_orientations_are_read_as_the_scalar_reader_reads_them():
    variants = _exif_variants()
    items = EncodedItems.from_list(variants)
    headers = jb.read_frame_headers(items.data, items.starts, items.ends)
    decodable = jb.hardware_decodable_rows(items.data, items.starts, items.ends)[0]
    for i, data in enumerate(variants):
        header = read_header(data)
        assert decodable[i] == hardware_decodable(header), i
        if headers.state[i] == jb.FOUND:
            assert headers.orientation[i] == header.orientation, i
    assert headers.orientation[:4].tolist() == [6, 1, 3, 1] and headers.orientation[10] == 6
    assert headers.state.tolist().count(jb.UNSETTLED) == 1  # only the block with too many entries


def test_rows_it_cannot_settle_are_left_to_the_scalar_reader():
    base = _jpeg()
    crowded = _exif([(0x8000 + k, 1) for k in range(jb.MAX_EXIF_ENTRIES + 2)] + [(0x0112, 6)])
    rows = [base, _jpeg(exif=exif_with_orientation(6)), base[:2] + _segment(0xEC, b"x") * 30 + base[2:],
            base[:2] + crowded + base[2:]]
    items = EncodedItems.from_list(rows)
    headers = jb.read_frame_headers(items.data, items.starts, items.ends)
    assert headers.state.tolist() == [jb.FOUND, jb.FOUND, jb.UNSETTLED, jb.UNSETTLED]
    assert (headers.width[0], headers.height[0], headers.count[0], headers.orientation[1]) == (120, 90, 3, 6)
    assert jb.hardware_decodable_rows(items.data, items.starts, items.ends)[0].tolist() == [True, False, True, False]


def test_an_adobe_marker_decides_rgb_over_the_component_ids():
    base = _jpeg()
    items = EncodedItems.from_list([base[:2] + _adobe(0) + base[2:], base[:2] + _adobe(1) + base[2:]])
    headers = jb.read_frame_headers(items.data, items.starts, items.ends)
    assert headers.adobe.tolist() == [0, 1]
    assert jb.hardware_decodable_mask(headers).tolist() == [False, True]


def test_only_complete_jpegs_count_as_jpegs():
    data = _jpeg()
    png = encode(Image.fromarray(photo(40, 30)), "PNG")
    noise = np.random.default_rng(0).integers(0, 256, 900, np.uint8).tobytes()
    rows = [data, data + b"\0" * 20, data + b"\0" * jb.EOI_SEARCH, png, b"", b"\xff\xd8", b"\xff\xd8\xff\xd9", noise]
    rows += [data[: int(len(data) * fraction)] for fraction in (0.2, 0.5, 0.8, 0.99)]
    items = EncodedItems.from_list(rows)
    complete = jb.complete_jpeg_rows(items.data, items.starts, items.ends)
    assert complete.tolist() == [True, True, False, False, False, False, True, False] + [False] * 4
