"""BatchNorm folding: into Conv / ConvTranspose / Gemm / MatMul, else into a per-channel Mul + Add."""

import copy
import logging

import numpy as np
import pytest

from engine import zoo
from engine.ir import Graph, Node, Value
from engine.network import Network
from engine.passes.bn_folding import fold_batch_norm
from engine.passes.scale_folding import fold_scales
from tests.passes.folding_util import count, fold_constants, light_model, with_probed_shapes
from tests.passes.util import assert_same_outputs, random_feeds

RNG = np.random.default_rng(0)


def _w(*shape):
    return (RNG.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def _bn_params(c):
    return (RNG.uniform(0.5, 2.0, c).astype(np.float32), RNG.standard_normal(c).astype(np.float32),
            RNG.standard_normal(c).astype(np.float32), RNG.uniform(0.1, 2.0, c).astype(np.float32))


def _folded(graph: Graph) -> Graph:
    out = fold_batch_norm(copy.deepcopy(graph))
    out.validate()
    return out


def _node(graph: Graph, name: str) -> Node:
    return next(n for n in graph.nodes if n.name == name)


# ------------------------------------------------------------------ folding into the producer

@pytest.mark.parametrize("bias", [False, True])
def test_conv_bn_relu_folds_into_the_conv(bias):
    net = Network("t")
    x = net.input("x", (None, 3, 8, 8))
    y = net.conv(x, _w(4, 3, 3, 3), RNG.standard_normal(4).astype(np.float32) if bias else None, pad=1, name="conv1")
    y = net.batch_norm(y, *_bn_params(4), eps=1e-3, name="bn1")
    net.output(net.relu(y, name="relu1"), "out")
    graph = net.graph()

    folded = _folded(graph)
    assert [n.op_type for n in folded.nodes] == ["Conv", "Relu"]
    conv = _node(folded, "conv1")
    assert conv.members == ["conv1", "bn1"]
    assert len(conv.inputs) == 3 and folded.value(conv.inputs[2]).const.shape == (4,)
    assert conv.outputs == ["bn1_out"]  # the producer writes the BN's output value
    assert all(folded.value(i).const.dtype == np.float32 for i in conv.inputs[1:])
    assert not any(name.startswith("bn1.") for name in folded.values)  # the BN's parameters are gone
    assert_same_outputs(graph, folded, random_feeds(graph))


def test_bn_that_is_a_graph_output_keeps_the_output_name():
    net = Network("t")
    x = net.input("x", (None, 2, 5, 5))
    y = net.conv(x, _w(3, 2, 1, 1), name="conv1")
    net.output(net.batch_norm(y, *_bn_params(3), name="bn1"), "features")
    graph = net.graph()
    folded = _folded(graph)
    assert [n.op_type for n in folded.nodes] == ["Conv"]
    assert folded.outputs == ["features"] and folded.nodes[0].outputs == ["features"]
    assert_same_outputs(graph, folded, random_feeds(graph))


def test_shared_conv_weight_is_copied_not_overwritten():
    w, b = _w(3, 2, 3, 3), np.zeros(3, np.float32)
    values = {"x": Value("x", np.dtype(np.float32), ("N", 2, 6, 6)),
              "w": Value("w", w.dtype, w.shape, w), "b": Value("b", b.dtype, b.shape, b)}
    nodes = []
    for k in (1, 2):
        params = _bn_params(3)
        for what, array in zip(("g", "beta", "m", "v"), params):
            values[f"{what}{k}"] = Value(f"{what}{k}", array.dtype, array.shape, array)
        values[f"c{k}"] = Value(f"c{k}", np.dtype(np.float32), ("N", 3, 6, 6))
        values[f"y{k}"] = Value(f"y{k}", np.dtype(np.float32), ("N", 3, 6, 6))
        nodes.append(Node(f"conv{k}", "Conv", ["x", "w", "b"], [f"c{k}"], {"pads": [1, 1, 1, 1]}))
        nodes.append(Node(f"bn{k}", "BatchNormalization", [f"c{k}", f"g{k}", f"beta{k}", f"m{k}", f"v{k}"], [f"y{k}"]))
    graph = Graph("shared", nodes, values, ["x"], ["y1", "y2"])
    graph.validate()

    folded = _folded(graph)
    assert count(folded, "Conv", "BatchNormalization") == {"Conv": 2, "BatchNormalization": 0}
    conv1, conv2 = _node(folded, "conv1"), _node(folded, "conv2")
    # The first fold copies the shared weight; the second, its last reader, rewrites it in place.
    assert conv1.inputs[1:] == ["w_folded", "b_folded"] and conv2.inputs[1:] == ["w", "b"]
    np.testing.assert_array_equal(graph.value("w").const, w)  # the source graph's weight is untouched
    assert_same_outputs(graph, folded, random_feeds(graph))


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_bn_folds(group):
    net = Network("t")
    x = net.input("x", (None, 4, 4, 4))
    w = _w(4, 3, 3, 3)
    y = net.op("ConvTranspose", [x, w], {"group": group, "strides": [2, 2], "pads": [1, 1, 0, 0]}, name="up")
    net.output(net.batch_norm(y, *_bn_params(3 * group), name="bn"), "out")
    graph = net.graph()
    folded = _folded(graph)
    assert [n.op_type for n in folded.nodes] == ["ConvTranspose"]
    assert folded.nodes[0].members == ["up", "bn"]
    assert_same_outputs(graph, folded, random_feeds(graph))


@pytest.mark.parametrize("trans_b, bias, opset", [(True, True, 13), (False, False, 13), (True, False, 9)])
def test_gemm_bn_folds(trans_b, bias, opset):
    net = Network("t", opset=opset)
    x = net.input("x", (None, 6))
    w = _w(5, 6) if trans_b else _w(6, 5)
    y = net.gemm(x, w, RNG.standard_normal(5).astype(np.float32) if bias else None, trans_b=trans_b,
                 alpha=1.5, beta=0.5, name="fc")
    net.output(net.batch_norm(y, *_bn_params(5), name="bn"), "out")
    graph = net.graph()
    folded = _folded(graph)
    assert [n.op_type for n in folded.nodes] == ["Gemm"]
    gemm = folded.nodes[0]
    assert gemm.attrs["beta"] == 1.0 and gemm.attrs["alpha"] == 1.5 and len(gemm.inputs) == 3
    assert_same_outputs(graph, folded, random_feeds(graph, batch=3))


def test_matmul_bn_becomes_a_gemm_with_a_bias():
    net = Network("t")
    x = net.input("x", (None, 6))
    y = net.op("MatMul", [x, _w(6, 4)], name="mm")
    net.output(net.relu(net.batch_norm(y, *_bn_params(4), name="bn")), "out")
    graph = net.graph()
    folded = _folded(graph)
    assert [n.op_type for n in folded.nodes] == ["Gemm", "Relu"]
    gemm = _node(folded, "mm")
    assert gemm.attrs == {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}
    assert gemm.members == ["mm", "bn"]
    assert_same_outputs(graph, folded, random_feeds(graph, batch=3))


# ------------------------------------------------------------------ the per-channel affine fallback

def _densenet_block(shared: bool = False) -> Graph:
    """Concat -> BN -> Relu -> Conv: DenseNet's pre-activation BN, which has no producer to fold into."""
    net = Network("dense")
    x = net.input("x", (None, 4, 6, 6))
    c = net.conv(x, _w(2, 4, 3, 3), pad=1, name="conv0")
    cat = net.concat([x, c], name="cat")
    y = net.batch_norm(cat, *_bn_params(6), name="bn")
    y = net.conv(net.relu(y, name="relu"), _w(3, 6, 1, 1), name="conv1")
    net.output(y, "out")
    if shared:
        net.output(cat, "cat_out")
    return net.graph()


def test_bn_after_concat_becomes_mul_then_add(caplog):
    graph = _densenet_block()
    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        folded = _folded(graph)
    assert "bn not rewritten: not folded into its producer: its input comes from Concat 'cat'" in caplog.text
    assert [n.op_type for n in folded.nodes] == ["Conv", "Concat", "Mul", "Add", "Relu", "Conv"]
    mul, add = _node(folded, "bn_mul"), _node(folded, "bn_add")
    assert mul.members == add.members == ["bn"] and mul.domain == add.domain == ""
    assert folded.value(mul.inputs[1]).const.shape == (6, 1, 1)
    assert folded.value(add.inputs[1]).const.shape == (6, 1, 1)
    assert add.outputs == ["bn_out"] and mul.outputs == [add.inputs[0]]
    assert_same_outputs(graph, folded, random_feeds(graph))


def test_bn_on_a_graph_input_or_a_shared_value_becomes_affine():
    net = Network("t")
    x = net.input("x", (None, 3, 4))
    net.output(net.batch_norm(x, *_bn_params(3), name="bn"), "y")
    graph = net.graph()
    folded = _folded(graph)
    assert [n.op_type for n in folded.nodes] == ["Mul", "Add"] and folded.outputs == ["y"]
    assert folded.value(folded.nodes[0].inputs[1]).const.shape == (3, 1)
    assert_same_outputs(graph, folded, random_feeds(graph))

    # A conv whose output is also read by another node, or is a graph output, keeps its weights.
    for make_output in (False, True):
        net = Network("t")
        x = net.input("x", (None, 2, 5, 5))
        c = net.conv(x, _w(3, 2, 1, 1), name="conv")
        net.output(net.batch_norm(c, *_bn_params(3), name="bn"), "y")
        net.output(c if make_output else net.relu(c), "other")
        graph = net.graph()
        folded = _folded(graph)
        assert count(folded, "Conv", "Mul", "Add", "BatchNormalization") == {
            "Conv": 1, "Mul": 1, "Add": 1, "BatchNormalization": 0}
        assert_same_outputs(graph, folded, random_feeds(graph))


def test_conv_with_computed_weights_is_not_folded_into():
    net = Network("t")
    x = net.input("x", (None, 2, 5, 5))
    w = net.input("w", (3, 2, 1, 1))
    c = net.op("Conv", [x, w], name="conv")
    net.output(net.batch_norm(c, *_bn_params(3), name="bn"), "y")
    graph = net.graph()
    folded = _folded(graph)
    assert [n.op_type for n in folded.nodes] == ["Conv", "Mul", "Add"]


def test_bn_that_cannot_be_rewritten_is_left_alone(caplog):
    net = Network("t", opset=15)
    x = net.input("x", (None, 3, 4, 4))
    c = net.conv(x, _w(3, 3, 1, 1), name="conv")
    scale = net.input("gamma", (3,))
    y = net.op("BatchNormalization", [c, scale] + [a for a in _bn_params(3)[1:]], name="bn_dynamic")
    y = net.batch_norm(y, *_bn_params(3), name="bn_train")
    net.output(y, "y")
    graph = net.graph()
    _node(graph, "bn_train").attrs["training_mode"] = 1
    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        folded = _folded(graph)
    assert count(folded, "BatchNormalization") == {"BatchNormalization": 2}
    assert "bn_dynamic not rewritten: parameters ['gamma'] are not constants" in caplog.text
    assert "bn_train not rewritten: training_mode=1" in caplog.text

    # Unknown rank: neither folding (a Concat feeds it) nor the affine (its constants' shape) applies.
    graph = _densenet_block()
    graph.value("cat_out").shape = graph.value("bn_out").shape = None
    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        folded = _folded(graph)
    assert count(folded, "BatchNormalization") == {"BatchNormalization": 1}
    assert "the rank of its input is unknown" in caplog.text


# ------------------------------------------------------------------ whole models

def test_resnet50_loses_every_batch_norm():
    graph = zoo.resnet50(image_size=32, num_classes=10)
    before = count(graph, "BatchNormalization", "Conv", "Mul", "Add")
    folded = fold_batch_norm(fold_constants(copy.deepcopy(graph)))
    folded.validate()
    after = count(folded, "BatchNormalization", "Conv", "Mul", "Add")
    assert before == {"BatchNormalization": 53, "Conv": 53, "Mul": 0, "Add": 16}
    assert after == {"BatchNormalization": 0, "Conv": 53, "Mul": 0, "Add": 16}
    assert_same_outputs(graph, folded, random_feeds(graph, batch=1), rtol=1e-4, atol=1e-4)


def test_light_densenet121_pre_activation_bns_become_affine_and_merge():
    graph = with_probed_shapes(light_model("densenet121"))
    prepared = fold_constants(copy.deepcopy(graph))
    before = count(prepared, "BatchNormalization", "Mul", "Add")
    after_bn = fold_batch_norm(copy.deepcopy(prepared))
    after_bn.validate()
    # 59 BNs follow a Conv and fold; 62 read a Concat or pooling output shared with later blocks.
    assert before == {"BatchNormalization": 121, "Mul": 121, "Add": 121}
    assert count(after_bn, "BatchNormalization", "Mul", "Add") == {"BatchNormalization": 0, "Mul": 183, "Add": 183}
    after = fold_scales(after_bn)
    after.validate()
    # The model's own Mul/Add after each BN fold into the conv, or merge with the BN's affine.
    assert count(after, "BatchNormalization", "Mul", "Add") == {"BatchNormalization": 0, "Mul": 62, "Add": 62}
    assert_same_outputs(graph, after, random_feeds(graph, batch=1), rtol=1e-4, atol=1e-5)
