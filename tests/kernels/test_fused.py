"""Fused-layer kernels (FusedConv, FusedGemm, ElementwiseChain) and the in-place activations,
checked against compositions of the standalone ONNX kernels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.cpu import CPU_OPS
from kernels.cpu import conv as conv_ops
from kernels.cpu import elementwise as ew
from kernels.cpu import gemm as gemm_ops
from kernels.cpu.activations import ACTIVATIONS, activation_from_onnx, apply_activation
from kernels.cpu.fused import elementwise_chain, fused_conv, fused_gemm
from kernels.registry import KernelError

RNG = np.random.default_rng(11)

# Each activation with params, and the standalone kernels that compute it.
CASES = {
    "Relu": ([], lambda x: ew.relu(x)),
    "LeakyRelu": ([0.2], lambda x: ew.leaky_relu(x, alpha=0.2)),
    "Clip": ([0.0, 6.0], lambda x: ew.clip_11(x, np.array(0, x.dtype), np.array(6, x.dtype))),
    "Sigmoid": ([], lambda x: ew.sigmoid(x)),
    "HardSigmoid": ([0.3, 0.4], lambda x: ew.hard_sigmoid(x, alpha=0.3, beta=0.4)),
    "HardSwish": ([], lambda x: ew.hard_swish(x)),
    "SiLU": ([], lambda x: ew.mul(x, ew.sigmoid(x))),
    "Tanh": ([], lambda x: ew.tanh(x)),
    "Elu": ([0.7], lambda x: ew.elu(x, alpha=0.7)),
    "Softplus": ([], lambda x: ew.softplus(x)),
}


def _data(shape, dtype=np.float32, scale=4.0) -> np.ndarray:
    x = (RNG.standard_normal(shape) * scale).astype(dtype)
    flat = x.reshape(-1)
    special = [0.0, -0.0, 30.0, -30.0]  # zeros and saturating values
    flat[:len(special)] = special[:flat.size]
    return x


def test_every_contract_activation_has_a_case():
    assert set(CASES) == set(ACTIVATIONS)


# -------------------------------------------------------------------- activations


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_in_place_matches_standalone_bit_for_bit(name, dtype):
    params, standalone = CASES[name]
    x = _data((3, 5, 7), dtype)
    want = standalone(x)
    y = x.copy()
    got = apply_activation(y, name, params)
    assert got is y  # in place
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", sorted(CASES))
def test_activation_into_strided_out_leaves_input_alone(name):
    params, standalone = CASES[name]
    x = _data((4, 6))
    before = x.copy()
    arena = np.full((4, 12), 99.0, np.float32)
    out = arena[:, ::2]  # a strided view
    got = apply_activation(x, name, params, out=out)
    assert got is out
    np.testing.assert_array_equal(out, standalone(before))
    np.testing.assert_array_equal(x, before)
    assert (arena[:, 1::2] == 99.0).all()  # nothing written between the view's elements


@pytest.mark.parametrize("name", sorted(CASES))
def test_activation_float16_follows_the_standalone_kernel(name):
    params, standalone = CASES[name]
    x = _data((2, 9), np.float16)
    got = apply_activation(x.copy(), name, params)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, standalone(x))


def test_activation_nan_propagates_like_the_standalone_kernels():
    x = np.array([np.nan, -1.0, 1.0], np.float32)
    for name, (params, standalone) in CASES.items():
        got = apply_activation(x.copy(), name, params)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(standalone(x)), err_msg=name)


def test_activation_defaults_and_identity():
    x = _data((10,))
    np.testing.assert_array_equal(apply_activation(x.copy(), "LeakyRelu", []), ew.leaky_relu(x))
    np.testing.assert_array_equal(apply_activation(x.copy(), "Elu", None), ew.elu(x))
    out = np.empty_like(x)
    assert apply_activation(x, "", [], out=out) is out
    np.testing.assert_array_equal(out, x)
    # An open Clip bound (-inf / +inf) leaves infinities alone, as Clip-11 with an omitted bound does.
    inf = np.array([-np.inf, -1, 1, np.inf], np.float32)
    np.testing.assert_array_equal(apply_activation(inf.copy(), "Clip", [-math.inf, 0.5]),
                                  ew.clip_11(inf, None, np.array(0.5, np.float32)))


def test_activation_errors():
    x = np.zeros(3, np.float32)
    with pytest.raises(KernelError, match="unknown activation 'Swish'"):
        apply_activation(x, "Swish", [])
    with pytest.raises(KernelError, match="takes 1 params"):
        apply_activation(x, "LeakyRelu", [0.1, 0.2])
    with pytest.raises(KernelError, match="out is"):
        apply_activation(x, "Relu", [], out=np.zeros(4, np.float32))


def test_activation_from_onnx_table():
    assert activation_from_onnx("Relu", {}) == ("Relu", [])
    assert activation_from_onnx("LeakyRelu", {}) == ("LeakyRelu", [0.01])
    assert activation_from_onnx("LeakyRelu", {"alpha": 0.25}) == ("LeakyRelu", [0.25])
    assert activation_from_onnx("HardSigmoid", {"beta": 0.25}) == ("HardSigmoid", [0.2, 0.25])
    assert activation_from_onnx("Elu", {}) == ("Elu", [1.0])
    for op_type in ("Sigmoid", "Tanh", "HardSwish", "Softplus"):
        assert activation_from_onnx(op_type, {}) == (op_type, [])
    # Clip before opset 11: attributes, defaulting to float32's range.
    assert activation_from_onnx("Clip", {"min": 0.0, "max": 6.0}) == ("Clip", [0.0, 6.0])
    assert activation_from_onnx("Clip", {"max": 6.0}) == ("Clip", [-3.4028234663852886e38, 6.0])
    # Clip-11: constant inputs; an omitted bound is open.
    six = np.array(6, np.float32)
    assert activation_from_onnx("Clip", {}, [np.array(0, np.float32), six]) == ("Clip", [0.0, 6.0])
    assert activation_from_onnx("Clip", {}, [None, six]) == ("Clip", [-math.inf, 6.0])
    assert activation_from_onnx("Clip", {}, [np.zeros(2, np.float32), six]) is None  # not a scalar
    assert activation_from_onnx("Softmax", {"axis": 1}) is None


# -------------------------------------------------------------------- FusedConv


def _conv_case(n=2, c=4, m=6, size=7, k=3, group=1, dtype=np.float32):
    x = _data((n, c, size, size), dtype, scale=1.0)
    w = _data((m, c // group, k, k), dtype, scale=0.5)
    b = _data((m,), dtype, scale=1.0)
    attrs = dict(pads=[1, 1, 1, 1], strides=[1, 1], kernel_shape=[k, k], group=group)
    return x, w, b, attrs


@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_conv_matches_conv_add_activation(name):
    params, standalone = CASES[name]
    x, w, b, attrs = _conv_case()
    y = conv_ops.conv(x, w, b, **attrs)
    z = _data(y.shape, scale=1.0)
    want = standalone(ew.add(y, z))
    got = fused_conv(x, w, b, z, **attrs, activation=name, activation_params=params, residual=1)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_fused_conv_without_bias_or_activation_is_the_conv():
    x, w, _, attrs = _conv_case(group=2, m=4)
    np.testing.assert_array_equal(fused_conv(x, w, **attrs), conv_ops.conv(x, w, **attrs))


def test_fused_conv_strided_out():
    x, w, b, attrs = _conv_case()
    want = ew.relu(conv_ops.conv(x, w, b, **attrs))
    arena = np.zeros((2, 12, 7, 7), np.float32)
    out = arena[:, 3:9]  # a channel window of a bigger tensor, as an elided concat gives
    got = fused_conv(x, w, b, **attrs, activation="Relu", out=out)
    assert got is out
    np.testing.assert_array_equal(arena[:, 3:9], want)
    assert not arena[:, :3].any() and not arena[:, 9:].any()


def test_fused_conv_hands_out_to_a_conv_kernel_that_takes_it(monkeypatch):
    """Once conv.py's kernel grows `out=`, FusedConv lets it write the arena directly."""
    import kernels.cpu.fused as fused_module

    real, received = conv_ops.conv, []

    def conv_with_out(x, w, b=None, *, out=None, **attrs):
        received.append(out)
        y = real(x, w, b, **attrs)
        if out is None:
            return y
        np.copyto(out, y)
        return out

    monkeypatch.setattr(fused_module, "_CONV_TAKES_OUT", True)
    monkeypatch.setattr(fused_module.conv_ops, "conv", conv_with_out)
    x, w, b, attrs = _conv_case()
    z = _data((2, 6, 7, 7), scale=1.0)
    want = ew.hard_swish(ew.add(real(x, w, b, **attrs), z))
    arena = np.zeros((2, 8, 7, 7), np.float32)
    got = fused_conv(x, w, b, z, **attrs, activation="HardSwish", residual=1, out=arena[:, 1:7])
    assert received[0] is not None and np.shares_memory(received[0], arena)
    assert np.shares_memory(got, arena)
    np.testing.assert_array_equal(arena[:, 1:7], want)
    assert not arena[:, 0].any() and not arena[:, 7].any()


