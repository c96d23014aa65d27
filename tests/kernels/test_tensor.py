"""Unit tests for kernels/cpu/tensor.py: each kernel against a plain-loop or hand-worked oracle."""

import itertools

import ml_dtypes
import numpy as np
import pytest

from kernels.cpu import CPU_OPS
from kernels.cpu import tensor as T
from kernels.registry import KernelError

rng = np.random.default_rng(0)


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------------------------
# registrations


@pytest.mark.parametrize("op_type, versions", [
    ("Concat", [4]), ("Flatten", [1]), ("Reshape", [5]), ("Transpose", [1]), ("Squeeze", [1, 13]),
    ("Unsqueeze", [1, 13]), ("Identity", [1]), ("Dropout", [7, 10, 12]), ("Constant", [1]),
    ("ConstantOfShape", [9]), ("Shape", [1, 15]), ("Gather", [1]), ("Slice", [1, 10]),
    ("Split", [2, 13, 18]), ("Cast", [6]), ("Pad", [2, 11]), ("Expand", [8]), ("Range", [11]),
])
def test_registered_versions(op_type, versions):
    assert CPU_OPS.versions(op_type) == versions


def test_split_before_18_asks_for_the_output_count():
    assert CPU_OPS.lookup("Split", 13).wants_num_outputs
    assert CPU_OPS.lookup("Split", 11).wants_num_outputs
    assert not CPU_OPS.lookup("Split", 18).wants_num_outputs
    assert CPU_OPS.lookup("Slice", 9).fn is T.slice_1
    assert CPU_OPS.lookup("Slice", 13).fn is T.slice_10


# --------------------------------------------------------------------------------------------
# Concat, Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Identity, Shape, Expand


def test_concat_matches_manual_assembly():
    a, b = randn(2, 3, 4), randn(2, 5, 4)
    out = T.concat(a, b, axis=-2)
    assert out.shape == (2, 8, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :3], a)
    np.testing.assert_array_equal(out[:, 3:], b)


def test_concat_errors():
    with pytest.raises(KernelError, match="differ outside axis"):
        T.concat(randn(2, 3), randn(3, 3), axis=1)
    with pytest.raises(KernelError, match="ranks"):
        T.concat(randn(2, 3), randn(2), axis=0)
    with pytest.raises(KernelError, match="out of range"):
        T.concat(randn(2, 3), randn(2, 3), axis=2)


@pytest.mark.parametrize("axis, expected", [(0, (1, 24)), (1, (2, 12)), (2, (6, 4)), (3, (24, 1)),
                                            (-1, (6, 4)), (-2, (2, 12)), (-3, (1, 24))])
def test_flatten(axis, expected):
    x = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    out = T.flatten(x, axis=axis)
    assert out.shape == expected and out.dtype == np.int32
    np.testing.assert_array_equal(out.ravel(), x.ravel())


def test_flatten_zero_sized_and_bad_axis():
    assert T.flatten(np.zeros((0, 3, 2)), axis=1).shape == (0, 6)
    with pytest.raises(KernelError):
        T.flatten(np.zeros((2, 3)), axis=3)


@pytest.mark.parametrize("shape, allowzero, expected", [
    ([0, -1], 0, (2, 12)),
    ([4, 0, 2], 0, (4, 3, 2)),
    ([-1], 0, (24,)),
    ([2, 3, 4, 1], 0, (2, 3, 4, 1)),
])
def test_reshape(shape, allowzero, expected):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    out = T.reshape(x, np.array(shape, dtype=np.int64), allowzero=allowzero)
    assert out.shape == expected
    np.testing.assert_array_equal(out.ravel(), x.ravel())


def test_reshape_allowzero_makes_a_zero_dim():
    x = np.zeros((0, 3), dtype=np.float32)
    assert T.reshape(x, np.array([3, 0], dtype=np.int64), allowzero=1).shape == (3, 0)
    # without allowzero the 0 copies the input's first dim (0), and 3 * 0 elements fit
    assert T.reshape(x, np.array([0, 3], dtype=np.int64)).shape == (0, 3)


