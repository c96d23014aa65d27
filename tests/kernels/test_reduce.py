"""Unit tests for kernels/cpu/reduce.py against naive loop references on tiny inputs."""

import itertools
import math

import numpy as np
import pytest

from kernels.cpu import CPU_OPS
from kernels.cpu import reduce as rd
from kernels.registry import KernelError

RNG = np.random.default_rng(7)


def naive_reduce(x, axes, keepdims, combine, finish=lambda acc, n: acc, start=None):
    """Reduce by visiting every element: out[kept index] = finish(fold(combine), count)."""
    axes = sorted(a % x.ndim for a in axes)
    kept = [d for d in range(x.ndim) if d not in axes]
    groups: dict = {}
    for index in itertools.product(*(range(n) for n in x.shape)):
        key = tuple(index[d] for d in kept)
        groups.setdefault(key, []).append(x[index].item())
    out_shape = tuple(1 if d in axes else n for d, n in enumerate(x.shape)) if keepdims else tuple(x.shape[d] for d in kept)
    out = np.empty(tuple(x.shape[d] for d in kept), dtype=object)
    for key in itertools.product(*(range(x.shape[d]) for d in kept)):
        values = groups.get(key, [])
        acc = start
        for v in values:
            acc = v if acc is None else combine(acc, v)
        out[key] = finish(acc, len(values))
    return out.reshape(out_shape)


AXES_CASES = [((0,), 1), ((1,), 0), ((2,), 1), ((-1,), 0), ((0, 2), 1), ((-3, -1), 0), ((0, 1, 2), 0), ((0, 1, 2), 1)]


# ----------------------------------------------------------------------------------------------
# Registration


@pytest.mark.parametrize(
    "op_type, opset, fn",
    [
        ("ReduceSum", 7, rd.reduce_sum_1), ("ReduceSum", 12, rd.reduce_sum_1), ("ReduceSum", 13, rd.reduce_sum_13),
        ("ReduceMean", 17, rd.reduce_mean_1), ("ReduceMean", 18, rd.reduce_mean_18),
        ("ReduceMax", 13, rd.reduce_max_1), ("ReduceMax", 20, rd.reduce_max_18),
        ("ArgMax", 12, rd.argmax),
        ("Softmax", 12, rd.softmax_1), ("Softmax", 13, rd.softmax_13),
        ("LogSoftmax", 11, rd.log_softmax_1), ("LogSoftmax", 28, rd.log_softmax_13),
    ],
)
def test_lookup_picks_the_right_version(op_type, opset, fn):
    assert CPU_OPS.lookup(op_type, opset).fn is fn


# ----------------------------------------------------------------------------------------------
# ReduceSum / ReduceMean / ReduceMax


@pytest.mark.parametrize("axes, keepdims", AXES_CASES)
def test_reduce_sum_both_versions(axes, keepdims):
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    expected = naive_reduce(x, axes, keepdims, lambda a, b: a + b).astype(np.float64)
    old = rd.reduce_sum_1(x, axes=list(axes), keepdims=keepdims)
    new = rd.reduce_sum_13(x, np.array(axes, np.int64), keepdims=keepdims)
    for out in (old, new):
        assert out.dtype == np.float32 and out.shape == expected.shape
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axes, keepdims", AXES_CASES)
def test_reduce_mean_both_versions(axes, keepdims):
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    expected = naive_reduce(x, axes, keepdims, lambda a, b: a + b, finish=lambda s, n: s / n).astype(np.float64)
    old = rd.reduce_mean_1(x, axes=list(axes), keepdims=keepdims)
    new = rd.reduce_mean_18(x, np.array(axes, np.int64), keepdims=keepdims)
    for out in (old, new):
        assert out.dtype == np.float32 and out.shape == expected.shape
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axes, keepdims", AXES_CASES)
def test_reduce_max_both_versions(axes, keepdims):
    x = RNG.integers(-50, 50, (2, 3, 4)).astype(np.int32)
    expected = naive_reduce(x, axes, keepdims, max).astype(np.int64)
    old = rd.reduce_max_1(x, axes=list(axes), keepdims=keepdims)
    new = rd.reduce_max_18(x, np.array(axes, np.int64), keepdims=keepdims)
    for out in (old, new):
        assert out.dtype == np.int32 and out.shape == expected.shape
        np.testing.assert_array_equal(out, expected)


def test_default_axes_reduce_everything():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert rd.reduce_sum_1(x).shape == (1, 1, 1) and rd.reduce_sum_1(x)[0, 0, 0] == 276
    assert rd.reduce_sum_13(x).shape == (1, 1, 1)
    assert rd.reduce_mean_18(x, keepdims=0).shape == () and rd.reduce_mean_18(x, keepdims=0) == 11.5
    assert rd.reduce_max_18(x, np.array([], np.int64), keepdims=0) == 23  # empty axes, noop off: all


