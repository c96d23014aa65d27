"""scoring/encoded_items.py: a batch's encoded rows read in place from Arrow memory."""

from __future__ import annotations

import ctypes
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from scoring.encoded_items import EncodedItems

ROWS = [b"first", None, b"", b"\xff\xd8\xff third", b"fourth row"]


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary()])
def test_rows_read_back_as_bytes_and_none_from_either_binary_type(kind):
    items = EncodedItems.from_arrow(pa.array(ROWS, kind))
    assert len(items) == 5 and list(items) == ROWS and [items[i] for i in range(5)] == ROWS
    assert items[-1] == b"fourth row" and items.lengths().tolist() == [len(r or b"") for r in ROWS]


def test_a_slice_of_an_arrow_array_is_read_at_its_offset_without_copying():
    array = pa.array(ROWS * 3, pa.binary())
    items = EncodedItems.from_arrow(array.slice(6, 4))
    assert list(items) == ROWS[1:5]
    assert np.shares_memory(items.data, np.frombuffer(array.buffers()[2], np.uint8))


def test_chunked_columns_and_hugging_face_structs():
    chunked = pa.chunked_array([pa.array(ROWS[:2], pa.binary()), pa.array(ROWS[2:], pa.binary())])
    assert list(EncodedItems.from_arrow(chunked)) == ROWS
    struct = pa.array([None if r is None else {"bytes": r, "path": "p"} for r in ROWS],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    assert list(EncodedItems.from_arrow(pc.struct_field(struct, "bytes"))) == ROWS
    assert list(EncodedItems.from_arrow(pa.chunked_array([], pa.binary()))) == []


def test_pointers_address_each_rows_bytes():
    items = EncodedItems.from_arrow(pa.array(ROWS, pa.binary()))
    for i, row in enumerate(ROWS):
        if row:
            assert ctypes.string_at(int(items.pointers()[i]), len(row)) == row


def test_slices_lists_and_pickles_keep_the_rows():
    items = EncodedItems.from_list(ROWS)
    assert list(items) == ROWS and list(items[1:4]) == ROWS[1:4]
    assert list(pickle.loads(pickle.dumps(items[2:]))) == ROWS[2:]


def test_other_types_and_bad_ranges_are_refused():
    with pytest.raises(TypeError, match="binary or large_binary"):
        EncodedItems.from_arrow(pa.array(["text"]))
    with pytest.raises(ValueError, match="outside"):
        EncodedItems(np.zeros(4, np.uint8), [0], [5], [True])
    with pytest.raises(ValueError, match="differ in length"):
        EncodedItems(np.zeros(4, np.uint8), [0, 1], [1], [True])


def test_rows_of_two_buffers_joined_into_one():
    arrow = EncodedItems.from_arrow(pa.array(ROWS * 2, pa.binary()).slice(3, 4))  # in place, at an offset
    scattered = EncodedItems(np.frombuffer(b"hello world", np.uint8), [6, 0, 5], [11, 5, 5], [True, True, False])
    joined = arrow.joined(scattered)
    assert list(joined) == ROWS[3:5] + ROWS[:2] + [b"world", b"hello", None]
    assert not np.shares_memory(joined.data, arrow.data)  # its own buffer: the others may go
    assert joined.lengths().sum() == len(joined.data)
    assert list(EncodedItems.from_list([]).joined(scattered)) == [b"world", b"hello", None]