@pytest.mark.parametrize("shape, allowzero, message", [
    ([-1, -1], 0, "more than one -1"),
    ([5, -1], 0, "cannot reshape"),
    ([7], 0, "cannot reshape"),
    ([0, 0, 0, 0], 0, "copies dimension 3"),
    ([0, -1], 1, "both 0 and -1"),
])
def test_reshape_errors(shape, allowzero, message):
    with pytest.raises(KernelError, match=message):
        T.reshape(np.zeros((2, 3, 4)), np.array(shape, dtype=np.int64), allowzero=allowzero)


def test_transpose():
    x = randn(2, 3, 4)
    out = T.transpose(x, perm=[1, 2, 0])
    for i, j, k in itertools.product(range(2), range(3), range(4)):
        assert out[j, k, i] == x[i, j, k]
    assert T.transpose(x).shape == (4, 3, 2)
    with pytest.raises(KernelError, match="permutation"):
        T.transpose(x, perm=[0, 0, 1])


def test_squeeze_and_unsqueeze():
    x = randn(1, 3, 1, 2)
    assert T.squeeze_1(x).shape == (3, 2)
    assert T.squeeze_1(x, axes=[-2]).shape == (1, 3, 2)
    assert T.squeeze_13(x, np.array([0, 2])).shape == (3, 2)
    assert T.squeeze_13(x).shape == (3, 2)
    with pytest.raises(KernelError, match="not of size 1"):
        T.squeeze_13(x, np.array([1]))
    y = randn(3, 2)
    assert T.unsqueeze_1(y, axes=[0, 3]).shape == (1, 3, 2, 1)
    assert T.unsqueeze_13(y, np.array([3, 0])).shape == (1, 3, 2, 1)  # unsorted axes
    assert T.unsqueeze_13(y, np.array([-1])).shape == (3, 2, 1)  # counted in the output rank
    np.testing.assert_array_equal(T.unsqueeze_13(y, np.array([1]))[:, 0], y)
    with pytest.raises(KernelError, match="repeat"):
        T.unsqueeze_13(y, np.array([0, 0]))
    with pytest.raises(KernelError, match="out of range"):
        T.unsqueeze_13(y, np.array([4]))


def test_identity_and_shape():
    x = randn(2, 3, 5)
    assert T.identity(x) is x
    out = T.shape_1(x)
    assert out.dtype == np.int64 and out.tolist() == [2, 3, 5]
    for start, end in itertools.product([-10, -2, -1, 0, 1, 2, 3, 10], [None, -10, -1, 0, 1, 2, 3, 10]):
        expected = list(x.shape)[start:end]  # Python's list slicing clamps exactly as Shape-15 does
        assert T.shape_15(x, start=start, end=end).tolist() == expected, (start, end)


def test_expand_broadcasts_both_ways():
    x = randn(3, 1)
    out = T.expand(x, np.array([2, 1, 4], dtype=np.int64))
    assert out.shape == (2, 3, 4) and out.flags.writeable
    for i, j, k in itertools.product(range(2), range(3), range(4)):
        assert out[i, j, k] == x[j, 0]
    assert T.expand(randn(2, 5), np.array([1], dtype=np.int64)).shape == (2, 5)
    with pytest.raises(KernelError, match="cannot broadcast"):
        T.expand(randn(3, 2), np.array([3, 3], dtype=np.int64))


# --------------------------------------------------------------------------------------------
# Constant, ConstantOfShape, Range


def test_constant_attributes():
    value = np.arange(6, dtype=np.int32).reshape(2, 3)
    np.testing.assert_array_equal(T.constant(value=value), value)
    out = T.constant(value_float=1.5)
    assert out.dtype == np.float32 and out.shape == () and out == 1.5
    out = T.constant(value_floats=[1.0, 2.5])
    assert out.dtype == np.float32 and out.tolist() == [1.0, 2.5]
    out = T.constant(value_int=7)
    assert out.dtype == np.int64 and out.shape == () and out == 7
    out = T.constant(value_ints=[1, -2])
    assert out.dtype == np.int64 and out.tolist() == [1, -2]
    assert T.constant(value_strings=["a", "b"]).tolist() == ["a", "b"]
    with pytest.raises(KernelError, match="exactly one"):
        T.constant()
    with pytest.raises(KernelError, match="exactly one"):
        T.constant(value_int=1, value_float=2.0)