def test_noop_with_empty_axes_returns_a_copy():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for kernel in (rd.reduce_sum_13, rd.reduce_mean_18, rd.reduce_max_18):
        for axes in (None, np.array([], np.int64)):
            out = kernel(x, axes, noop_with_empty_axes=1)
            np.testing.assert_array_equal(out, x)
            assert out.shape == x.shape and not np.shares_memory(out, x)
    # Axes given: noop_with_empty_axes does not matter.
    assert rd.reduce_sum_13(x, np.array([1]), noop_with_empty_axes=1).shape == (2, 1)


def test_rank_zero_input():
    x = np.array(3.5, np.float32)
    assert rd.reduce_sum_13(x) == 3.5 and rd.reduce_sum_13(x).shape == ()
    assert rd.reduce_mean_1(x, keepdims=0) == 3.5


def test_empty_set_reductions():
    x = np.zeros((2, 0, 4), np.float32)
    total = rd.reduce_sum_13(x, np.array([1]))
    assert total.shape == (2, 1, 4) and total.dtype == np.float32 and np.all(total == 0)
    peak = rd.reduce_max_18(x, np.array([1]))
    assert peak.shape == (2, 1, 4) and np.all(peak == -np.inf)
    average = rd.reduce_mean_18(x, np.array([1]))
    assert average.shape == (2, 1, 4) and np.all(np.isnan(average))
    ints = rd.reduce_max_18(np.zeros((0, 3), np.int8), np.array([0]), keepdims=0)
    assert ints.dtype == np.int8 and np.all(ints == -128)
    bools = rd.reduce_max_18(np.zeros((2, 0), bool), np.array([1]))
    assert bools.dtype == np.bool_ and bools.shape == (2, 1) and not bools.any()
    # A zero-length axis that is kept stays zero-length.
    assert rd.reduce_sum_13(x, np.array([2])).shape == (2, 0, 1)


def test_reduce_max_bool_and_nan():
    x = np.array([[True, False], [False, False]])
    np.testing.assert_array_equal(rd.reduce_max_18(x, np.array([1]), keepdims=0), [True, False])
    f = np.array([[1.0, np.nan], [2.0, 3.0]], np.float32)
    out = rd.reduce_max_1(f, axes=[1], keepdims=0)
    assert np.isnan(out[0]) and out[1] == 3


def test_integer_sum_and_mean_keep_dtype_and_truncate():
    x = np.array([[-3, -4], [3, 4], [7, 0]], np.int64)
    assert rd.reduce_sum_13(x, np.array([1])).dtype == np.int64
    mean = rd.reduce_mean_18(x, np.array([1]), keepdims=0)
    assert mean.dtype == np.int64
    np.testing.assert_array_equal(mean, [math.trunc(-7 / 2), math.trunc(7 / 2), math.trunc(7 / 2)])
    big = np.array([2**62, 2**62 - 2], np.int64)
    assert rd.reduce_mean_18(big, keepdims=0) == 2**62 - 1  # exact, not through float64


def test_float16_sums_accumulate_wider():
    # Down a strided axis a float16 running sum stalls at 2048 (2048 + 1 rounds back to 2048).
    x = np.full((4097, 2), 1.0, np.float16)
    total = rd.reduce_sum_1(x, axes=[0], keepdims=0)
    assert total.dtype == np.float16
    np.testing.assert_array_equal(total, [4096.0, 4096.0])
    # A float16 sum of 70000 ones overflows (max 65504); the mean must still be 1.
    mean = rd.reduce_mean_18(np.full((70000, 2), 1.0, np.float16), np.array([0]), keepdims=0)
    assert mean.dtype == np.float16
    np.testing.assert_array_equal(mean, [1.0, 1.0])


def test_reduce_axis_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(KernelError, match="axis 2 is out of range for an input of rank 2"):
        rd.reduce_sum_13(x, np.array([2]))
    with pytest.raises(KernelError, match="axis -3 is out of range"):
        rd.reduce_mean_1(x, axes=[-3])
    with pytest.raises(KernelError, match="name an axis twice"):
        rd.reduce_max_18(x, np.array([1, -1]))


# ----------------------------------------------------------------------------------------------
# ArgMax


def naive_argmax(x, axis, keepdims, last):
    moved = np.moveaxis(x, axis, -1)
    out = np.empty(moved.shape[:-1], dtype=np.int64)
    for index in itertools.product(*(range(n) for n in moved.shape[:-1])):
        row = list(moved[index])
        best = 0
        for i, v in enumerate(row):
            if v > row[best] or (last and v == row[best]):
                best = i
        out[index] = best
    return np.expand_dims(out, axis) if keepdims else out


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("last", [0, 1])
def test_argmax_with_ties(axis, keepdims, last):
    x = RNG.integers(0, 3, (3, 4, 5)).astype(np.float32)  # many ties
    out = rd.argmax(x, axis=axis, keepdims=keepdims, select_last_index=last)
    assert out.dtype == np.int64
    expected = naive_argmax(x, axis % 3, keepdims, last)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


