"""What a JPEG's header says, read in Python without decoding: the frame type, size, components and
chroma sampling, and the EXIF orientation. The GPU decoder uses it to pick the JPEGs that the GPU's
hardware JPEG decoder takes as they are (scoring/nvjpeg_hardware.py): baseline, 8-bit, three
components with 4:4:4, 4:2:2, 4:4:0 or 4:2:0 sampling, no rotation to apply, and within its size
range. Anything else goes the other ways (nvImageCodec, Pillow), so a header this reads wrongly
costs speed, never correctness: a batch the hardware refuses is decoded again the other way.
"""

from __future__ import annotations

from dataclasses import dataclass

SOF_BASELINE = 0xC0
# Start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SOS, _EOI = 0xDA, 0xD9
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM carry no length
_EXIF_ID = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112

# (luma horizontal, luma vertical) sampling with chroma at (1, 1): 4:4:4, 4:2:2, 4:4:0, 4:2:0
_HARDWARE_SAMPLINGS = frozenset({(1, 1), (2, 1), (1, 2), (2, 2)})
# The hardware decoder's size range: nvJPEG's documentation gives none, so this is conservative
# (tiny or huge images take the other path).
HARDWARE_MIN_SIDE = 16
HARDWARE_MAX_SIDE = 16384


@dataclass(frozen=True)
class JpegHeader:
    sof: int  # the start-of-frame marker's second byte: 0xC0 baseline, 0xC2 progressive, ...
    precision: int
    height: int
    width: int
    sampling: tuple[tuple[int, int], ...]  # (horizontal, vertical) per component, luma first
    orientation: int  # EXIF orientation, 1 (as stored) when there is none
    rgb: bool = False  # three components stored as RGB, not YCbCr (Adobe transform 0, or ids R, G, B)

    @property
    def components(self) -> int:
        return len(self.sampling)


def read_header(data) -> JpegHeader | None:
    """The header of JPEG bytes, or None where the markers up to the frame header do not parse."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i, orientation, adobe_transform = 2, 1, None
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in (_SOS, _EOI):
            return None  # no frame header before the scan: not a JPEG this reads
        length = (data[i + 2] << 8) | data[i + 3]
        end = i + 2 + length
        if length < 2 or end > n:
            return None
        if marker == 0xE1 and bytes(data[i + 4: i + 10]) == _EXIF_ID:
            orientation = _exif_orientation(bytes(data[i + 10: end])) or orientation
        elif marker == 0xEE and bytes(data[i + 4: i + 9]) == b"Adobe" and length >= 14:
            adobe_transform = data[i + 15]
        elif marker in _SOF_MARKERS:
            return _frame(data, marker, i + 4, end, orientation, adobe_transform)
        i = end
    return None


def _frame(data, marker: int, start: int, end: int, orientation: int, adobe_transform) -> JpegHeader | None:
    if end - start < 6:
        return None
    precision = data[start]
    height = (data[start + 1] << 8) | data[start + 2]
    width = (data[start + 3] << 8) | data[start + 4]
    count = data[start + 5]
    if end - start < 6 + 3 * count:
        return None
    ids = tuple(data[start + 6 + 3 * k] for k in range(count))
    sampling = tuple((data[start + 7 + 3 * k] >> 4, data[start + 7 + 3 * k] & 0x0F) for k in range(count))
    # As libjpeg decides: an Adobe marker's transform 0 means RGB; without one, ids "R", "G", "B" do.
    rgb = count == 3 and (adobe_transform == 0 if adobe_transform is not None else ids == (0x52, 0x47, 0x42))
    return JpegHeader(marker, precision, height, width, sampling, orientation, rgb)


def _exif_orientation(tiff: bytes) -> int | None:
    """The orientation tag of IFD0 in an EXIF TIFF block, or None."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    order = "little" if tiff[:2] == b"II" else "big"

    def number(at: int, size: int) -> int:
        return int.from_bytes(tiff[at: at + size], order)

    ifd = number(4, 4)
    if ifd + 2 > len(tiff):
        return None
    for k in range(number(ifd, 2)):
        entry = ifd + 2 + 12 * k
        if entry + 12 > len(tiff):
            return None
        if number(entry, 2) == _ORIENTATION_TAG:
            return number(entry + 8, 2)  # a SHORT, left-justified in the value field
    return None


def hardware_decodable(header: JpegHeader | None) -> bool:
    """True for a JPEG the hardware decoder takes and whose pixels need no more than a colour
    conversion: baseline 8-bit YCbCr with a supported sampling, upright, of a size it handles."""
    if header is None or header.sof != SOF_BASELINE or header.precision != 8 or header.components != 3:
        return False
    if header.rgb:
        return False
    if header.orientation != 1:
        return False
    if not (HARDWARE_MIN_SIDE <= header.width <= HARDWARE_MAX_SIDE
            and HARDWARE_MIN_SIDE <= header.height <= HARDWARE_MAX_SIDE):
        return False
    luma, chroma = header.sampling[0], header.sampling[1:]
    return luma in _HARDWARE_SAMPLINGS and all(c == (1, 1) for c in chroma)