def test_constant_of_shape():
    out = T.constant_of_shape(np.array([2, 3], dtype=np.int64))
    assert out.dtype == np.float32 and out.shape == (2, 3) and not out.any()
    out = T.constant_of_shape(np.array([4], dtype=np.int64), value=np.array([7], dtype=np.int32))
    assert out.dtype == np.int32 and out.tolist() == [7, 7, 7, 7]
    assert T.constant_of_shape(np.array([], dtype=np.int64), value=np.array([2.0])).shape == ()
    assert T.constant_of_shape(np.array([0, 2], dtype=np.int64)).shape == (0, 2)
    with pytest.raises(KernelError, match="negative"):
        T.constant_of_shape(np.array([-1], dtype=np.int64))
    with pytest.raises(KernelError, match="one element"):
        T.constant_of_shape(np.array([2], dtype=np.int64), value=np.array([1.0, 2.0]))


def _range_loop(start, limit, delta):
    values = []
    count = max(int(np.ceil((limit - start) / delta)), 0)
    for i in range(count):
        values.append(start + i * delta)
    return values


@pytest.mark.parametrize("start, limit, delta, dtype", [
    (3, 9, 3, np.int64), (10, 4, -2, np.int32), (0, 10, 3, np.int16), (5, 5, 1, np.int64), (1, 0, 1, np.int32),
    (1.0, 5.0, 0.5, np.float32), (0.0, 1.0, 0.3, np.float64), (10.0, 4.0, -2.5, np.float32),
])
def test_range(start, limit, delta, dtype):
    out = T.range_(np.array(start, dtype), np.array(limit, dtype), np.array(delta, dtype))
    assert out.dtype == dtype
    np.testing.assert_allclose(out, np.array(_range_loop(start, limit, delta), dtype=dtype), rtol=1e-6)


def test_range_half_precision_and_zero_delta():
    out = T.range_(np.float16(0), np.float16(2050), np.float16(1))
    assert out.dtype == np.float16 and out.shape == (2050,)
    with pytest.raises(KernelError, match="delta is 0"):
        T.range_(np.int64(0), np.int64(3), np.int64(0))


# --------------------------------------------------------------------------------------------
# Dropout


def test_dropout_inference_is_identity():
    x = randn(3, 4)
    y, mask = T.dropout_7(x, ratio=0.3)
    assert y is x and mask.dtype == np.float32 and (mask == 1).all()
    y, mask = T.dropout_10(x)
    assert y is x and mask.dtype == bool and mask.all()
    y, mask = T.dropout_12(x, np.float32(0.4))
    assert y is x and mask.dtype == bool and mask.all()
    y, mask = T.dropout_12(x, np.float32(0.4), np.bool_(False))
    assert y is x


def test_dropout_training_mode_drops_and_scales():
    x = randn(30, 40)
    y, mask = T.dropout_12(x, np.float32(0.75), np.bool_(True), seed=0)
    expected_mask = np.random.RandomState(0).uniform(0, 1, x.shape) >= 0.75
    np.testing.assert_array_equal(mask, expected_mask)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, np.where(expected_mask, x * 4.0, 0.0), rtol=1e-6)
    assert 0.15 < mask.mean() < 0.35
    y, mask = T.dropout_12(x, np.float32(0.0), np.bool_(True), seed=0)
    assert y is x and mask.all()
    with pytest.raises(KernelError, match="ratio"):
        T.dropout_12(x, np.float32(1.0), np.bool_(True))


# --------------------------------------------------------------------------------------------
# Gather, Slice, Split