def test_argmax_defaults_and_integer_input():
    x = np.array([[1, 9], [5, 2]], np.uint8)
    out = rd.argmax(x)
    assert out.dtype == np.int64 and out.shape == (1, 2)
    np.testing.assert_array_equal(out, [[1, 0]])


def test_argmax_errors():
    with pytest.raises(KernelError, match="axis 2 is out of range"):
        rd.argmax(np.zeros((2, 2)), axis=2)
    with pytest.raises(KernelError, match="rank 0"):
        rd.argmax(np.array(1.0))
    with pytest.raises(KernelError, match=r"axis 1 of input shape \(2, 0\) is empty"):
        rd.argmax(np.zeros((2, 0)), axis=1)


# ----------------------------------------------------------------------------------------------
# Softmax / LogSoftmax


def naive_softmax_rows(matrix, log):
    out = np.empty(matrix.shape, dtype=np.float64)
    for r, row in enumerate(matrix.astype(np.float64)):
        m = max(row)
        total = sum(math.exp(v - m) for v in row)
        for c, v in enumerate(row):
            out[r, c] = (v - m - math.log(total)) if log else math.exp(v - m) / total
    return out


def naive_softmax_axis(x, axis, log):
    moved = np.moveaxis(x, axis, -1)
    rows = naive_softmax_rows(moved.reshape(-1, moved.shape[-1]), log)
    return np.moveaxis(rows.reshape(moved.shape), -1, axis)


def naive_softmax_2d(x, axis, log):
    rows = int(np.prod(x.shape[:axis]))
    return naive_softmax_rows(x.reshape(rows, -1), log).reshape(x.shape)


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
def test_softmax_13_along_one_axis(log, axis):
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    kernel = rd.log_softmax_13 if log else rd.softmax_13
    out = kernel(x, axis=axis)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, naive_softmax_axis(x, axis, log), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_softmax_1_coerces_to_2d(log, axis):
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    kernel = rd.log_softmax_1 if log else rd.softmax_1
    out = kernel(x, axis=axis)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, naive_softmax_2d(x, axis % 3 if axis < 0 else axis, log), rtol=1e-5, atol=1e-6)


def test_softmax_defaults_differ_between_versions():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(rd.softmax_1(x), naive_softmax_2d(x, 1, False), rtol=1e-5)  # rows of 12
    np.testing.assert_allclose(rd.softmax_13(x), naive_softmax_axis(x, 2, False), rtol=1e-5)  # last axis
    assert not np.allclose(rd.softmax_1(x), rd.softmax_13(x))


def test_softmax_large_numbers_are_stable():
    x = np.array([[0, 1, 2, 3], [10000, 10001, 10002, 10003], [-1e4, -1e4, -1e4, -1e4]], np.float32)
    soft = rd.softmax_13(x)
    logs = rd.log_softmax_13(x)
    assert np.all(np.isfinite(soft)) and np.all(np.isfinite(logs))
    np.testing.assert_allclose(soft[1], soft[0], rtol=1e-6)
    np.testing.assert_allclose(soft[2], 0.25, rtol=1e-6)
    np.testing.assert_allclose(logs[1], naive_softmax_rows(x[:1], True)[0], rtol=1e-6)


def test_log_softmax_keeps_tiny_probabilities():
    x = np.array([[0.0, -200.0]], np.float32)
    out = rd.log_softmax_13(x)
    assert out[0, 1] == pytest.approx(-200.0, rel=1e-6)  # log(softmax) would give -inf


def test_softmax_float16_and_float64():
    x = RNG.standard_normal((3, 5))
    half = rd.softmax_13(x.astype(np.float16))
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, naive_softmax_axis(x.astype(np.float16), 1, False), rtol=2e-3)
    assert rd.log_softmax_1(x).dtype == np.float64


def test_softmax_errors_and_empty_input():
    with pytest.raises(KernelError, match=r"axis 3 is out of range for input shape \(2, 3\)"):
        rd.softmax_13(np.zeros((2, 3), np.float32), axis=3)
    with pytest.raises(KernelError, match="rank 0"):
        rd.log_softmax_13(np.array(1.0, np.float32))
    with pytest.raises(KernelError, match="axis -3 is out of range"):
        rd.softmax_1(np.zeros((2, 3), np.float32), axis=-3)
    empty = rd.softmax_13(np.zeros((0, 4), np.float32))
    assert empty.shape == (0, 4) and empty.dtype == np.float32
