"""Scale folding: Mul / Add / Sub by per-channel constants into the Conv / Gemm / MatMul before them,
and runs of constant Mul / Add merged into one Mul + Add."""

import copy
import logging

import numpy as np
import pytest

from engine.ir import Graph, Node
from engine.network import Network
from engine.passes.bn_folding import fold_batch_norm
from engine.passes.scale_folding import fold_scales
from tests.passes.folding_util import count, fold_constants, light_model, with_probed_shapes
from tests.passes.util import assert_same_outputs, random_feeds

RNG = np.random.default_rng(1)


def _w(*shape):
    return (RNG.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def _c(*shape):
    return RNG.uniform(0.5, 1.5, shape).astype(np.float32) * RNG.choice([-1, 1], shape).astype(np.float32)


def _folded(graph: Graph) -> Graph:
    out = fold_scales(copy.deepcopy(graph))
    out.validate()
    return out


def _node(graph: Graph, name: str) -> Node:
    return next(n for n in graph.nodes if n.name == name)


def _conv_net(opset=13, bias=True):
    net = Network("t", opset=opset)
    x = net.input("x", (None, 3, 6, 6))
    y = net.conv(x, _w(4, 3, 3, 3), _c(4) if bias else None, pad=1, name="conv")
    return net, y


# ------------------------------------------------------------------ folding into the producer

def test_conv_mul_add_relu_folds_into_the_conv():
    net, y = _conv_net(bias=False)
    y = net.mul(y, _c(4, 1, 1), name="scale")
    y = net.add(y, _c(1, 4, 1, 1), name="shift")
    net.output(net.relu(y, name="relu"), "out")
    graph = net.graph()
    folded = _folded(graph)
    assert [n.op_type for n in folded.nodes] == ["Conv", "Relu"]
    conv = _node(folded, "conv")
    assert conv.members == ["conv", "scale", "shift"] and conv.outputs == ["shift_out"]
    assert folded.value(conv.inputs[2]).const.shape == (4,)
    assert_same_outputs(graph, folded, random_feeds(graph))


@pytest.mark.parametrize("form", ["scalar", "constant first", "sub", "1-d scalar"])
def test_scalar_and_reversed_operands(form):
    net, y = _conv_net()
    if form == "scalar":
        y = net.mul(y, np.float32(0.5), name="op")
    elif form == "1-d scalar":
        y = net.add(y, _c(1), name="op")
    elif form == "constant first":
        y = net.mul(_c(4, 1, 1), y, name="op")
    else:
        y = net.sub(y, _c(4, 1, 1), name="op")
    net.output(y, "out")
    graph = net.graph()
    folded = _folded(graph)
    assert [n.op_type for n in folded.nodes] == ["Conv"] and folded.outputs == ["out"]
    assert_same_outputs(graph, folded, random_feeds(graph))


def test_conv_bn_scale_chain_folds_completely():
    """The Caffe-era BatchNorm + Scale pair, as the light_* models have it."""
    net, y = _conv_net()
    y = net.batch_norm(y, RNG.uniform(0.5, 2, 4), _c(4), _c(4), RNG.uniform(0.5, 2, 4), name="bn")
    y = net.mul(y, _c(4, 1, 1), name="scale")
    y = net.add(y, _c(4, 1, 1), name="shift")
    net.output(net.relu(y, name="relu"), "out")
    graph = net.graph()
    folded = fold_scales(fold_batch_norm(copy.deepcopy(graph)))
    folded.validate()
    assert [n.op_type for n in folded.nodes] == ["Conv", "Relu"]
    assert _node(folded, "conv").members == ["conv", "bn", "scale", "shift"]
    assert_same_outputs(graph, folded, random_feeds(graph))


def test_conv_transpose_mul_folds():
    net = Network("t")
    x = net.input("x", (None, 4, 3, 3))
    y = net.op("ConvTranspose", [x, _w(4, 1, 2, 2)], {"group": 2, "strides": [2, 2]}, name="up")
    y = net.add(net.mul(y, _c(2, 1, 1), name="scale"), _c(2, 1, 1), name="shift")
    net.output(y, "out")
    graph = net.graph()
    folded = _folded(graph)
    assert [n.op_type for n in folded.nodes] == ["ConvTranspose"]
    assert_same_outputs(graph, folded, random_feeds(graph))


@pytest.mark.parametrize("trans_b, bias", [(True, True), (False, False)])
def test_gemm_mul_add_folds(trans_b, bias):
    net = Network("t")
    x = net.input("x", (None, 6))
    y = net.gemm(x, _w(5, 6) if trans_b else _w(6, 5), _c(1, 5) if bias else None, trans_b=trans_b, beta=0.5,
                 name="fc")
    y = net.add(net.mul(y, _c(5), name="scale"), _c(1, 5), name="shift")
    net.output(y, "out")
    graph = net.graph()
    folded = _folded(graph)
    assert [n.op_type for n in folded.nodes] == ["Gemm"] and folded.nodes[0].attrs["beta"] == 1.0
    assert_same_outputs(graph, folded, random_feeds(graph, batch=3))


def test_matmul_mul_folds_and_a_2d_add_makes_it_a_gemm():
    net = Network("t")
    x = net.input("x", (None, 6))
    y = net.add(net.mul(net.op("MatMul", [x, _w(6, 5)], name="mm"), _c(5), name="scale"), _c(5), name="shift")
    net.output(y, "out")
    graph = net.graph()
    folded = _folded(graph)
    assert [n.op_type for n in folded.nodes] == ["Gemm"] and folded.nodes[0].members == ["mm", "scale", "shift"]
    assert_same_outputs(graph, folded, random_feeds(graph, batch=3))

    # A 3-D MatMul takes the Mul (on its last axis) but has no bias for the Add.
    net = Network("t")
    x = net.input("x", (None, 2, 6))
    y = net.add(net.mul(net.op("MatMul", [x, _w(6, 5)], name="mm"), _c(5), name="scale"), _c(5), name="shift")
    net.output(y, "out")
    graph = net.graph()
    folded = _folded(graph)
    assert [n.op_type for n in folded.nodes] == ["MatMul", "Add"]
    assert_same_outputs(graph, folded, random_feeds(graph, batch=3))


# ------------------------------------------------------------------ refusals

@pytest.mark.parametrize("case, reason", [
    ("spatial", "varies over axis 3, not only over the output channels"),
    ("batch", "varies over the batch axis"),
    ("too many axes", "has more axes than the 4-D output"),
    ("dtype", "its constant is float64 but 'conv_out' is float32"),
    ("two readers", "'conv_out' (Conv 'conv') is also read by ['relu']"),
    ("graph output", "'conv_out' (Conv 'conv') is a graph output"),
    ("c - x", "subtracts from a constant (c - x)"),
])
def test_refusals(case, reason, caplog):
    net = Network("t")
    x = net.input("x", (2, 3, 6, 6))
    y = net.conv(x, _w(4, 3, 3, 3), pad=1, name="conv")
    constant = {"spatial": _c(4, 1, 6), "batch": _c(2, 1, 1, 1), "too many axes": _c(1, 1, 4, 1, 1)}.get(case, _c(4, 1, 1))
    out = net.sub(constant, y, name="op") if case == "c - x" else net.mul(y, constant, name="op")
    net.output(out, "out")
    if case == "two readers":
        net.output(net.relu(y, name="relu"), "other")
    if case == "graph output":
        net.output(y)
    graph = net.graph()
    if case == "dtype":
        value = graph.value(_node(graph, "op").inputs[1])
        value.const, value.dtype = value.const.astype(np.float64), np.dtype(np.float64)
    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        folded = _folded(graph)
    assert len(folded.nodes) == len(graph.nodes)
    assert "scale folding: op not rewritten:" in caplog.text and reason in caplog.text
    if case != "dtype":  # the unoptimized graph would not run that one either
        assert_same_outputs(graph, folded, random_feeds(graph))


def test_a_scale_constant_read_by_two_muls():
    net = Network("t")
    x = net.input("x", (None, 3, 6, 6))
    a = net.conv(x, _w(4, 3, 1, 1), name="conv_a")
    b = net.conv(x, _w(4, 3, 1, 1), name="conv_b")
    s = net.op("Identity", [_c(4, 1, 1)], name="s")  # one constant for both Muls once folded
    net.output(net.mul(a, s, name="mul_a"), "ya")  # folds into conv_a
    net.output(net.mul(net.relu(b, name="relu_b"), s, name="mul_b"), "yb")  # stays
    y = net.mul(net.relu(b, name="relu_c"), s, name="mul_c")
    net.output(net.mul(y, _c(4, 1, 1), name="mul_d"), "yc")  # merges into mul_c: s must not change
    graph = fold_constants(net.graph())
    folded = _folded(graph)
    assert [n.name for n in folded.nodes] == ["conv_a", "conv_b", "relu_b", "mul_b", "relu_c", "mul_c"]
    assert _node(folded, "mul_b").inputs[1] == "s_out" and _node(folded, "mul_c").inputs[1] == "s_out_merged"
    assert_same_outputs(graph, folded, random_feeds(graph))


# ------------------------------------------------------------------ merging constant affine maps

def test_affine_runs_merge():
    net = Network("t")
    x = net.input("x", (None, 4, 3, 3))
    y = net.relu(x, name="relu0")
    y = net.add(net.mul(y, _c(4, 1, 1), name="m1"), _c(4, 1, 1), name="a1")  # BN as an affine
    y = net.add(net.mul(y, _c(4, 1, 1), name="m2"), _c(4, 1, 1), name="a2")  # the Caffe Scale layer
    y = net.relu(y, name="relu1")
    y = net.mul(net.mul(y, _c(1, 3, 1), name="m3"), np.float32(2.0), name="m4")
    y = net.sub(net.add(y, _c(3), name="a3"), _c(4, 1, 1), name="s4")
    net.output(net.relu(y, name="relu2"), "out")
    graph = net.graph()
    folded = _folded(graph)
    assert [n.name for n in folded.nodes] == ["relu0", "m1", "a1", "relu1", "m3", "a3", "relu2"]
    assert _node(folded, "a1").members == ["a1", "m2", "a2"]
    assert _node(folded, "m3").members == ["m3", "m4"] and _node(folded, "a3").members == ["a3", "s4"]
    assert folded.value(_node(folded, "m3").inputs[1]).const.shape == (1, 3, 1)
    assert folded.value(_node(folded, "a3").inputs[1]).const.shape == (4, 1, 3)
    assert_same_outputs(graph, folded, random_feeds(graph))


def test_affine_merge_refuses_a_constant_that_would_broadcast(caplog):
    net = Network("t")
    x = net.input("x", (None, 4, 1, 1))
    y = net.mul(net.relu(x), _c(4, 1, 1), name="m1")
    net.output(net.mul(y, _c(4, 3, 3), name="m2"), "out")  # makes the tensor 3x3
    graph = net.graph()
    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        folded = _folded(graph)
    assert len(folded.nodes) == 3
    assert "would broadcast" in caplog.text


# ------------------------------------------------------------------ a whole model

def test_light_inception_v2_bn_and_scale_layers_fold_into_convs():
    graph = light_model("inception_v2")
    softmax = graph.nodes[-1]
    assert softmax.op_type == "Softmax"
    graph.outputs.append(softmax.inputs[0])  # random weights saturate the softmax: compare logits too
    graph = with_probed_shapes(graph)
    prepared = fold_constants(copy.deepcopy(graph))
    assert count(prepared, "BatchNormalization", "Mul", "Add", "Conv") == {
        "BatchNormalization": 69, "Mul": 69, "Add": 69, "Conv": 69}
    folded = fold_scales(fold_batch_norm(prepared))
    folded.validate()
    assert count(folded, "BatchNormalization", "Mul", "Add", "Conv") == {
        "BatchNormalization": 0, "Mul": 0, "Add": 0, "Conv": 69}
    assert all(len(n.members) == 4 for n in folded.nodes if n.op_type == "Conv")  # conv + bn + mul + add
    assert_same_outputs(graph, folded, random_feeds(graph, batch=1), rtol=1e-4, atol=1e-5)