def test_gather_with_negative_and_2d_indices():
    data = randn(4, 5, 3)
    idx = np.array([[0, -1], [2, -5]], dtype=np.int32)
    out = T.gather(data, idx, axis=1)
    assert out.shape == (4, 2, 2, 3) and out.dtype == np.float32
    for i, (a, b), k in itertools.product(range(4), itertools.product(range(2), range(2)), range(3)):
        assert out[i, a, b, k] == data[i, idx[a, b] % 5, k]
    assert T.gather(data, np.int64(-1), axis=0).shape == (5, 3)
    with pytest.raises(KernelError, match="out of range"):
        T.gather(data, np.array([4]), axis=0)
    with pytest.raises(KernelError, match="out of range"):
        T.gather(data, np.array([-6]), axis=1)


def _slice_indices(start, end, step, size):
    """The indices one axis of Slice visits, straight from the spec's clamping rules."""
    start = start + size if start < 0 else start
    end = end + size if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), size), min(max(end, 0), size)
    else:
        start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
    out, i = [], start
    while (i < end) if step > 0 else (i > end):
        out.append(i)
        i += step
    return out


def test_slice_against_spec_loops():
    data = np.arange(7 * 6 * 5, dtype=np.int64).reshape(7, 6, 5)
    local = np.random.default_rng(1)
    for _ in range(300):
        axes = local.choice(3, size=local.integers(1, 4), replace=False)
        starts = local.integers(-12, 12, size=len(axes))
        ends = local.integers(-12, 12, size=len(axes))
        ends[local.random(len(axes)) < 0.2] = np.iinfo(np.int64).max
        ends[local.random(len(axes)) < 0.1] = np.iinfo(np.int64).min
        steps = local.choice([-3, -2, -1, 1, 2, 3], size=len(axes))
        signed_axes = [a - 3 if local.random() < 0.5 else a for a in axes]
        out = T.slice_10(data, starts, ends, np.array(signed_axes), steps)
        index = [list(range(n)) for n in data.shape]
        for a, s, e, st in zip(axes, starts, ends, steps):
            index[a] = _slice_indices(int(s), int(e), int(st), data.shape[a])
        expected = data[np.ix_(*index)]
        assert out.shape == expected.shape
        np.testing.assert_array_equal(out, expected)


def test_slice_defaults_and_errors():
    data = randn(4, 6)
    np.testing.assert_array_equal(T.slice_10(data, np.array([1, 2]), np.array([3, -1])), data[1:3, 2:5])
    np.testing.assert_array_equal(T.slice_1(data, starts=[1], ends=[100], axes=[1]), data[:, 1:])
    np.testing.assert_array_equal(T.slice_10(data, np.array([-1]), np.array([-100]), np.array([0]), np.array([-1])),
                                  data[::-1])
    with pytest.raises(KernelError, match="step 0"):
        T.slice_10(data, np.array([0]), np.array([2]), np.array([0]), np.array([0]))
    with pytest.raises(KernelError, match="repeat"):
        T.slice_10(data, np.array([0, 0]), np.array([2, 2]), np.array([0, -2]))


def test_split_versions():
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    parts = T.split_2(x, axis=1, num_outputs=3)
    assert [p.shape for p in parts] == [(2, 2)] * 3
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), x)
    parts = T.split_2(x, axis=1, split=[1, 5], num_outputs=2)
    assert [p.shape for p in parts] == [(2, 1), (2, 5)]
    parts = T.split_13(x, np.array([0, 4, 2]), axis=-1, num_outputs=3)
    assert [p.shape for p in parts] == [(2, 0), (2, 4), (2, 2)]
    np.testing.assert_array_equal(parts[2], x[:, 4:])
    parts = T.split_18(np.arange(7), num_outputs=4)
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3], [4, 5], [6]]
    parts = T.split_18(x, np.array([3, 3]), axis=1)
    assert [p.shape for p in parts] == [(2, 3), (2, 3)]


def test_split_errors():
    x = np.zeros((2, 7))
    with pytest.raises(KernelError, match="equal parts"):
        T.split_13(x, axis=1, num_outputs=3)
    with pytest.raises(KernelError, match="add up"):
        T.split_13(x, np.array([3, 3]), axis=1, num_outputs=2)
    with pytest.raises(KernelError, match="num_outputs"):
        T.split_18(x, axis=1)