def test_fused_conv_output_splits_are_views_with_their_own_activations():
    x, w, b, attrs = _conv_case(m=7)
    y = conv_ops.conv(x, w, b, **attrs)
    outs = fused_conv(x, w, b, **attrs, output_splits=[2, 4, 1],
                      split_activations=[["Relu", []], ["", []], ["Clip", [0.0, 0.5]]])
    assert isinstance(outs, tuple) and [o.shape[1] for o in outs] == [2, 4, 1]
    assert all(o.base is not None and o.base is outs[0].base for o in outs)  # views of one result
    np.testing.assert_array_equal(outs[0], ew.relu(y[:, :2]))
    np.testing.assert_array_equal(outs[1], y[:, 2:6])
    np.testing.assert_array_equal(outs[2], ew.clip_6(y[:, 6:], min=0.0, max=0.5))


def test_fused_conv_splits_share_activation_residual_and_out_per_split():
    x, w, b, attrs = _conv_case(m=5)
    y = conv_ops.conv(x, w, b, **attrs)
    z = _data(y.shape, scale=1.0)
    want = ew.sigmoid(ew.add(y, z))
    first = np.zeros((2, 3, 7, 7), np.float32)
    arena = np.zeros((2, 9, 7, 7), np.float32)
    second = arena[:, 4:7]  # a strided view
    outs = fused_conv(x, w, b, z, **attrs, activation="Sigmoid", residual=1, output_splits=[3, 2],
                      out=[first[:, :3], second[:, :2]])
    np.testing.assert_array_equal(outs[0], want[:, :3])
    np.testing.assert_array_equal(outs[1], want[:, 3:])
    assert outs[0].base is first and np.shares_memory(outs[1], arena)
    np.testing.assert_array_equal(arena[:, 4:6], want[:, 3:])
    # One full-shape out: the splits are views of it.
    full = np.zeros((2, 5, 7, 7), np.float32)
    outs = fused_conv(x, w, b, z, **attrs, activation="Sigmoid", residual=1, output_splits=[3, 2], out=full)
    np.testing.assert_array_equal(full, want)
    assert all(np.shares_memory(o, full) for o in outs)


