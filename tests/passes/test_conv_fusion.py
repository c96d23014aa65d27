"""Conv fusion: Conv (+ bias Add) (+ residual Add) (+ activation) -> one FusedConv."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest

from engine import zoo
from engine.ir import Graph, Node
from engine.network import Network
from engine.passes import FUSED_DOMAIN, layer_count
from engine.passes.conv_fusion import fuse_conv_activation
from engine.passes.elementwise_fusion import fuse_elementwise_chains
from engine.passes.gemm_fusion import fuse_gemm_activation
from tests.passes.util import assert_same_outputs, random_feeds

RNG = np.random.default_rng(3)


def _w(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _fused(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if n.op_type == "FusedConv"]


def _run(graph: Graph, *passes) -> Graph:
    """Apply the passes to a copy, check it is a valid graph computing the same outputs, return it."""
    rewritten = copy.deepcopy(graph)
    for p in passes or (fuse_conv_activation,):
        rewritten = p(rewritten)
    rewritten.validate()
    assert rewritten.inputs == graph.inputs and rewritten.outputs == graph.outputs
    assert_same_outputs(graph, rewritten, random_feeds(graph))
    return rewritten


def _net(opset: int = 17, channels: int = 3) -> tuple[Network, object]:
    net = Network("t", opset=opset)
    return net, net.input("x", (None, channels, 6, 6))


# -------------------------------------------------------------------- firing


def test_conv_bias_relu_becomes_one_fused_conv():
    net, x = _net()
    y = net.relu(net.conv(x, _w(4, 3, 3, 3), _w(4), pad=1, name="conv1"), name="relu1")
    net.output(net.max_pool(y, 2, name="pool"), "y")
    graph = net.graph()
    out = _run(graph)
    assert out.op_counts() == {"FusedConv": 1, "MaxPool": 1}
    fused = _fused(out)[0]
    assert fused.name == "conv1" and fused.members == ["conv1", "relu1"] and fused.domain == FUSED_DOMAIN
    assert fused.inputs == ["x", "conv1.weight", "conv1.bias"] and fused.outputs == ["relu1_out"]
    assert fused.attrs["activation"] == "Relu" and fused.attrs["residual"] == 0
    assert fused.attrs["pads"] == [1, 1, 1, 1] and fused.attrs["kernel_shape"] == [3, 3]
    assert out.opsets[FUSED_DOMAIN] == 1
    assert "conv1_out" not in out.values  # the value between the members is gone
    assert layer_count(out) == layer_count(graph) - 1


@pytest.mark.parametrize("conv_bias", [False, True])
@pytest.mark.parametrize("shape", [(4, 1, 1), (1, 4, 1, 1), (1,), ()])
def test_constant_per_channel_add_folds_into_the_bias(conv_bias, shape):
    net, x = _net()
    b = _w(4) if conv_bias else None
    y = net.conv(x, _w(4, 3, 3, 3), b, pad=1, name="conv")
    added = _w(*shape)
    y = net.relu(net.add(y, added, name="bias_add"), name="relu")
    net.output(y, "y")
    graph = net.graph()
    out = _run(graph)
    assert out.op_counts() == {"FusedConv": 1}
    fused = _fused(out)[0]
    assert fused.members == ["conv", "bias_add", "relu"]
    merged = out.value(fused.inputs[2]).const
    want = np.broadcast_to(added.reshape(-1), (4,)).astype(np.float64) + (b.astype(np.float64) if conv_bias else 0)
    assert merged.dtype == np.float32 and merged.shape == (4,)
    np.testing.assert_allclose(merged, want, rtol=1e-6)
    assert "conv.bias" not in out.values  # the replaced bias is dropped


def test_two_bias_adds_merge_into_one_constant():
    net, x = _net()
    y = net.conv(x, _w(4, 3, 3, 3), _w(4), pad=1, name="conv")
    y = net.add(net.add(y, _w(4, 1, 1), name="add1"), _w(1, 4, 1, 1), name="add2")
    net.output(net.relu(y, name="relu"), "y")
    graph = net.graph()
    out = _run(graph)
    fused = _fused(out)[0]
    assert fused.members == ["conv", "add1", "add2", "relu"]
    assert sorted(v.name for v in out.constants()) == ["conv.fused_bias", "conv.weight"]


def test_bias_add_alone_fuses_without_activation():
    net, x = _net()
    y = net.add(_w(1, 4, 1, 1), net.conv(x, _w(4, 3, 1, 1), name="conv"), name="bias_add")  # constant first
    net.output(net.max_pool(y, 2, name="pool"), "y")
    out = _run(net.graph())
    fused = _fused(out)[0]
    assert fused.members == ["conv", "bias_add"] and fused.attrs["activation"] == ""


@pytest.mark.parametrize("add_op", ["Add", "Sum"])  # Caffe2-era exports write the shortcut as Sum
def test_residual_add_then_relu(add_op):
    net, x = _net(channels=4)
    a = net.relu(net.conv(x, _w(4, 4, 3, 3), _w(4), pad=1, name="conv1"), name="relu1")
    b = net.conv(a, _w(4, 4, 3, 3), _w(4), pad=1, name="conv2")
    net.output(net.relu(net.op(add_op, [b, x], name="add"), name="relu2"), "y")
    out = _run(net.graph())
    assert out.op_counts() == {"FusedConv": 2}
    second = next(n for n in out.nodes if n.name == "conv2")
    assert second.members == ["conv2", "add", "relu2"]
    assert second.inputs == ["relu1_out", "conv2.weight", "conv2.bias", "x"]
    assert second.attrs["residual"] == 1 and second.attrs["activation"] == "Relu"
    assert second.outputs == ["y"]  # the graph output keeps its name


@pytest.mark.parametrize("swap", [False, True])
def test_add_of_two_convs_goes_to_the_later_conv(swap):
    """ResNet's projection shortcut: Add(conv2, downsample) -> Relu; the later conv takes the add."""
    net, x = _net()
    main = net.conv(x, _w(4, 3, 3, 3), _w(4), pad=1, name="conv2")
    short = net.conv(x, _w(4, 3, 1, 1), _w(4), name="downsample")
    y = net.add(short, main, name="add") if swap else net.add(main, short, name="add")
    net.output(net.relu(y, name="relu"), "y")
    out = _run(net.graph())
    assert out.op_counts() == {"Conv": 1, "FusedConv": 1}
    fused = _fused(out)[0]
    assert fused.members == ["downsample", "add", "relu"]
    assert fused.inputs[3] == "conv2_out"
    assert [n.name for n in out.nodes] == ["conv2", "downsample"]