# --------------------------------------------------------------------------------------------
# Pad


def _pad_loop(x, begin, end, mode, value):
    """Every output element from its source index, per mode, with plain loops."""
    out_shape = tuple(n + b + e for n, b, e in zip(x.shape, begin, end))
    out = np.empty(out_shape, dtype=x.dtype)
    for index in itertools.product(*[range(n) for n in out_shape]):
        src, inside = [], True
        for i, n, b in zip(index, x.shape, begin):
            j = i - b
            if 0 <= j < n:
                src.append(j)
            elif mode == "constant":
                inside = False
                break
            elif mode == "edge":
                src.append(0 if j < 0 else n - 1)
            elif mode == "wrap":
                src.append(j % n)
            else:  # reflect, one bounce (pads shorter than the axis)
                src.append(-j if j < 0 else 2 * (n - 1) - j)
        out[index] = x[tuple(src)] if inside else value
    return out


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes_against_loops(mode):
    x = randn(3, 4)
    pads = np.array([1, 2, 2, 3], dtype=np.int64)  # begin0, begin1, end0, end1
    out = T.pad_11(x, pads, np.float32(1.5), mode=mode)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, _pad_loop(x, (1, 2), (2, 3), mode, 1.5))


def test_pad_negative_axes_and_attribute_form():
    x = np.arange(20, dtype=np.int32).reshape(4, 5)
    out = T.pad_11(x, np.array([-1, 2], dtype=np.int64), np.int32(9), np.array([-1]))
    np.testing.assert_array_equal(out, np.concatenate([x[:, 1:], np.full((4, 2), 9, np.int32)], axis=1))
    out = T.pad_2(x, pads=[1, 0, 0, -2], value=7.0)
    assert out.dtype == np.int32 and out.shape == (5, 3) and (out[0] == 7).all()
    np.testing.assert_array_equal(out[1:], x[:, :3])
    out = T.pad_11(x, np.array([0, 1, 0, 1], dtype=np.int64))  # default constant 0
    assert (out[:, 0] == 0).all() and (out[:, -1] == 0).all()


def test_pad_errors():
    with pytest.raises(KernelError, match="pads"):
        T.pad_11(randn(2, 2), np.array([1, 1], dtype=np.int64))
    with pytest.raises(KernelError, match="mode"):
        T.pad_11(randn(2, 2), np.array([1, 1, 1, 1], dtype=np.int64), mode="mirror")
    with pytest.raises(KernelError, match="remove more"):
        T.pad_11(randn(2, 2), np.array([-2, 0, -1, 0], dtype=np.int64))


# --------------------------------------------------------------------------------------------
# Cast


def test_cast_numeric():
    x = np.array([1.7, -1.7, 0.0, 300.0], dtype=np.float32)
    out = T.cast(x, to=6)  # INT32: truncation toward zero
    assert out.dtype == np.int32 and out.tolist() == [1, -1, 0, 300]
    assert T.cast(x, to=9).tolist() == [True, True, False, True]  # BOOL
    assert T.cast(np.array([True, False]), to=1).tolist() == [1.0, 0.0]
    assert T.cast(np.array([200], dtype=np.int16), to=3).tolist() == [-56]  # INT8 wraps
    out = T.cast(x, to=11)
    assert out.dtype == np.float64
    assert T.cast(x, to=1) is x


def test_cast_bfloat16_rounds_to_nearest_even():
    x = np.array([1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8], dtype=np.float32)  # halfway cases
    out = T.cast(x, to=16)
    assert out.dtype == ml_dtypes.bfloat16
    assert out.astype(np.float32).tolist() == [1.0, 1.0 + 2 ** -6]


@pytest.mark.parametrize("code, name, limit", [(17, "float8_e4m3fn", 448.0), (18, "float8_e4m3fnuz", 240.0),
                                               (19, "float8_e5m2", 57344.0), (20, "float8_e5m2fnuz", 57344.0)])
