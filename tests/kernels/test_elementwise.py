"""Unit tests for kernels/cpu/elementwise.py: each kernel against a naive reference in plain Python."""

import itertools
import math
import warnings

import ml_dtypes
import numpy as np
import pytest

from kernels.cpu import CPU_OPS
from kernels.cpu import elementwise as ew
from kernels.registry import KernelError

RNG = np.random.default_rng(1234)


def naive_unary(fn, x):
    """Apply a Python scalar function element by element (the oracle), in float64."""
    flat = [fn(float(v)) for v in np.asarray(x, dtype=np.float64).ravel()]
    return np.array(flat, dtype=np.float64).reshape(np.shape(x))


def naive_binary(fn, a, b):
    """Broadcast by hand with index loops, then apply a Python scalar function."""
    shape = np.broadcast_shapes(a.shape, b.shape)
    out = np.empty(shape, dtype=object)
    ea, eb = np.broadcast_to(a, shape), np.broadcast_to(b, shape)
    for index in itertools.product(*(range(n) for n in shape)):
        out[index] = fn(ea[index].item(), eb[index].item())
    return out


# ----------------------------------------------------------------------------------------------
# Registration


@pytest.mark.parametrize(
    "op_type, opset, fn",
    [
        ("Relu", 7, ew.relu), ("Relu", 28, ew.relu),
        ("Clip", 7, ew.clip_6), ("Clip", 10, ew.clip_6), ("Clip", 11, ew.clip_11), ("Clip", 13, ew.clip_11),
        ("PRelu", 7, ew.prelu), ("PRelu", 16, ew.prelu),
        ("HardSwish", 14, ew.hard_swish), ("Erf", 9, ew.erf), ("Where", 16, ew.where),
        ("Sum", 7, ew.sum_), ("Max", 12, ew.max_), ("Pow", 15, ew.pow_), ("Div", 14, ew.div),
        ("Equal", 19, ew.equal), ("Softplus", 7, ew.softplus),
    ],
)
def test_lookup_picks_the_right_version(op_type, opset, fn):
    assert CPU_OPS.lookup(op_type, opset).fn is fn


def test_ops_missing_before_they_exist():
    assert CPU_OPS.lookup("HardSwish", 13) is None
    assert CPU_OPS.lookup("Erf", 8) is None
    assert CPU_OPS.lookup("Where", 8) is None


# ----------------------------------------------------------------------------------------------
# Activations


def test_relu_keeps_dtype_and_zeroes_negatives():
    x = np.array([-3, -1, 0, 2, 5], dtype=np.int8)
    out = ew.relu(x)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, [0, 0, 0, 2, 5])


def test_leaky_relu_matches_reference():
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    out = ew.leaky_relu(x, alpha=0.3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, naive_unary(lambda v: v if v >= 0 else 0.3 * v, x), rtol=1e-6)
    np.testing.assert_allclose(ew.leaky_relu(x), naive_unary(lambda v: v if v >= 0 else 0.01 * v, x), rtol=1e-6)


@pytest.mark.parametrize("slope_shape", [(), (1,), (5,), (3, 1, 1), (1, 3, 1, 5), (2, 3, 4, 5)])
def test_prelu_unidirectional_broadcast(slope_shape):
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    slope = RNG.uniform(0.1, 0.9, slope_shape).astype(np.float32)
    expected = naive_binary(lambda v, s: v if v >= 0 else v * s, x, slope).astype(np.float64)
    out = ew.prelu(x, slope)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("slope_shape", [(3,), (2, 1, 1, 1, 1), (1, 3, 4, 5, 1), (2, 3, 4, 6)])
def test_prelu_rejects_slopes_that_do_not_broadcast_to_x(slope_shape):
    x = np.ones((2, 3, 4, 5), np.float32)
    with pytest.raises(KernelError, match=r"slope of shape .* X of shape \(2, 3, 4, 5\)"):
        ew.prelu(x, np.ones(slope_shape, np.float32))


def test_prelu_integer():
    x = np.array([[-4, 3], [2, -6]], dtype=np.int32)
    out = ew.prelu(x, np.array([2, 3], dtype=np.int32))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [[-8, 3], [2, -18]])


def _ref_sigmoid(v):
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


def test_sigmoid_stable_for_large_magnitudes():
    x = np.array([-1e4, -800, -100, -20, -1, 0, 1, 20, 100, 800, 1e4], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in exp
        out = ew.sigmoid(x)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, naive_unary(_ref_sigmoid, x), rtol=1e-6, atol=1e-40)  # subnormals
    assert out[0] == 0 and out[-1] == 1


