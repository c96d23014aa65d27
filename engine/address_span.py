"""The memory a strided view spans. The GPU runtime uses it to find the layers that read an engine
input (their arrays overlap the input's memory) and to give them the same views of another array
of the input's shape (engine/gpu_runtime.py: input heads). Pure arithmetic on addresses, so the
tests check it on numpy views."""

from __future__ import annotations


def address_span(ptr: int, shape, strides, itemsize: int) -> tuple[int, int]:
    """The addresses [start, end) that an array whose element 0 is at `ptr`, with this shape and
    these strides (bytes, any sign), spans; (ptr, ptr) when it has no elements."""
    start = end = ptr
    for size, stride in zip(shape, strides):
        if size == 0:
            return ptr, ptr
        if stride < 0:
            start += (size - 1) * stride
        else:
            end += (size - 1) * stride
    return start, end + itemsize


def overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two spans share an address."""
    return a[0] < b[1] and b[0] < a[1]


def inside(inner: tuple[int, int], outer: tuple[int, int]) -> bool:
    """Whether every address of `inner` is in `outer`."""
    return outer[0] <= inner[0] and inner[1] <= outer[1]