def test_residual_produced_after_the_conv_is_still_available():
    """The fused node sits where the chain ended, so a residual computed after the conv is ready."""
    net, x = _net()
    y = net.conv(x, _w(3, 3, 3, 3), pad=1, name="conv")
    side = net.relu(net.mul(x, 0.5, name="scale"), name="side_relu")
    net.output(net.add(y, side, name="add"), "y")
    graph = net.graph()
    assert [n.name for n in graph.nodes] == ["conv", "scale", "side_relu", "add"]
    out = _run(graph)
    assert [n.name for n in out.nodes] == ["scale", "side_relu", "conv"]
    assert _fused(out)[0].inputs[3] == "side_relu_out"


@pytest.mark.parametrize("op_type, attrs, name, params", [
    ("LeakyRelu", {"alpha": 0.2}, "LeakyRelu", [0.2]),
    ("Sigmoid", {}, "Sigmoid", []),
    ("HardSigmoid", {"alpha": 0.25, "beta": 0.4}, "HardSigmoid", [0.25, 0.4]),
    ("HardSwish", {}, "HardSwish", []),
    ("Tanh", {}, "Tanh", []),
    ("Elu", {"alpha": 0.5}, "Elu", [0.5]),
    ("Softplus", {}, "Softplus", []),
])
def test_each_activation(op_type, attrs, name, params):
    net, x = _net()
    y = net.conv(x, _w(4, 3, 3, 3), _w(4), pad=1, name="conv")
    net.output(net.op(op_type, [y], attrs, name="act"), "y")
    out = _run(net.graph())
    fused = _fused(out)[0]
    assert fused.attrs["activation"] == name
    assert fused.attrs["activation_params"] == pytest.approx(params)


@pytest.mark.parametrize("opset", [10, 17])
def test_clip_as_relu6_in_both_spellings(opset):
    net, x = _net(opset)
    y = net.clip(net.conv(x, _w(4, 3, 3, 3), _w(4), pad=1, name="conv"), 0.0, 6.0, name="relu6")
    net.output(y, "y")
    out = _run(net.graph())
    fused = _fused(out)[0]
    assert fused.attrs["activation"] == "Clip" and fused.attrs["activation_params"] == [0.0, 6.0]
    assert fused.inputs == ["x", "conv.weight", "conv.bias"]  # the bounds are attributes now


def test_clip_with_one_open_side():
    net, x = _net()
    y = net.clip(net.conv(x, _w(4, 3, 3, 3), pad=1, name="conv"), max=1.0, name="clip")
    net.output(y, "y")
    fused = _fused(_run(net.graph()))[0]
    assert fused.attrs["activation_params"] == [-np.inf, 1.0]


@pytest.mark.parametrize("gate_first", [False, True])
def test_silu_pattern(gate_first):
    net, x = _net()
    y = net.conv(x, _w(4, 3, 3, 3), _w(4), pad=1, name="conv")
    s = net.sigmoid(y, name="sig")
    net.output(net.mul(s, y, name="mul") if gate_first else net.mul(y, s, name="mul"), "y")
    out = _run(net.graph())
    assert out.op_counts() == {"FusedConv": 1}
    fused = _fused(out)[0]
    assert fused.attrs["activation"] == "SiLU" and fused.members == ["conv", "sig", "mul"]