def test_fused_conv_float16_and_1d():
    x, w, b, attrs = _conv_case(dtype=np.float16)
    got = fused_conv(x, w, b, **attrs, activation="Tanh")
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), ew.tanh(conv_ops.conv(x, w, b, **attrs)).astype(np.float32),
                               atol=2e-3)
    x1, w1 = _data((2, 3, 10)), _data((4, 3, 3))
    np.testing.assert_array_equal(fused_conv(x1, w1, activation="Relu", strides=[2]),
                                  ew.relu(conv_ops.conv(x1, w1, strides=[2])))


def test_fused_conv_errors():
    x, w, b, attrs = _conv_case()
    with pytest.raises(KernelError, match="residual=1 but input Z"):
        fused_conv(x, w, b, **attrs, residual=1)
    with pytest.raises(KernelError, match="residual=0"):
        fused_conv(x, w, b, np.zeros((2, 6, 7, 7), np.float32), **attrs)
    with pytest.raises(KernelError, match="do not add up"):
        fused_conv(x, w, b, **attrs, output_splits=[2, 2])
    with pytest.raises(KernelError, match="2 split_activations for 3"):
        fused_conv(x, w, b, **attrs, output_splits=[2, 2, 2], split_activations=[["", []], ["", []]])
    with pytest.raises(KernelError, match="residual Z"):
        fused_conv(x, w, b, np.zeros((2, 6, 3, 3), np.float32), **attrs, residual=1)
    with pytest.raises(KernelError, match="unknown activation"):
        fused_conv(x, w, b, **attrs, activation="Gelu")
    with pytest.raises(KernelError, match="channels"):  # the conv kernel's own checks still apply
        fused_conv(x[:, :3], w, b, **attrs)


