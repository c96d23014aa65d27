"""scoring.jpeg_header for a whole batch at once: numpy over the batch's one byte buffer
(scoring.encoded_items), so that choosing the rows for the hardware JPEG decoder costs no Python
per row.

    complete = complete_jpeg_rows(data, starts, ends)            # bool per row
    decodable, heights, widths = hardware_decodable_rows(data, starts, ends)

Each row is data[starts[i]:ends[i]]. The scalar reader (jpeg_header.read_header) stays the statement
of what a header says: the rows this cannot settle in numpy are handed to it one by one. Those are
rows with more than MAX_SEGMENTS segments before the frame header, and rows whose EXIF block has
more than MAX_EXIF_ENTRIES entries before its orientation tag. EXIF orientations are read here too
(IFD0 of the TIFF block, either byte order). Tests hold both readers to the same answers on every
header variant they make. On the 2-core dev box, 1.6 us a row here against 6.6 through the scalar
reader, and 2.5 against 8.9 for JPEGs with an EXIF block (benchmarks/host_decode_prep.py,
benchmarks/results/host_decode_prep_cpu_2026-11-22.json).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scoring import jpeg_header as scalar

# An end-of-image marker (FF D9) must be among a JPEG's last EOI_SEARCH bytes for the GPU paths to
# take it: nvJPEG may decode a truncated file (grey-filling the rest) where Pillow reports
# "truncated". FF D9 cannot occur inside entropy-coded data (FF is stuffed there), so finding it
# near the end is a sound test; files with long trailers just take the CPU path.
EOI_SEARCH = 64
MAX_SEGMENTS = 24
MAX_EXIF_ENTRIES = 64

FOUND, NOT_A_HEADER, UNSETTLED = 0, 1, 2


def _table(markers) -> np.ndarray:
    """A 256-entry lookup: table[byte] is True for the given marker bytes (faster than np.isin)."""
    table = np.zeros(256, bool)
    table[list(markers)] = True
    return table


_IS_SOF = _table(scalar._SOF_MARKERS)
_IS_STANDALONE = _table(scalar._STANDALONE)
_EXIF_ID = np.frombuffer(scalar._EXIF_ID, np.uint8)
_ADOBE = np.frombuffer(b"Adobe", np.uint8)
_RGB_IDS = np.array([0x52, 0x47, 0x42])
# Sampling bytes (horizontal << 4 | vertical) of a luma component the hardware takes (chroma 0x11).
_IS_HARDWARE_LUMA = _table((h << 4) | v for h, v in scalar._HARDWARE_SAMPLINGS)


def complete_jpeg_rows(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """True for rows that start like a JPEG (FF D8 FF, as Pillow checks) and hold FF D9 among their
    last EOI_SEARCH bytes."""
    starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
    complete = ends - starts >= 4
    at = np.flatnonzero(complete)
    s, e = starts[at], ends[at]
    head = (data[s] == 0xFF) & (data[s + 1] == 0xD8) & (data[s + 2] == 0xFF)
    window = e[:, None] - EOI_SEARCH + np.arange(EOI_SEARCH)
    inside = window >= s[:, None]
    tail = data[np.maximum(window, 0)]
    eoi = (tail[:, :-1] == 0xFF) & (tail[:, 1:] == 0xD9) & inside[:, :-1]
    complete[at] = head & eoi.any(axis=1)
    return complete


@dataclass
class FrameHeaders:
    """Per row: state (FOUND, NOT_A_HEADER: read_header gives None, UNSETTLED: ask read_header),
    and for FOUND rows the frame header's fields. ids and sampling hold the first three
    components' id and sampling byte (horizontal << 4 | vertical), -1 past the component count;
    adobe is the last Adobe marker's transform, -1 where there is none; orientation is the EXIF
    orientation, 1 where there is none."""

    state: np.ndarray
    sof: np.ndarray
    precision: np.ndarray
    height: np.ndarray
    width: np.ndarray
    count: np.ndarray
    ids: np.ndarray
    sampling: np.ndarray
    adobe: np.ndarray
    orientation: np.ndarray


def read_frame_headers(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> FrameHeaders:
    """read_header's marker walk for every row at once, one segment per step."""
    starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
    n = len(starts)
    h = FrameHeaders(np.full(n, UNSETTLED), *(np.zeros(n, np.int64) for _ in range(5)),
                     np.full((n, 3), -1, np.int64), np.full((n, 3), -1, np.int64), np.full(n, -1, np.int64),
                     np.ones(n, np.int64))
    soi = ends - starts >= 4
    at = np.flatnonzero(soi)
    soi[at] = (data[starts[at]] == 0xFF) & (data[starts[at] + 1] == 0xD8)
    h.state[~soi] = NOT_A_HEADER
    active = np.flatnonzero(soi)
    pos = starts + 2
    for _ in range(MAX_SEGMENTS):
        if active.size == 0:
            break
        p, e = pos[active], ends[active]
        room = p + 4 <= e
        h.state[active[~room]] = NOT_A_HEADER
        active, p, e = active[room], p[room], e[room]
        marker = data[p + 1]
        bad = data[p] != 0xFF
        fill = ~bad & (marker == 0xFF)
        standalone = ~bad & ~fill & _IS_STANDALONE[marker]
        scan = ~bad & ~fill & ((marker == scalar._SOS) | (marker == scalar._EOI))
        segment = ~(bad | fill | standalone | scan)
        length = (data[p + 2].astype(np.int64) << 8) | data[p + 3]
        end = p + 2 + length
        broken = segment & ((length < 2) | (end > e))
        segment &= ~broken
        exif = _matches(data, segment & (marker == 0xE1), p + 4, e, _EXIF_ID)
        adobe = _matches(data, segment & (marker == 0xEE) & (length >= 14), p + 4, e, _ADOBE)
        h.adobe[active[adobe]] = data[p[adobe] + 15]
        frame = segment & _IS_SOF[marker]
        h.state[active[bad | scan | broken]] = NOT_A_HEADER
        if frame.any():
            _read_frames(data, h, active[frame], marker[frame], p[frame] + 4, end[frame])
        unsettled = np.zeros(len(active), bool)
        if exif.any():  # read_header: orientation = _exif_orientation(data[i + 10:end]) or orientation
            at = np.flatnonzero(exif)
            value, settled = exif_orientations(data, p[at] + 10, end[at])
            known = settled & (value != 0)
            h.orientation[active[at[known]]] = value[known]
            unsettled[at[~settled]] = True  # left UNSETTLED, for read_header
        pos[active[fill]] += 1
        pos[active[standalone]] += 2
        moves_on = segment & ~frame & ~unsettled
        pos[active[moves_on]] = end[moves_on]
        active = active[fill | standalone | moves_on]
    return h