def test_sigmoid_float64_and_float16_dtypes():
    x = np.linspace(-10, 10, 41)
    np.testing.assert_allclose(ew.sigmoid(x), naive_unary(_ref_sigmoid, x), rtol=1e-14)
    half = ew.sigmoid(x.astype(np.float16))
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, naive_unary(_ref_sigmoid, x), rtol=1e-3)


def test_tanh():
    x = RNG.standard_normal(50).astype(np.float32) * 5
    out = ew.tanh(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, naive_unary(math.tanh, x), rtol=1e-6, atol=1e-7)


def test_hard_sigmoid_and_hard_swish():
    x = np.linspace(-8, 8, 65).astype(np.float32)
    hs = ew.hard_sigmoid(x, alpha=0.25, beta=0.4)
    assert hs.dtype == np.float32
    np.testing.assert_allclose(hs, naive_unary(lambda v: min(1.0, max(0.0, 0.25 * v + 0.4)), x), rtol=1e-6)
    np.testing.assert_allclose(ew.hard_sigmoid(x), naive_unary(lambda v: min(1.0, max(0.0, 0.2 * v + 0.5)), x), rtol=1e-6)
    swish = ew.hard_swish(x)
    assert swish.dtype == np.float32
    np.testing.assert_allclose(swish, naive_unary(lambda v: v * min(1.0, max(0.0, v / 6 + 0.5)), x), rtol=1e-6, atol=1e-7)


def test_elu_no_overflow_and_matches():
    x = np.array([-50, -2, -0.5, 0, 0.5, 3, 500], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ew.elu(x, alpha=2.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, naive_unary(lambda v: v if v > 0 else 2.0 * (math.exp(v) - 1), x), rtol=1e-6)


def test_softplus_stable():
    x = np.array([-1000, -50, -1, 0, 1, 50, 1000], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ew.softplus(x)
    assert out.dtype == np.float32
    ref = naive_unary(lambda v: max(v, 0) + math.log1p(math.exp(-abs(v))), x)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    assert out[-1] == 1000 and out[0] == 0 and out[1] > 0  # exp(-50) survives, not log(1 + tiny) = 0


# ----------------------------------------------------------------------------------------------
# Unary math


def test_erf_against_math_erf_float64():
    x = np.concatenate([np.linspace(-7, 7, 20001), RNG.standard_normal(2000) * 3, [1.999999, 2.0, 2.000001, -2.0]])
    out = ew.erf(x)
    assert out.dtype == np.float64
    ref = naive_unary(math.erf, x)
    assert np.max(np.abs(out - ref)) < 1e-14


def test_erf_float32_is_correctly_rounded_to_within_an_ulp():
    x = (RNG.standard_normal(20000) * 2.5).astype(np.float32)
    out = ew.erf(x)
    assert out.dtype == np.float32
    ref = naive_unary(math.erf, x).astype(np.float32)
    assert np.max(np.abs(out.astype(np.float64) - ref)) <= 1e-7
    np.testing.assert_array_max_ulp(out, ref, maxulp=1)


def test_erf_special_values_and_shapes():
    out = ew.erf(np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30]))
    np.testing.assert_array_equal(out[:4], [0.0, 0.0, 1.0, -1.0])
    assert np.signbit(out[1]) and np.isnan(out[4])
    assert out[5] == pytest.approx(2 / math.sqrt(math.pi) * 1e-30)
    scalar = ew.erf(np.array(0.5, dtype=np.float16))
    assert scalar.shape == () and scalar.dtype == np.float16
    assert float(scalar) == pytest.approx(math.erf(0.5), abs=1e-3)


@pytest.mark.parametrize(
    "kernel, ref, low, high",
    [
        (ew.exp, math.exp, -20, 20),
        (ew.log, math.log, 1e-3, 100),
        (ew.sqrt, math.sqrt, 0, 100),
        (ew.reciprocal, lambda v: 1 / v, 0.1, 10),
    ],
)
def test_unary_float_math(kernel, ref, low, high):
    x = RNG.uniform(low, high, (4, 5)).astype(np.float32)
    out = kernel(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, naive_unary(ref, x), rtol=2e-6)


def test_unary_math_keeps_bfloat16():
    x = np.array([0.5, 1.0, 2.0], dtype=ml_dtypes.bfloat16)
    for kernel in (ew.exp, ew.log, ew.sqrt, ew.sigmoid, ew.tanh, ew.erf, ew.softplus, ew.elu):
        assert kernel(x).dtype == x.dtype, kernel.__name__
    np.testing.assert_allclose(ew.exp(x).astype(np.float32), np.exp([0.5, 1.0, 2.0]), rtol=1e-2)


