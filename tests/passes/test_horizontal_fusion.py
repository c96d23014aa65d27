"""Horizontal fusion: sibling convs reading one tensor become one FusedConv with output_splits."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest

from engine import zoo
from engine.ir import Graph, Node
from engine.network import Network
from engine.passes import FUSED_DOMAIN, layer_count
from engine.passes.horizontal_fusion import concat_conv_weights, fuse_siblings
from kernels.cpu import CPU_OPS
from tests.passes.util import assert_same_outputs, random_feeds

needs_fused_conv = pytest.mark.skipif(
    "FusedConv" not in CPU_OPS.op_types(FUSED_DOMAIN), reason="the FusedConv numpy kernel is not registered yet"
)

RNG = np.random.default_rng(7)


def _w(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _fused(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if n.op_type == "FusedConv"]


def _as_fused_conv(graph: Graph, conv: str, act: str, params=()) -> None:
    """Stand-in for vertical fusion: turn Conv `conv` and the activation node reading it into one FusedConv."""
    node = next(n for n in graph.nodes if n.name == conv)
    reader = next(n for n in graph.nodes if node.outputs[0] in n.inputs)
    node.op_type, node.domain = "FusedConv", FUSED_DOMAIN
    node.attrs.update(activation=act, activation_params=[float(p) for p in params], residual=0)
    node.members = [conv, reader.name]
    graph.nodes.remove(reader)
    del graph.values[node.outputs[0]]
    node.outputs = list(reader.outputs)  # the activation's output, which its readers already read
    graph.opsets[FUSED_DOMAIN] = 1


def inception_like() -> Graph:
    """x -> {1x1 a (bias), 1x1 b (no bias), 3x3 c, maxpool -> 1x1 d} -> concat, plus a second 1x1 on b."""
    net = Network("inception_like")
    x = net.input("x", (None, 6, 9, 9))
    a = net.relu(net.conv(x, _w(4, 6, 1, 1), _w(4), name="a"), name="relu_a")
    b = net.relu(net.conv(x, _w(5, 6, 1, 1), name="b"), name="relu_b")
    b = net.conv(b, _w(3, 5, 3, 3), _w(3), pad=1, name="b2")
    c = net.conv(x, _w(2, 6, 3, 3), _w(2), pad=1, name="c")
    d = net.conv(net.max_pool(x, 3, 1, 1, name="pool"), _w(3, 6, 1, 1), _w(3), name="d")
    net.output(net.concat([a, b, c, d], name="cat"), "y")
    return net.graph()


# -------------------------------------------------------------------- the weight function


def test_concat_conv_weights_stacks_output_channels_and_zero_fills_missing_bias():
    w1, w2, w3 = _w(2, 3, 1, 1), _w(4, 3, 1, 1), _w(1, 3, 1, 1)
    b1, b3 = _w(2), _w(1)
    w, b = concat_conv_weights([w1, w2, w3], [b1, None, b3])
    assert w.shape == (7, 3, 1, 1) and w.dtype == np.float32 and w.flags.c_contiguous
    np.testing.assert_array_equal(w[:2], w1)
    np.testing.assert_array_equal(w[2:6], w2)
    np.testing.assert_array_equal(w[6:], w3)
    assert b.dtype == np.float32
    np.testing.assert_array_equal(b, np.concatenate([b1, np.zeros(4, np.float32), b3]))


def test_concat_conv_weights_without_any_bias_gives_none():
    w, b = concat_conv_weights([_w(2, 3, 3, 3), _w(1, 3, 3, 3)], [None, None])
    assert w.shape == (3, 3, 3, 3) and b is None


@pytest.mark.parametrize("weights", [
    [np.zeros((2, 3, 1, 1), np.float32), np.zeros((2, 4, 1, 1), np.float32)],  # input channels differ
    [np.zeros((2, 3, 1, 1), np.float32), np.zeros((2, 3, 3, 3), np.float32)],  # kernels differ
    [np.zeros((2, 3, 1, 1), np.float32), np.zeros((2, 3, 1, 1), np.float64)],  # dtypes differ
])
def test_concat_conv_weights_refuses_mismatched_weights(weights):
    with pytest.raises(ValueError, match="concat_conv_weights"):
        concat_conv_weights(weights, [None, None])


# -------------------------------------------------------------------- the rewrite


def test_siblings_with_same_geometry_merge_in_place_of_the_first():
    graph = inception_like()
    before = copy.deepcopy(graph)
    fuse_siblings(graph)
    graph.validate()
    (merged,) = _fused(graph)
    assert merged.domain == FUSED_DOMAIN and graph.opsets[FUSED_DOMAIN] == 1
    assert merged.members == ["a", "b"]
    assert merged.inputs[0] == "x"
    assert merged.outputs == ["a_out", "b_out"]  # readers unchanged
    assert merged.attrs["output_splits"] == [4, 5]
    assert merged.attrs["split_activations"] == [["", []], ["", []]]
    assert merged.attrs["residual"] == 0 and merged.attrs["activation"] == ""
    assert merged.attrs["kernel_shape"] == [1, 1] and merged.attrs["group"] == 1
    # W and B are the siblings' stacked; b had no bias, so zeros
    w, bias = (graph.value(i).const for i in merged.inputs[1:3])
    np.testing.assert_array_equal(w, np.concatenate([before.value("a.weight").const, before.value("b.weight").const]))
    np.testing.assert_array_equal(bias, np.concatenate([before.value("a.bias").const, np.zeros(5, np.float32)]))
    # the merged node stands where 'a' stood; c (3x3) and d (reads the pool) are untouched
    assert [n.name for n in graph.nodes].index(merged.name) == [n.name for n in before.nodes].index("a")
    assert graph.op_counts()["Conv"] == before.op_counts()["Conv"] - 2
    assert len(graph.nodes) == len(before.nodes) - 1
    assert layer_count(graph) == layer_count(before) - 1
    # the siblings' own weights are gone, the merged ones are there
    assert "a.weight" not in graph.values and "b.weight" not in graph.values


def test_fused_conv_siblings_keep_their_activations_and_members():
    net = Network("fused_siblings")
    x = net.input("x", (None, 4, 6, 6))
    a = net.leaky_relu(net.conv(x, _w(3, 4, 3, 3), _w(3), pad=1, name="a"), 0.2, name="act_a")
    b = net.relu(net.conv(x, _w(2, 4, 3, 3), _w(2), pad=1, name="b"), name="act_b")
    c = net.conv(x, _w(5, 4, 3, 3), pad=1, name="c")
    net.output(a, "ya")
    net.output(b, "yb")
    net.output(c, "yc")
    graph = net.graph()
    _as_fused_conv(graph, "a", "LeakyRelu", [0.2])
    _as_fused_conv(graph, "b", "Relu")
    fuse_siblings(graph)
    graph.validate()
    (merged,) = _fused(graph)
    assert merged.members == ["a", "act_a", "b", "act_b", "c"]
    assert merged.outputs == ["ya", "yb", "yc"]  # graph outputs keep their names
    assert merged.attrs["output_splits"] == [3, 2, 5]
    assert merged.attrs["split_activations"] == [["LeakyRelu", [0.2]], ["Relu", []], ["", []]]
    assert len(graph.nodes) == 1


def _refusals(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if "horizontal fusion" in r.getMessage())


def _two_siblings(second_stride=1, second_group=1, second_pad=0, dilation=1):
    net = Network("pair")
    x = net.input("x", (None, 4, 8, 8))
    a = net.conv(x, _w(4, 4, 3, 3), pad=1, name="a")
    b = net.conv(x, _w(4, 4 // second_group, 3, 3), stride=second_stride, pad=second_pad, dilation=dilation,
                 groups=second_group, name="b")
    net.output(a, "ya")
    net.output(b, "yb")
    return net.graph()


@pytest.mark.parametrize("kwargs, reason", [
    ({"second_stride": 2, "second_pad": 1}, "strides 2x2"),
    ({"second_pad": 0}, "pads [0, 0, 0, 0]"),
    ({"second_pad": 2, "dilation": 2}, "dilations 2x2"),
    ({"second_group": 2, "second_pad": 1}, "group is 2"),
])
def test_siblings_with_different_geometry_or_groups_are_refused(kwargs, reason, caplog):
    graph = _two_siblings(**kwargs)
    before = copy.deepcopy(graph)
    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        fuse_siblings(graph)
    assert [n.op_type for n in graph.nodes] == [n.op_type for n in before.nodes] == ["Conv", "Conv"]
    assert reason in _refusals(caplog)


def test_non_constant_weight_is_refused(caplog):
    net = Network("runtime_weight")
    x = net.input("x", (None, 4, 5, 5))
    w = net.input("w", (2, 4, 1, 1))
    a = net.op("Conv", [x, w], {"kernel_shape": [1, 1]}, name="a")
    b = net.conv(x, _w(3, 4, 1, 1), name="b")
    c = net.conv(x, _w(1, 4, 1, 1), name="c")
    for t in (a, b, c):
        net.output(t)
    graph = net.graph()
    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        fuse_siblings(graph)
    (merged,) = _fused(graph)
    assert merged.members == ["b", "c"]  # a stays a plain Conv
    assert [n.name for n in graph.nodes if n.op_type == "Conv"] == ["a"]
    assert "weight is not a constant" in _refusals(caplog)


def test_residual_and_already_split_fused_convs_are_refused(caplog):
    net = Network("residual")
    x = net.input("x", (None, 4, 5, 5))
    z = net.input("z", (None, 2, 5, 5))
    a = net.conv(x, _w(2, 4, 1, 1), name="a")
    b = net.conv(x, _w(2, 4, 1, 1), name="b")
    net.output(a, "ya")
    net.output(b, "yb")
    graph = net.graph()
    graph.opsets[FUSED_DOMAIN] = 1
    a_node, b_node = graph.nodes
    a_node.op_type, a_node.domain = "FusedConv", FUSED_DOMAIN
    a_node.inputs += ["", z.name]
    a_node.attrs.update(activation="", activation_params=[], residual=1)
    b_node.op_type, b_node.domain = "FusedConv", FUSED_DOMAIN
    b_node.attrs.update(activation="", activation_params=[], residual=0, output_splits=[2], split_activations=[])
    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        fuse_siblings(graph)
    assert [n.name for n in graph.nodes] == ["a", "b"]
    assert "residual" in _refusals(caplog) and "output_splits" in _refusals(caplog)


# -------------------------------------------------------------------- numbers


@needs_fused_conv
def test_merged_graph_computes_what_the_original_did():
    graph = inception_like()
    fused = fuse_siblings(copy.deepcopy(graph))
    assert len(_fused(fused)) == 1
    assert_same_outputs(graph, fused, random_feeds(graph, batch=3))


@needs_fused_conv
def test_merged_fused_convs_apply_each_splits_activation():
    net = Network("acts")
    x = net.input("x", (None, 4, 6, 6))
    a = net.leaky_relu(net.conv(x, _w(3, 4, 3, 3), _w(3), pad=1, name="a"), 0.2, name="act_a")
    b = net.relu(net.conv(x, _w(2, 4, 3, 3), _w(2), pad=1, name="b"), name="act_b")
    c = net.conv(x, _w(5, 4, 3, 3), pad=1, name="c")
    net.output(net.concat([a, b, c], name="cat"), "y")
    net.output(b, "yb")
    graph = net.graph()
    vertical = copy.deepcopy(graph)
    _as_fused_conv(vertical, "a", "LeakyRelu", [0.2])
    _as_fused_conv(vertical, "b", "Relu")
    assert_same_outputs(graph, vertical, random_feeds(graph))
    fused = fuse_siblings(copy.deepcopy(vertical))
    assert len(fused.nodes) == 2
    assert_same_outputs(graph, fused, random_feeds(graph))


# -------------------------------------------------------------------- zoo models


@pytest.fixture(scope="module")
def googlenet() -> Graph:
    return zoo.googlenet(image_size=32, seed=1)


def passes_before_horizontal_fusion():
    """The build's passes that run before horizontal fusion (BN folding, vertical fusion, ...)."""
    from engine.passes.pipeline import default_pipeline  # noqa: PLC0415

    passes = default_pipeline()
    names = [p.name for p in passes]
    return passes[:names.index(fuse_siblings.name)] if fuse_siblings.name in names else passes