# -------------------------------------------------------------------- FusedGemm


@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_gemm_matches_gemm_activation(name):
    params, standalone = CASES[name]
    a, b, c = _data((5, 8), scale=1.0), _data((3, 8), scale=1.0), _data((3,), scale=1.0)
    want = standalone(gemm_ops.gemm_11(a, b, c, alpha=0.5, beta=2.0, transB=1))
    got = fused_gemm(a, b, c, alpha=0.5, beta=2.0, transB=1, activation=name, activation_params=params)
    np.testing.assert_array_equal(got, want)


def test_fused_gemm_is_matmul_plus_add():
    a, b, bias = _data((4, 6), scale=1.0), _data((6, 5), scale=1.0), _data((1, 5), scale=1.0)
    want = ew.relu(ew.add(gemm_ops.matmul(a, b), bias))
    np.testing.assert_array_equal(fused_gemm(a, b, bias, activation="Relu"), want)
    at = np.ascontiguousarray(a.T)
    np.testing.assert_array_equal(fused_gemm(at, b, transA=1), gemm_ops.matmul(a, b))


def test_fused_gemm_out_strided_view_and_float16():
    a, b, c = _data((4, 6), scale=1.0), _data((6, 5), scale=1.0), _data((5,), scale=1.0)
    want = ew.elu(gemm_ops.gemm_11(a, b, c))
    arena = np.zeros((4, 10), np.float32)
    got = fused_gemm(a, b, c, activation="Elu", activation_params=[1.0], out=arena[:, ::2])
    assert np.shares_memory(got, arena)
    np.testing.assert_allclose(arena[:, ::2], want, rtol=1e-6, atol=1e-6)
    assert not arena[:, 1::2].any()
    h = [v.astype(np.float16) for v in (a, b, c)]
    got16 = fused_gemm(*h, activation="Sigmoid")
    assert got16.dtype == np.float16
    np.testing.assert_array_equal(got16, ew.sigmoid(gemm_ops.gemm_11(*h)))


def test_fused_gemm_errors():
    a, b = np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32)
    with pytest.raises(KernelError, match="inner dimensions"):
        fused_gemm(a, b)
    with pytest.raises(KernelError, match="2-D"):
        fused_gemm(np.zeros((2, 2, 3), np.float32), b)
    with pytest.raises(KernelError, match="does not broadcast"):
        fused_gemm(a, np.zeros((3, 5), np.float32), np.zeros((3, 5), np.float32))
    with pytest.raises(KernelError, match="floating-point"):
        fused_gemm(a.astype(np.int32), np.zeros((3, 5), np.int32))
    with pytest.raises(KernelError, match="out is"):
        fused_gemm(a, np.zeros((3, 5), np.float32), out=np.zeros((2, 4), np.float32))