def test_log_and_sqrt_edge_values():
    with np.errstate(all="ignore"):  # the runtime runs kernels like this
        out = ew.log(np.array([0.0, -1.0, np.inf], np.float32))
        root = ew.sqrt(np.array([-1.0], np.float32))
    assert out[0] == -np.inf and np.isnan(out[1]) and out[2] == np.inf
    assert np.isnan(root[0])


def test_neg_and_abs_on_integers_and_floats():
    x = np.array([-5, 0, 7], dtype=np.int16)
    assert ew.neg(x).dtype == np.int16 and ew.abs_(x).dtype == np.int16
    np.testing.assert_array_equal(ew.neg(x), [5, 0, -7])
    np.testing.assert_array_equal(ew.abs_(x), [5, 0, 7])
    f = np.array([-1.5, 2.0], np.float32)
    np.testing.assert_array_equal(ew.abs_(f), [1.5, 2.0])
    assert ew.neg(f).dtype == np.float32


# ----------------------------------------------------------------------------------------------
# Clip


def test_clip_6_attributes_and_defaults():
    x = np.array([-1e30, -2, 0.5, 3, 1e30], dtype=np.float32)
    np.testing.assert_array_equal(ew.clip_6(x, min=-1.0, max=1.0), [-1, -1, 0.5, 1, 1])
    np.testing.assert_array_equal(ew.clip_6(x), x)  # defaults: float32's whole range
    assert ew.clip_6(x).dtype == np.float32
    half = ew.clip_6(np.array([-7.0, 0.5, 7.0], np.float16), max=1.0)
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, [-7.0, 0.5, 1.0])


def test_clip_11_optional_bounds():
    x = np.array([-3.0, -0.5, 0.0, 0.5, 3.0], dtype=np.float32)
    lo, hi = np.array(-1, np.float32), np.array(1, np.float32)
    np.testing.assert_array_equal(ew.clip_11(x, lo, hi), [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_array_equal(ew.clip_11(x, None, hi), [-3, -0.5, 0, 0.5, 1])
    np.testing.assert_array_equal(ew.clip_11(x, lo), [-1, -0.5, 0, 0.5, 3])
    unclipped = ew.clip_11(x)
    np.testing.assert_array_equal(unclipped, x)
    assert unclipped is not x


def test_clip_11_min_greater_than_max_gives_max():
    x = np.array([-2.0, 0.0, 6.0], np.float32)
    np.testing.assert_array_equal(ew.clip_11(x, np.array(2, np.float32), np.array(1, np.float32)), [1, 1, 1])


def test_clip_11_integers():
    x = np.array([-128, -5, 0, 5, 127], dtype=np.int8)
    out = ew.clip_11(x, np.array(-4, np.int8), np.array(100, np.int8))
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, [-4, -4, 0, 5, 100])
    np.testing.assert_array_equal(ew.clip_11(x, None, np.array(0, np.int8)), [-128, -5, 0, 0, 0])


def test_clip_11_shape_one_bound_keeps_rank_zero_input():
    out = ew.clip_11(np.array(5.0, np.float32), np.array([0.0], np.float32), np.array([1.0], np.float32))
    assert out.shape == () and out == 1.0


def test_clip_11_rejects_non_scalar_bound_and_dtype_mismatch():
    x = np.zeros(3, np.float32)
    with pytest.raises(KernelError, match=r"'min' must be a scalar, got shape \(2,\)"):
        ew.clip_11(x, np.zeros(2, np.float32))
    with pytest.raises(KernelError, match="'max' has dtype float64"):
        ew.clip_11(x, None, np.array(1.0))


# ----------------------------------------------------------------------------------------------
# Binary arithmetic


@pytest.mark.parametrize(
    "kernel, ref",
    [(ew.add, lambda a, b: a + b), (ew.sub, lambda a, b: a - b), (ew.mul, lambda a, b: a * b),
     (ew.div, lambda a, b: a / b)],
)
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 4)), ((), (2, 2))])
def test_float_arithmetic_broadcasts(kernel, ref, shapes):
    a = RNG.standard_normal(shapes[0]).astype(np.float32)
    b = RNG.uniform(0.5, 2.0, shapes[1]).astype(np.float32)
    out = kernel(a, b)
    assert out.dtype == np.float32
    expected = naive_binary(ref, a, b).astype(np.float64)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint32, np.int64])