def optimized_for_horizontal_fusion(graph: Graph) -> Graph:
    for p in passes_before_horizontal_fusion():
        graph = p(graph)
        graph.validate()
    return graph


def test_googlenet_merges_the_three_1x1_convs_of_each_inception_module(googlenet):
    graph = copy.deepcopy(googlenet)
    convs_before = sum(1 for n in graph.nodes if n.op_type in ("Conv", "FusedConv"))
    fuse_siblings(graph)
    graph.validate()
    merged = [n for n in _fused(graph) if n.attrs.get("output_splits")]
    assert len(merged) == 9  # inception3a ... inception5b
    for node in merged:
        module = node.members[0].split(".")[0]
        assert [m for m in node.members if m.endswith(".conv")] == [
            f"{module}.branch1.conv", f"{module}.branch2.0.conv", f"{module}.branch3.0.conv"]
        assert len(node.attrs["output_splits"]) == 3
    assert sum(1 for n in graph.nodes if n.op_type in ("Conv", "FusedConv")) == convs_before - 18
    assert merged[0].attrs["output_splits"] == [64, 96, 16]  # inception3a


@needs_fused_conv
def test_googlenet_numbers_after_vertical_and_horizontal_fusion(googlenet):
    graph = optimized_for_horizontal_fusion(copy.deepcopy(googlenet))
    vertical = sum(1 for n in graph.nodes if n.op_type == "FusedConv")
    layers = layer_count(graph)
    fuse_siblings(graph)
    graph.validate()
    merged = [n for n in _fused(graph) if n.attrs.get("output_splits")]
    assert len(merged) == 9
    assert layer_count(graph) == layers - 18
    if vertical:  # conv + bn + relu arrived fused: each split carries its ReLU
        assert all(n.attrs["split_activations"] == [["Relu", []]] * 3 for n in merged)
        module = merged[0].members[0].split(".")[0]
        assert merged[0].members[:3] == [f"{module}.branch1.conv", f"{module}.branch1.bn", f"{module}.branch1.relu"]
    assert_same_outputs(googlenet, graph, random_feeds(googlenet, batch=2), rtol=1e-4, atol=1e-4)


