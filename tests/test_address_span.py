"""engine.address_span: the memory a view spans, which decides which layers read an engine input
(and so which layers the GPU runtime rebinds to read a ring slot in place). Checked on numpy
views, whose addresses follow the same rules as CuPy's."""

from __future__ import annotations

import numpy as np
import pytest

from engine.address_span import address_span, inside, overlap


def _span(view: np.ndarray) -> tuple[int, int]:
    return address_span(view.__array_interface__["data"][0], view.shape, view.strides, view.itemsize)


def _touched(base: np.ndarray, view: np.ndarray) -> tuple[int, int]:
    """[first, last + 1) addresses of the bytes the view's elements occupy, found by visiting each."""
    addresses = []
    start = view.__array_interface__["data"][0]
    for index in np.ndindex(view.shape):
        address = start + sum(i * s for i, s in zip(index, view.strides))
        addresses += [address, address + view.itemsize]
    return min(addresses), max(addresses)


VIEWS = [
    lambda a: a,                                   # the whole array
    lambda a: a.transpose(0, 3, 1, 2),             # NCHW view of NHWC memory
    lambda a: a[1:3],                              # some images
    lambda a: a[:, 1:3, ::2],                      # strided rows and columns
    lambda a: a[::-1, :, ::-1],                    # negative strides
    lambda a: a[2, 3, 1],                          # one pixel
]


@pytest.mark.parametrize("make", VIEWS)
def test_the_span_runs_from_the_first_to_the_last_byte_the_view_holds(make):
    base = np.zeros((4, 5, 6, 3), np.float16)
    view = make(base)
    assert _span(view) == _touched(base, view)
    assert inside(_span(view), _span(base)) and overlap(_span(view), _span(base))


def test_an_empty_view_spans_nothing_and_overlaps_nothing():
    base = np.zeros((4, 5), np.float32)
    empty = _span(base[2:2])
    assert empty[0] == empty[1]
    assert not overlap(empty, _span(base))


def test_neighbouring_arrays_do_not_overlap_and_are_not_inside_each_other():
    memory = np.zeros(100, np.float32)
    left, right, middle = memory[:50], memory[50:], memory[40:60]
    assert not overlap(_span(left), _span(right))
    assert overlap(_span(left), _span(middle)) and overlap(_span(right), _span(middle))
    assert not inside(_span(middle), _span(left)) and not inside(_span(left), _span(middle))
    assert inside(_span(memory[45:50]), _span(left))