def test_integer_arithmetic_keeps_dtype(dtype):
    a = np.array([[10, 20, 30]], dtype=dtype)
    b = np.array([[3], [7]], dtype=dtype)
    for kernel in (ew.add, ew.mul, ew.div):
        assert kernel(a, b).dtype == dtype
    np.testing.assert_array_equal(ew.div(a, b), [[3, 6, 10], [1, 2, 4]])


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
def test_integer_division_truncates_toward_zero(dtype):
    values = np.arange(-20, 21, dtype=dtype)
    divisors = np.array([v for v in range(-7, 8) if v], dtype=dtype)
    a, b = values[:, None], divisors[None, :]
    out = ew.div(a, b)
    assert out.dtype == dtype
    expected = naive_binary(lambda p, q: math.trunc(p / q), a, b).astype(np.int64)
    np.testing.assert_array_equal(out, expected)


def test_integer_division_of_large_int64_is_exact():
    a = np.array([2**62 + 1, -(2**62 + 3)], dtype=np.int64)
    b = np.array([3, 3], dtype=np.int64)
    np.testing.assert_array_equal(ew.div(a, b), [(2**62 + 1) // 3, -((2**62 + 3) // 3)])


def test_binary_shape_mismatch_names_shapes():
    with pytest.raises(KernelError, match=r"Add: input shapes \(2, 3\), \(4,\) do not broadcast"):
        ew.add(np.zeros((2, 3), np.float32), np.zeros(4, np.float32))


def test_binary_dtype_mismatch_is_rejected_not_promoted():
    with pytest.raises(KernelError, match="float32 .* and float64"):
        ew.mul(np.zeros(2, np.float32), np.zeros(2, np.float64))


# ----------------------------------------------------------------------------------------------
# Pow


def test_pow_float_base_float_exponent():
    base = RNG.uniform(0.1, 3, (2, 3)).astype(np.float32)
    exponent = np.array([0.5, 2.0, -1.5], np.float32)
    out = ew.pow_(base, exponent)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, naive_binary(math.pow, base, exponent).astype(np.float64), rtol=1e-6)


@pytest.mark.parametrize("exp_dtype", [np.int32, np.int64, np.uint64, np.float64, np.float16])
def test_pow_output_has_base_dtype(exp_dtype):
    base = np.array([1.5, 2.0, 3.0], np.float32)
    exponent = np.array([2, 3, 1], dtype=exp_dtype)
    out = ew.pow_(base, exponent)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [2.25, 8.0, 3.0])


def test_pow_integer_base_float_exponent_truncates():
    out = ew.pow_(np.array([1, 2, 3, 4], np.int32), np.array([4.0, 0.5, 5.0, 0.5], np.float32))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [1, 1, 243, 2])


def test_pow_integer_base_integer_exponent():
    base = np.array([[2], [-3], [1], [-1], [0]], np.int64)
    exponent = np.array([0, 1, 3, 40, -1, -2], np.int64)
    out = ew.pow_(base, exponent)
    assert out.dtype == np.int64

    def wrapped_int64(b, e):
        exact = math.trunc(b**e) if e >= 0 or b != 0 else 0
        return (exact + 2**63) % 2**64 - 2**63  # int64 arithmetic wraps

    expected = naive_binary(wrapped_int64, base, exponent)
    np.testing.assert_array_equal(out, expected.astype(np.int64))
    wrapped = ew.pow_(np.array([3], np.uint8), np.array([5], np.uint8))
    assert wrapped.dtype == np.uint8 and wrapped[0] == 243
    assert ew.pow_(np.array([2], np.int32), np.array([31], np.int64))[0] == np.int32(-(2**31))


def test_pow_broadcast_error():
    with pytest.raises(KernelError, match="Pow"):
        ew.pow_(np.ones((2, 3), np.float32), np.ones((2,), np.float32))


# ----------------------------------------------------------------------------------------------
# Variadic