def test_resnet50_projection_shortcut_merges_only_where_strides_agree(caplog):
    graph = zoo.resnet50(image_size=32, seed=2)
    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        fuse_siblings(graph)
    graph.validate()
    (merged,) = _fused(graph)
    assert merged.members == ["layer1.0.conv1", "layer1.0.downsample.0"]
    assert merged.attrs["output_splits"] == [64, 256]
    # v1.5: later stages stride the 3x3 conv, so the 1x1 conv1 (stride 1) and the shortcut (stride 2) differ
    assert "layer2.0.downsample.0" in _refusals(caplog)


def test_gpu_variant_merges_only_siblings_with_the_same_activation():
    """ResNet's layer1 projection (no activation) beside branch 2a (Relu): merged on the CPU, kept apart
    by the GPU variant; GoogLeNet's 1x1 convs (all Relu) merge either way."""
    from engine import zoo
    from engine.builder import BuildConfig
    from engine.passes.pipeline import default_pipeline
    import engine

    def fused_splits(name, size, device):
        graph = zoo.get(name, image_size=size)
        plan = engine.build(graph, BuildConfig(max_batch=2, optimize=False))
        for value_name, info in plan.header["values"].items():
            if value_name in graph.values:
                graph.values[value_name].shape = tuple(info["shape"])
        from engine.passes import run_passes

        graph = run_passes(graph, default_pipeline(device))
        return sum(1 for n in graph.nodes if n.attrs.get("output_splits"))

    assert fused_splits("resnet50", 32, "cpu") == 1 and fused_splits("resnet50", 32, "cuda") == 0
    assert fused_splits("googlenet", 40, "cpu") == fused_splits("googlenet", 40, "cuda") == 9