def exif_orientations(data: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """jpeg_header._exif_orientation of each TIFF block data[starts[i]:ends[i]] at once: (the
    orientation tag's value, 0 where it gives None; settled, False where IFD0 has more than
    MAX_EXIF_ENTRIES entries before the tag, which this does not read)."""
    k = len(starts)
    length = ends - starts
    value, settled = np.zeros(k, np.int64), np.ones(k, bool)
    live = np.flatnonzero(length >= 8)
    t = starts[live]
    little = np.zeros(k, bool)
    little[live] = (data[t] == 0x49) & (data[t + 1] == 0x49)  # "II"
    big = (data[t] == 0x4D) & (data[t + 1] == 0x4D)  # "MM"
    live = live[little[live] | big]
    ifd = _uint(data, starts[live] + 4, 4, little[live])
    inside = ifd + 2 <= length[live]
    live, ifd = live[inside], ifd[inside]
    count = _uint(data, starts[live] + ifd, 2, little[live])
    for j in range(MAX_EXIF_ENTRIES):
        more = count > j  # rows whose entries ran out: no tag, None
        live, ifd, count = live[more], ifd[more], count[more]
        entry = ifd + 2 + 12 * j
        fits = entry + 12 <= length[live]  # an entry past the block: None
        live, ifd, count, entry = live[fits], ifd[fits], count[fits], entry[fits]
        if live.size == 0:
            break
        hit = _uint(data, starts[live] + entry, 2, little[live]) == scalar._ORIENTATION_TAG
        found = live[hit]
        value[found] = _uint(data, starts[found] + entry[hit] + 8, 2, little[found])
        live, ifd, count = live[~hit], ifd[~hit], count[~hit]
    settled[live] = False
    return value, settled


def _uint(data: np.ndarray, at: np.ndarray, size: int, little: np.ndarray) -> np.ndarray:
    """Unsigned integers of `size` bytes at data[at], little- or big-endian per row."""
    raw = data[at[:, None] + np.arange(size)].astype(np.int64)
    weights = 256 ** np.arange(size, dtype=np.int64)
    return np.where(little, raw @ weights, raw @ weights[::-1])


def _matches(data: np.ndarray, candidate: np.ndarray, at: np.ndarray, ends: np.ndarray,
             pattern: np.ndarray) -> np.ndarray:
    """True where candidate & (data[at : at + len(pattern)] == pattern), within each row's end."""
    found = np.zeros(len(at), bool)
    where = np.flatnonzero(candidate & (at + len(pattern) <= ends))
    if where.size:
        found[where] = (data[at[where, None] + np.arange(len(pattern))] == pattern).all(axis=1)
    return found


def _read_frames(data, h: FrameHeaders, rows, marker, start, end) -> None:
    """read_header's _frame for the rows whose walk reached a start-of-frame segment."""
    short = end - start < 6
    h.state[rows[short]] = NOT_A_HEADER
    rows, marker, start, end = rows[~short], marker[~short], start[~short], end[~short]
    count = data[start + 5].astype(np.int64)
    short = end - start < 6 + 3 * count
    h.state[rows[short]] = NOT_A_HEADER
    rows, marker, start, count = rows[~short], marker[~short], start[~short], count[~short]
    h.state[rows] = FOUND
    h.sof[rows] = marker
    h.precision[rows] = data[start]
    h.height[rows] = (data[start + 1].astype(np.int64) << 8) | data[start + 2]
    h.width[rows] = (data[start + 3].astype(np.int64) << 8) | data[start + 4]
    h.count[rows] = count
    for k in range(3):
        has = count > k
        h.ids[rows[has], k] = data[start[has] + 6 + 3 * k]
        h.sampling[rows[has], k] = data[start[has] + 7 + 3 * k]


def hardware_decodable_mask(h: FrameHeaders) -> np.ndarray:
    """jpeg_header.hardware_decodable for the FOUND rows (False elsewhere)."""
    rgb = np.where(h.adobe >= 0, h.adobe == 0, (h.ids == _RGB_IDS).all(axis=1))
    low, high = scalar.HARDWARE_MIN_SIDE, scalar.HARDWARE_MAX_SIDE
    return ((h.state == FOUND) & (h.sof == scalar.SOF_BASELINE) & (h.precision == 8) & (h.count == 3) & ~rgb
            & (h.orientation == 1)
            & (h.width >= low) & (h.width <= high) & (h.height >= low) & (h.height <= high)
            & _IS_HARDWARE_LUMA[h.sampling[:, 0] & 0xFF] & (h.sampling[:, 1] == 0x11) & (h.sampling[:, 2] == 0x11))


def hardware_decodable_rows(data: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """(decodable, heights, widths) per row: hardware_decodable(read_header(row)) and the frame's
    size, read in numpy where it can be and by read_header for the UNSETTLED rows."""
    h = read_frame_headers(data, starts, ends)
    decodable = hardware_decodable_mask(h)
    heights, widths = h.height.copy(), h.width.copy()
    for i in np.flatnonzero(h.state == UNSETTLED).tolist():
        header = scalar.read_header(data[starts[i]: ends[i]].tobytes())
        decodable[i] = scalar.hardware_decodable(header)
        if header is not None:
            heights[i], widths[i] = header.height, header.width
    return decodable, heights, widths