def test_sum_max_min_mean_broadcast():
    a = RNG.standard_normal((2, 3, 1)).astype(np.float32)
    b = RNG.standard_normal((3, 4)).astype(np.float32)
    c = RNG.standard_normal((1,)).astype(np.float32)
    shape = (2, 3, 4)
    ea, eb, ec = (np.broadcast_to(x, shape).astype(np.float64) for x in (a, b, c))
    for kernel, expected in [
        (ew.sum_, ea + eb + ec),
        (ew.max_, np.fmax(np.fmax(ea, eb), ec)),
        (ew.min_, np.fmin(np.fmin(ea, eb), ec)),
        (ew.mean, (ea + eb + ec) / 3),
    ]:
        out = kernel(a, b, c)
        assert out.dtype == np.float32 and out.shape == shape
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_variadic_single_input_is_a_copy():
    x = np.array([1.0, 2.0], np.float32)
    for kernel in (ew.sum_, ew.max_, ew.min_, ew.mean):
        out = kernel(x)
        np.testing.assert_array_equal(out, x)
        assert not np.shares_memory(out, x)


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int32, np.uint64])
def test_max_min_integers(dtype):
    a = np.array([1, 9, 3], dtype=dtype)
    b = np.array([4, 2, 8], dtype=dtype)
    c = np.array([5], dtype=dtype)
    assert ew.max_(a, b, c).dtype == dtype
    np.testing.assert_array_equal(ew.max_(a, b, c), [5, 9, 8])
    np.testing.assert_array_equal(ew.min_(a, b, c), [1, 2, 3])


def test_max_min_propagate_nan():
    a = np.array([np.nan, 1.0], np.float32)
    b = np.array([0.0, np.nan], np.float32)
    assert np.isnan(ew.max_(a, b)).all() and np.isnan(ew.min_(a, b)).all()


def test_variadic_errors():
    with pytest.raises(KernelError, match="at least one input"):
        ew.sum_()
    with pytest.raises(KernelError, match=r"\(2,\), \(3,\)"):
        ew.max_(np.zeros(2, np.float32), np.zeros(3, np.float32))
    with pytest.raises(KernelError, match="one element type"):
        ew.mean(np.zeros(2, np.float32), np.zeros(2, np.float16))


# ----------------------------------------------------------------------------------------------
# Comparisons and Where


def test_comparisons_give_bool_and_broadcast():
    a = np.array([[1, 5, 3]], np.int32)
    b = np.array([[3], [5]], np.int32)
    for kernel, ref in [(ew.equal, lambda p, q: p == q), (ew.greater, lambda p, q: p > q), (ew.less, lambda p, q: p < q)]:
        out = kernel(a, b)
        assert out.dtype == np.bool_ and out.shape == (2, 3)
        np.testing.assert_array_equal(out, naive_binary(ref, a, b).astype(bool))


def test_equal_on_bools_and_strings():
    np.testing.assert_array_equal(ew.equal(np.array([True, False]), np.array([True, True])), [True, False])
    s = ew.equal(np.array(["a", "b"], dtype=object), np.array(["a", "c"], dtype=object))
    assert s.dtype == np.bool_
    np.testing.assert_array_equal(s, [True, False])


def test_comparison_with_nan_is_false():
    a = np.array([np.nan], np.float32)
    assert not ew.equal(a, a)[0] and not ew.greater(a, a)[0] and not ew.less(a, a)[0]


def test_where_broadcasts_three_ways():
    cond = np.array([[True], [False]])
    x = np.array([1, 2, 3], np.int64)
    y = np.array(-1, np.int64)
    out = ew.where(cond, x, y)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[1, 2, 3], [-1, -1, -1]])


def test_where_errors():
    with pytest.raises(KernelError, match="condition must be bool"):
        ew.where(np.array([1, 0]), np.zeros(2, np.float32), np.zeros(2, np.float32))
    with pytest.raises(KernelError, match="one element type"):
        ew.where(np.array([True]), np.zeros(1, np.float32), np.zeros(1, np.int32))
    with pytest.raises(KernelError, match=r"\(2,\), \(3,\), \(1,\)"):
        ew.where(np.array([True, False]), np.zeros(3, np.float32), np.zeros(1, np.float32))


def test_selu_shrink_sign_against_direct_formulas():
    from kernels.cpu.elementwise import selu, shrink, sign

    x = np.array([-3.0, -0.4, 0.0, 0.3, 2.0], np.float32)
    alpha, gamma = 1.67326319217681884765625, 1.05070102214813232421875
    want = gamma * np.where(x > 0, x, alpha * (np.exp(x) - 1))
    np.testing.assert_allclose(selu(x), want, rtol=1e-6)
    assert selu(x).dtype == np.float32
    np.testing.assert_array_equal(shrink(x, bias=0.1, lambd=0.35), np.array([-2.9, -0.3, 0, 0, 1.9], np.float32))
    assert shrink(np.array([-5, 0, 5], np.int32), bias=1, lambd=2).tolist() == [-4, 0, 4]
    np.testing.assert_array_equal(sign(np.array([-2.5, 0.0, 7.0], np.float32)), [-1, 0, 1])
    assert sign(np.array([-3, 4], np.int64)).dtype == np.int64
