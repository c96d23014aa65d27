"""Element-wise fusion: maximal chains of element-wise ops -> one ElementwiseChain."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest

import engine
from engine.ir import Graph, Node
from engine.network import Network
from engine.passes import FUSED_DOMAIN, layer_count
from engine.passes.conv_fusion import fuse_conv_activation
from engine.passes.elementwise_fusion import fuse_elementwise_chains
from kernels.cpu import CPU_OPS
from tests.passes.util import assert_same_outputs, random_feeds, run_graph

RNG = np.random.default_rng(9)


def _w(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _chains(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if n.op_type == "ElementwiseChain"]


def _key(op_type: str, opset: int = 17) -> str:
    return CPU_OPS.lookup(op_type, opset).key


def _run(graph: Graph, *passes) -> Graph:
    rewritten = copy.deepcopy(graph)
    for p in passes or (fuse_elementwise_chains,):
        rewritten = p(rewritten)
    rewritten.validate()
    assert rewritten.inputs == graph.inputs and rewritten.outputs == graph.outputs
    assert_same_outputs(graph, rewritten, random_feeds(graph))
    return rewritten


@pytest.fixture
def debug_log(caplog):
    caplog.set_level(logging.DEBUG, logger="batchscore.build")
    return caplog


def _refusals(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if "element-wise fusion" in r.getMessage())


# -------------------------------------------------------------------- firing


def test_bn_as_affine_plus_relu_is_one_layer():
    """DenseNet's BatchNorm after a concat, exported as Mul + Add, then ReLU."""
    net = Network("t")
    x = net.input("x", (None, 4, 5, 5))
    y = net.relu(net.add(net.mul(x, _w(4, 1, 1), name="scale"), _w(4, 1, 1), name="shift"), name="relu")
    net.output(net.max_pool(y, 2, name="pool"), "y")
    graph = net.graph()
    out = _run(graph)
    assert out.op_counts() == {"ElementwiseChain": 1, "MaxPool": 1}
    chain = _chains(out)[0]
    assert chain.name == "scale" and chain.members == ["scale", "shift", "relu"] and chain.domain == FUSED_DOMAIN
    assert chain.inputs == ["x", "scale.b", "shift.b"] and chain.outputs == ["relu_out"]
    assert chain.attrs["steps"] == [[_key("Mul"), [-1, 1], {}], [_key("Add"), [-1, 2], {}], [_key("Relu"), [-1], {}]]
    assert out.opsets[FUSED_DOMAIN] == 1
    assert layer_count(out) == layer_count(graph) - 2


def test_operands_on_either_side_and_attributes():
    net = Network("t")
    x = net.input("x", (None, 3, 4))
    y = net.sub(_w(4), x, name="rsub")                   # c - x: the running value is input 1
    y = net.leaky_relu(y, 0.3, name="leaky")
    y = net.div(_w(3, 1), y, name="rdiv")
    y = net.op("Mul", [y, y], name="square")             # reads the running value twice
    net.output(net.tanh(y, name="tanh"), "y")
    out = _run(net.graph())
    chain = _chains(out)[0]
    assert out.op_counts() == {"ElementwiseChain": 1}
    assert chain.attrs["steps"] == [
        [_key("Sub"), [1, -1], {}],
        [_key("LeakyRelu"), [-1], {"alpha": 0.3}],
        [_key("Div"), [2, -1], {}],
        [_key("Mul"), [-1, -1], {}],
        [_key("Tanh"), [-1], {}],
    ]
    assert chain.outputs == ["y"]


def test_operands_computed_outside_the_chain():
    """Graph inputs, X itself, and a value computed after the chain starts are all fine."""
    net = Network("t")
    x = net.input("x", (None, 6))
    other = net.input("other", (None, 6))
    y = net.relu(x, name="relu")
    y = net.add(y, x, name="add_x")                      # X again, as an operand
    side = net.gemm(x, _w(6, 6), name="side")          # computed after the chain's first node
    y = net.mul(y, side, name="gate")
    net.output(net.sub(y, other, name="sub"), "y")
    graph = net.graph()
    out = _run(graph)
    chain = _chains(out)[0]
    assert chain.members == ["relu", "add_x", "gate", "sub"]
    assert chain.inputs == ["x", "x", "side_out", "other"]
    assert [s[1] for s in chain.attrs["steps"]] == [[-1], [-1, 1], [-1, 2], [-1, 3]]
    assert [n.name for n in out.nodes] == ["side", "relu"]  # placed where the chain ended


@pytest.mark.parametrize("opset", [10, 17])
def test_clip_in_a_chain(opset):
    net = Network("t", opset=opset)
    x = net.input("x", (None, 8))
    y = net.clip(net.mul(x, 2.0, name="double"), -1.0, 1.0, name="clip")
    net.output(y, "y")
    chain = _chains(_run(net.graph()))[0]
    key, refs, attrs = chain.attrs["steps"][1]
    assert key == _key("Clip", opset)
    if opset < 11:
        assert refs == [-1] and attrs == {"min": -1.0, "max": 1.0}
    else:
        assert refs == [-1, 2, 3] and attrs == {}


