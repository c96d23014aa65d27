"""scoring/jpeg_header.py: JPEG headers read without decoding, against what Pillow wrote and reads."""

from __future__ import annotations

import io
import struct

import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from scoring.jpeg_header import hardware_decodable, read_header  # noqa: E402
from tests.scoring.test_decode import encode, exif_with_orientation, photo  # noqa: E402


def _jpeg(width=120, height=90, mode="RGB", **kw) -> bytes:
    img = Image.fromarray(photo(width, height))
    if mode != "RGB":
        img = img.convert(mode)
    return encode(img, "JPEG", quality=90, **kw)


@pytest.mark.parametrize("subsampling, luma", [(0, (1, 1)), (1, (2, 1)), (2, (2, 2))])
def test_baseline_colour_jpegs_are_read_and_go_to_the_hardware(subsampling, luma):
    header = read_header(_jpeg(120, 90, subsampling=subsampling))
    assert (header.sof, header.precision, header.width, header.height) == (0xC0, 8, 120, 90)
    assert header.sampling == (luma, (1, 1), (1, 1)) and header.orientation == 1 and not header.rgb
    assert hardware_decodable(header)


@pytest.mark.parametrize("make, why", [
    (lambda: _jpeg(progressive=True), "progressive"),
    (lambda: _jpeg(mode="L"), "grayscale"),
    (lambda: _jpeg(mode="CMYK"), "CMYK"),
    (lambda: _jpeg(exif=exif_with_orientation(6)), "rotated by EXIF"),
    (lambda: _jpeg(8, 8), "smaller than the hardware's range"),
])
def test_jpegs_the_hardware_does_not_take_as_they_are(make, why):
    header = read_header(make())
    assert header is not None, why
    assert not hardware_decodable(header), why


def test_exif_orientation_is_read_and_an_upright_one_is_fine():
    assert read_header(_jpeg(exif=exif_with_orientation(6))).orientation == 6
    upright = read_header(_jpeg(exif=exif_with_orientation(1)))
    assert upright.orientation == 1 and hardware_decodable(upright)


def test_an_adobe_marker_saying_rgb_keeps_the_jpeg_off_the_hardware():
    data = _jpeg()
    adobe = b"\xff\xee" + struct.pack(">H", 14) + b"Adobe" + b"\x00\x64" + b"\x00\x00" * 2 + b"\x00"
    header = read_header(data[:2] + adobe + data[2:])
    assert header.rgb and not hardware_decodable(header)
    ycc = b"\xff\xee" + struct.pack(">H", 14) + b"Adobe" + b"\x00\x64" + b"\x00\x00" * 2 + b"\x01"
    assert hardware_decodable(read_header(data[:2] + ycc + data[2:]))


@pytest.mark.parametrize("data", [b"", b"\xff\xd8", b"GIF89a" + b"\x00" * 20, b"\xff\xd8\xff\xe0\x00\x10JFIF"])
def test_what_does_not_parse_is_none(data):
    assert read_header(data) is None and not hardware_decodable(None)


def test_truncated_before_the_frame_header_is_none():
    data = _jpeg()
    sof = data.index(b"\xff\xc0")
    assert read_header(data[: sof + 5]) is None
    assert read_header(data[: sof + 40]) is not None  # the frame header itself is complete


def test_sizes_agree_with_pillow_on_the_synthetic_dataset(tmp_path):
    import pyarrow.parquet as pq

    from scoring.make_data import make_dataset

    make_dataset(tmp_path / "d", rows=24, row_groups=1, seed=3)
    rows = pq.read_table(next((tmp_path / "d").glob("*.parquet")), columns=["image"]).column("image").to_pylist()
    for row in rows:
        header = read_header(row["bytes"])
        with Image.open(io.BytesIO(row["bytes"])) as img:
            assert (header.width, header.height) == img.size
            assert hardware_decodable(header) == (img.mode == "RGB" and not img.info.get("progressive")
                                                  and not img.info.get("progression"))