# -------------------------------------------------------------------- ElementwiseChain


def _key(op_type: str, opset: int = 17) -> str:
    return CPU_OPS.lookup(op_type, opset).key


def test_chain_bn_affine_relu_in_place():
    x = _data((2, 4, 3, 3))
    scale, shift = _data((4, 1, 1)), _data((4, 1, 1))
    steps = [[_key("Mul"), [-1, 1], {}], [_key("Add"), [-1, 2], {}], [_key("Relu"), [-1], {}]]
    want = ew.relu(ew.add(ew.mul(x, scale), shift))
    before = x.copy()
    got = elementwise_chain(x, scale, shift, steps=steps)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(x, before)  # X is never written
    arena = np.zeros((2, 8, 3, 3), np.float32)
    got = elementwise_chain(x, scale, shift, steps=steps, out=arena[:, 2:6])
    np.testing.assert_array_equal(arena[:, 2:6], want)
    assert not arena[:, :2].any() and not arena[:, 6:].any()


def test_chain_operand_order_and_registry_kernels():
    x = _data((3, 5), scale=1.0)
    c = np.abs(_data((5,), scale=1.0)) + np.float32(0.5)
    steps = [
        [_key("Sub"), [1, -1], {}],             # c - x
        [_key("Clip"), [-1, 2, 3], {}],         # Clip-13 with bound inputs
        [_key("LeakyRelu"), [-1], {"alpha": 0.3}],
        [_key("Pow"), [-1, 4], {}],             # an int exponent keeps the base's type
        [_key("Mul"), [-1, -1], {}],            # squaring reads the running value twice
        [_key("Exp"), [-1], {}],
        [_key("Div"), [5, -1], {}],             # X again as an operand: c2 / running
    ]
    lo, hi = np.array(-1, np.float32), np.array(2, np.float32)
    two = np.array(2, np.int64)
    want = ew.sub(c, x)
    want = ew.clip_11(want, lo, hi)
    want = ew.leaky_relu(want, alpha=0.3)
    want = ew.pow_(want, two)
    want = ew.mul(want, want)
    want = ew.exp(want)
    want = ew.div(x, want)
    got = elementwise_chain(x, c, lo, hi, two, x, steps=steps)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    out = np.empty((3, 10), np.float32)[:, 1::2]
    assert elementwise_chain(x, c, lo, hi, two, x, steps=steps, out=out) is out
    np.testing.assert_array_equal(out, want)


def test_chain_float16_and_narrow_types_use_the_registry():
    x = _data((4, 4), np.float16, scale=1.0)
    c = _data((4,), np.float16, scale=1.0)
    steps = [[_key("Add"), [-1, 1], {}], [_key("Sigmoid"), [-1], {}]]
    got = elementwise_chain(x, c, steps=steps)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, ew.sigmoid(ew.add(x, c)))


def test_chain_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(KernelError, match="lacks"):
        elementwise_chain(x, steps=[["Nope-1", [-1], {}]])
    with pytest.raises(KernelError, match="reads inputs"):
        elementwise_chain(x, steps=[[_key("Add"), [-1, 2], {}]])
    with pytest.raises(KernelError, match="keep X's shape"):
        elementwise_chain(x, np.zeros((4, 2, 3), np.float32), steps=[[_key("Add"), [-1, 1], {}]])
    with pytest.raises(KernelError, match="no steps"):
        elementwise_chain(x, steps=[])
    with pytest.raises(KernelError, match="must be \\[kernel_key"):
        elementwise_chain(x, steps=[["Relu-6", [-1]]])
    with pytest.raises(KernelError, match="out has shape"):
        elementwise_chain(x, steps=[[_key("Relu"), [-1], {}]], out=np.zeros((3, 2), np.float32))