def test_fused_graph_survives_a_plan_file(tmp_path):
    import engine

    net, x = _net()
    y = net.clip(net.conv(x, _w(4, 3, 3, 3), pad=1, name="conv"), max=1.0, name="clip")  # -inf in the params
    net.output(y, "y")
    graph = net.graph()
    out = _run(graph)
    plan = engine.build(out, engine.BuildConfig(optimize=False))
    path = plan.save(tmp_path / "fused.plan")
    feeds = random_feeds(graph)
    got = engine.load(path).create_context().run(feeds)["y"]
    from tests.passes.util import run_graph
    np.testing.assert_allclose(got, run_graph(graph, feeds)["y"], rtol=1e-6, atol=1e-6)


# -------------------------------------------------------------------- not firing


def _refusals(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if "conv fusion" in r.getMessage())


@pytest.fixture
def debug_log(caplog):
    caplog.set_level(logging.DEBUG, logger="batchscore.build")
    return caplog


def test_conv_output_with_two_readers_is_not_fused(debug_log):
    net, x = _net()
    y = net.conv(x, _w(4, 3, 3, 3), _w(4), pad=1, name="conv")
    net.output(net.relu(y, name="relu"), "a")
    net.output(net.sigmoid(y, name="sig"), "b")
    graph = net.graph()
    out = _run(graph)
    assert out.op_counts() == graph.op_counts()
    assert "conv not rewritten" in _refusals(debug_log) and "2 consumers" in _refusals(debug_log)


def test_conv_output_that_is_a_graph_output_is_not_fused(debug_log):
    net, x = _net()
    y = net.conv(x, _w(4, 3, 3, 3), _w(4), pad=1, name="conv")
    net.output(y, "c")
    net.output(net.relu(y, name="relu"), "r")
    out = _run(net.graph())
    assert "FusedConv" not in out.op_counts()
    assert "'c' is a graph output" in _refusals(debug_log)


def test_intermediate_graph_output_stops_the_chain():
    net, x = _net()
    y = net.add(net.conv(x, _w(4, 3, 3, 3), pad=1, name="conv"), _w(4, 1, 1), name="bias_add")
    net.output(y, "biased")
    net.output(net.relu(y, name="relu"), "r")
    out = _run(net.graph())
    assert _fused(out)[0].members == ["conv", "bias_add"]  # not the relu: 'biased' must stay
    assert out.op_counts() == {"FusedConv": 1, "Relu": 1}


def test_spatial_constant_add_is_neither_bias_nor_residual(debug_log):
    net, x = _net()
    y = net.add(net.conv(x, _w(4, 3, 3, 3), pad=1, name="conv"), _w(1, 1, 6, 6), name="add")
    net.output(net.relu(y, name="relu"), "y")
    graph = net.graph()
    out = _run(graph)
    assert out.op_counts() == graph.op_counts()
    assert "not a per-channel bias" in _refusals(debug_log)


def test_broadcast_residual_is_not_fused(debug_log):
    net = Network("t")
    x = net.input("x", (None, 3, 6, 6))
    gate = net.input("gate", (None, 4, 1, 1))
    y = net.add(net.conv(x, _w(4, 3, 3, 3), pad=1, name="conv"), gate, name="add")
    net.output(net.relu(y, name="relu"), "y")
    graph = net.graph()
    out = _run(graph)
    assert out.op_counts() == graph.op_counts()
    assert "differs from the conv output" in _refusals(debug_log)


def test_clip_with_computed_bounds_is_not_fused(debug_log):
    net = Network("t")
    x = net.input("x", (None, 3, 6, 6))
    low = net.input("low", ())
    y = net.conv(x, _w(4, 3, 3, 3), pad=1, name="conv")
    net.output(net.op("Clip", [y, low], name="clip"), "y")
    graph = net.graph()
    out = _run(graph)
    assert out.op_counts() == graph.op_counts()
    assert "computed bound" in _refusals(debug_log)


def test_lone_conv_stays_a_conv(debug_log):
    net, x = _net()
    net.output(net.max_pool(net.conv(x, _w(4, 3, 3, 3), pad=1, name="conv"), 2, name="pool"), "y")
    graph = net.graph()
    out = _run(graph)
    assert out.op_counts() == graph.op_counts()
    assert "nothing to fuse" in _refusals(debug_log)


# -------------------------------------------------------------------- zoo models


def _folded(graph: Graph) -> Graph:
    """BN (and scale) folding, as the build runs it before vertical fusion."""
    bn = pytest.importorskip("engine.passes.bn_folding")
    graph = bn.fold_batch_norm(graph)
    try:
        from engine.passes.scale_folding import fold_scales
    except ImportError:
        return graph
    return fold_scales(graph)


@pytest.mark.parametrize("name, size, before, after", [("resnet18", 32, 47, 22), ("googlenet", 32, 137, 80)])
def test_zoo_models(name, size, before, after):
    graph = zoo.get(name, image_size=size, num_classes=10)
    folded = _folded(copy.deepcopy(graph))
    assert layer_count(folded) == before
    fused = _run(folded, fuse_conv_activation, fuse_gemm_activation, fuse_elementwise_chains)
    assert layer_count(fused) == after
    assert "BatchNormalization" not in fused.op_counts() and "Relu" not in fused.op_counts()
    # And against the original, BN and all (folding rounds differently, hence the tolerance).
    assert_same_outputs(graph, fused, random_feeds(graph), rtol=1e-4, atol=1e-4)