def test_chain_after_a_fused_conv_and_through_a_plan_file(tmp_path):
    net = Network("t")
    x = net.input("x", (None, 3, 6, 6))
    y = net.relu(net.conv(x, _w(4, 3, 3, 3), _w(4), pad=1, name="conv"), name="relu")
    y = net.op("Pow", [net.mul(y, _w(4, 1, 1), name="scale"), np.array(2, np.int64)], name="pow")
    net.output(net.op("Sqrt", [y], name="sqrt"), "y")
    graph = net.graph()
    out = _run(graph, fuse_conv_activation, fuse_elementwise_chains)
    assert out.op_counts() == {"FusedConv": 1, "ElementwiseChain": 1}
    plan = engine.build(out, engine.BuildConfig(optimize=False))
    path = plan.save(tmp_path / "chain.plan")
    feeds = random_feeds(graph)
    got = engine.load(path).create_context().run(feeds)["y"]
    np.testing.assert_allclose(got, run_graph(graph, feeds)["y"], rtol=1e-6, atol=1e-6)


def test_a_branch_splits_chains():
    net = Network("t")
    x = net.input("x", (None, 6))
    mid = net.sigmoid(net.op("Neg", [x], name="neg"), name="sig")  # chain 1 ends here: two readers
    a = net.relu(net.add(mid, 1.0, name="a1"), name="a2")
    b = net.op("Exp", [net.mul(mid, 3.0, name="b1")], name="b2")
    net.output(a, "a")
    net.output(b, "b")
    out = _run(net.graph())
    assert [c.members for c in _chains(out)] == [["neg", "sig"], ["a1", "a2"], ["b1", "b2"]]


# -------------------------------------------------------------------- not firing


def test_single_ops_stay(debug_log):
    net = Network("t")
    x = net.input("x", (None, 4, 5, 5))
    y = net.max_pool(net.relu(x, name="relu"), 2, name="pool")
    net.output(net.sigmoid(y, name="sig"), "y")
    graph = net.graph()
    out = _run(graph)
    assert out.op_counts() == graph.op_counts()
    assert "a chain of one node" in _refusals(debug_log)


def test_graph_output_in_the_middle_stops_the_chain(debug_log):
    net = Network("t")
    x = net.input("x", (None, 6))
    y = net.mul(x, 2.0, name="m")
    net.output(y, "mid")
    net.output(net.relu(net.add(y, 1.0, name="a"), name="r"), "y")
    out = _run(net.graph())
    assert [c.members for c in _chains(out)] == [["a", "r"]]
    assert "'mid' is a graph output" in _refusals(debug_log)


def test_broadcast_that_grows_the_running_value_stops_the_chain(debug_log):
    net = Network("t")
    x = net.input("x", (None, 1, 6))
    wide = net.input("wide", (None, 4, 6))
    y = net.add(net.relu(x, name="relu"), wide, name="grow")  # (N,1,6) + (N,4,6) -> (N,4,6)
    net.output(net.tanh(y, name="tanh"), "y")
    out = _run(net.graph())
    assert [c.members for c in _chains(out)] == [["grow", "tanh"]]  # grow starts its own chain, from `wide`
    assert "would change the running shape" in _refusals(debug_log)


def test_unknown_shapes_and_mixed_types_are_refused(debug_log):
    net = Network("t")
    x = net.input("x", (None, 6))
    y = net.relu(x, name="relu")
    net.output(net.mul(y, 2.0, name="mul"), "y")
    graph = net.graph()
    graph.value("mul.b").const = np.array([2.0], np.float64)  # a float64 operand: not this chain's type
    graph.value("mul.b").dtype = np.dtype(np.float64)
    out = fuse_elementwise_chains(copy.deepcopy(graph))
    assert "ElementwiseChain" not in out.op_counts()
    assert "is float64, the running value float32" in _refusals(debug_log)
    graph.value("x").shape = None
    graph.value("relu_out").shape = None
    graph.value("mul.b").const = np.array([2.0], np.float32)
    graph.value("mul.b").dtype = np.dtype(np.float32)
    out = fuse_elementwise_chains(copy.deepcopy(graph))
    assert "ElementwiseChain" not in out.op_counts()
    assert "running value's shape is unknown" in _refusals(debug_log)


def test_clip_with_an_omitted_min_is_refused(debug_log):
    net = Network("t")
    x = net.input("x", (None, 6))
    y = net.clip(net.relu(x, name="relu"), max=1.0, name="clip")  # Clip(x, "", max)
    net.output(y, "y")
    graph = net.graph()
    assert graph.nodes[-1].inputs[1] == ""
    out = _run(graph)
    assert "ElementwiseChain" not in out.op_counts()
    assert "omits an optional input" in _refusals(debug_log)


def test_a_refused_step_leaves_no_stray_operand(debug_log):
    net = Network("t")
    x = net.input("x", (None, 6))
    hi = net.input("hi", (), dtype=np.float64)  # the wrong type for this chain: refused
    y = net.mul(net.relu(x, name="relu"), 2.0, name="mul")
    # Clip's min is fine and would be added as an operand before its max is refused.
    y = net.op("Clip", [y, np.array(-1.0, np.float32), hi], name="clip", output_shapes=[("N", 6)])
    net.output(y, "y")
    out = fuse_elementwise_chains(net.graph())
    chain = _chains(out)[0]
    assert chain.members == ["relu", "mul"] and chain.inputs == ["x", "mul.b"]
    assert "'hi' is float64" in _refusals(debug_log)