def test_cast_float8_saturation(code, name, limit):
    x = np.array([1e6, -1e6, np.inf, -np.inf, np.nan, 0.3], dtype=np.float32)
    out = T.cast(x, to=code)
    assert out.dtype.name == name
    f = out.astype(np.float32)
    assert f[:4].tolist() == [limit, -limit, limit, -limit] and np.isnan(f[4]) and f[5] == np.float32(x[5]).astype(out.dtype)
    f = T.cast(x, to=code, saturate=0).astype(np.float32)
    if name == "float8_e5m2":
        assert f[:4].tolist() == [np.inf, -np.inf, np.inf, -np.inf]
    else:
        assert np.isnan(f[:4]).all()


def test_cast_e8m0_rounding_modes():
    x = np.array([0.124, 0.25, 1.1, 1.5, 3.0, 0.0], dtype=np.float32)

    def powers(out):
        assert out.dtype.name == "float8_e8m0fnu"
        return np.log2(out.astype(np.float32)).tolist()

    assert powers(T.cast(x, to=24))[:5] == [-3, -2, 1, 1, 2]  # up
    assert powers(T.cast(x, to=24, round_mode="down"))[:5] == [-4, -2, 0, 0, 1]
    assert powers(T.cast(x, to=24, round_mode="nearest"))[:5] == [-3, -2, 0, 1, 2]
    assert T.cast(x, to=24).view(np.uint8)[5] == 0  # zero saturates to the smallest value
    big = np.array([3e38, np.inf, np.nan], dtype=np.float32)
    assert T.cast(big, to=24).view(np.uint8).tolist() == [254, 254, 255]
    assert T.cast(big, to=24, saturate=0).view(np.uint8).tolist() == [255, 255, 255]
    with pytest.raises(KernelError, match="round_mode"):
        T.cast(x, to=24, round_mode="sideways")


def test_cast_4bit_and_back():
    x = np.arange(-8, 8, dtype=np.float32)
    out = T.cast(x, to=22)  # INT4
    assert out.dtype.name == "int4"
    assert T.cast(out, to=1).tolist() == x.tolist()
    assert T.cast(out, to=3).dtype == np.int8


def test_cast_strings():
    out = T.cast(np.array([0.5, 3.0, -2.25], dtype=np.float32), to=8)
    assert out.dtype == object and [float(v) for v in out] == [0.5, 3.0, -2.25]
    text = np.array(["1.5", "1e-5", "INF", "-inf", "NaN", "100.5"], dtype=object)
    f = T.cast(text, to=1)
    assert f.dtype == np.float32
    assert f[:2].tolist() == [1.5, np.float32(1e-5)] and f[2] == np.inf and f[3] == -np.inf and np.isnan(f[4])
    assert T.cast(np.array(["7", "-3"], dtype=object), to=7).tolist() == [7, -3]
    assert T.cast(np.array(["100.5"], dtype=object), to=7).tolist() == [100]
    with pytest.raises(KernelError, match="string"):
        T.cast(np.array(["hello"], dtype=object), to=1)


def test_cast_unknown_type():
    with pytest.raises(KernelError, match="unknown ONNX element type"):
        T.cast(randn(2), to=99)


def test_split_count_must_match_the_node_outputs():
    with pytest.raises(KernelError, match="2 outputs"):
        T.split_13(np.zeros(6), np.array([2, 2, 2]), num_outputs=2)
    with pytest.raises(KernelError, match="3 outputs"):
        T.split_2(np.zeros(6), split=[3, 3], num_outputs=3)


def test_tile_repeats_each_axis_and_refuses_bad_repeats():
    from kernels.cpu.tensor import tile
    from kernels.registry import KernelError

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(tile(x, np.array([2, 1], np.int64)), np.concatenate([x, x]))
    assert tile(x, np.array([1, 3], np.int64)).shape == (2, 9)
    with pytest.raises(KernelError, match="repeats has 1 entries for an input of rank 2"):
        tile(x, np.array([2], np.int64))
    with pytest.raises(KernelError, match="negative"):
        tile(x, np.array([1, -1], np.int64))
