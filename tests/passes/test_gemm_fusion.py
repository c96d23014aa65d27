"""Gemm fusion: Gemm (+ activation) and MatMul + bias Add (+ activation) -> one FusedGemm."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest

from engine.ir import Graph, Node
from engine.network import Network
from engine.passes import FUSED_DOMAIN, layer_count
from engine.passes.gemm_fusion import fuse_gemm_activation
from tests.passes.util import assert_same_outputs, random_feeds

RNG = np.random.default_rng(5)


def _w(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _fused(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if n.op_type == "FusedGemm"]


def _run(graph: Graph) -> Graph:
    rewritten = fuse_gemm_activation(copy.deepcopy(graph))
    rewritten.validate()
    assert rewritten.outputs == graph.outputs
    assert_same_outputs(graph, rewritten, random_feeds(graph))
    return rewritten


@pytest.fixture
def debug_log(caplog):
    caplog.set_level(logging.DEBUG, logger="batchscore.build")
    return caplog


def _refusals(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if "gemm fusion" in r.getMessage())


# -------------------------------------------------------------------- firing


@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_relu(trans_b):
    net = Network("t")
    x = net.input("x", (None, 6))
    w = _w(5, 6) if trans_b else _w(6, 5)
    y = net.relu(net.gemm(x, w, _w(5), trans_b=trans_b, alpha=0.5, beta=2.0, name="fc"), name="relu")
    net.output(net.gemm(y, _w(5, 3), name="head"), "y")
    graph = net.graph()
    out = _run(graph)
    assert out.op_counts() == {"FusedGemm": 1, "Gemm": 1}  # the head has nothing to fuse
    fused = _fused(out)[0]
    assert fused.name == "fc" and fused.members == ["fc", "relu"] and fused.domain == FUSED_DOMAIN
    assert fused.inputs == ["x", "fc.weight", "fc.bias"] and fused.outputs == ["relu_out"]
    assert fused.attrs["transB"] == int(trans_b) and fused.attrs["alpha"] == 0.5 and fused.attrs["beta"] == 2.0
    assert fused.attrs["activation"] == "Relu"
    assert layer_count(out) == layer_count(graph) - 1


@pytest.mark.parametrize("bias_shape", [(4,), (1, 4), (1,), ()])
def test_matmul_bias_activation(bias_shape):
    net = Network("t")
    x = net.input("x", (None, 6))
    y = net.op("MatMul", [x, _w(6, 4)], name="mm")
    y = net.add(y, _w(*bias_shape), name="bias")
    net.output(net.sigmoid(y, name="sig"), "y")
    out = _run(net.graph())
    assert out.op_counts() == {"FusedGemm": 1}
    fused = _fused(out)[0]
    assert fused.members == ["mm", "bias", "sig"] and fused.outputs == ["y"]
    assert fused.attrs == {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0, "activation": "Sigmoid",
                           "activation_params": []}
    assert fused.inputs[2] == "bias.b"  # the bias constant is used as it is


def test_matmul_bias_without_activation_and_bias_first():
    net = Network("t")
    x = net.input("x", (None, 6))
    y = net.add(_w(1, 4), net.op("MatMul", [x, _w(6, 4)], name="mm"), name="bias")
    net.output(net.softmax(y, name="softmax"), "y")
    out = _run(net.graph())
    assert out.op_counts() == {"FusedGemm": 1, "Softmax": 1}
    assert _fused(out)[0].attrs["activation"] == ""


def test_gemm_without_c_takes_a_bias_add_and_silu():
    net = Network("t")
    x = net.input("x", (None, 6))
    y = net.add(net.gemm(x, _w(4, 6), trans_b=True, name="fc"), _w(4), name="bias")
    s = net.sigmoid(y, name="sig")
    net.output(net.mul(y, s, name="mul"), "y")
    out = _run(net.graph())
    fused = _fused(out)[0]
    assert fused.members == ["fc", "bias", "sig", "mul"] and fused.attrs["activation"] == "SiLU"
    assert len(fused.inputs) == 3


def test_clip_activation_keeps_graph_output_name():
    net = Network("t", opset=10)
    x = net.input("x", (None, 6))
    net.output(net.clip(net.gemm(x, _w(6, 4), _w(4), name="fc"), 0.0, 6.0, name="relu6"), "out")
    fused = _fused(_run(net.graph()))[0]
    assert fused.outputs == ["out"] and fused.attrs["activation_params"] == [0.0, 6.0]


# -------------------------------------------------------------------- not firing


def test_lone_gemm_and_matmul_stay(debug_log):
    net = Network("t")
    x = net.input("x", (None, 6))
    y = net.gemm(x, _w(6, 4), _w(4), name="fc")
    net.output(net.op("MatMul", [y, _w(4, 3)], name="mm"), "y")
    graph = net.graph()
    out = _run(graph)
    assert out.op_counts() == graph.op_counts()
    assert "nothing to fuse" in _refusals(debug_log)


def test_matmul_of_a_computed_b_or_a_3d_a_is_not_fused(debug_log):
    net = Network("t")
    x = net.input("x", (None, 6))
    w = net.input("w", (6, 4))
    y = net.relu(net.op("MatMul", [x, w], name="mm"), name="relu")
    net.output(y, "y")
    x3 = net.input("x3", (None, 2, 6))
    net.output(net.relu(net.op("MatMul", [x3, _w(6, 4)], name="mm3"), name="relu3"), "y3")
    graph = net.graph()
    out = _run(graph)
    assert out.op_counts() == graph.op_counts()
    text = _refusals(debug_log)
    assert "B is not a constant matrix" in text and "not known to be 2-D" in text


def test_bias_over_rows_is_not_a_bias(debug_log):
    net = Network("t")
    x = net.input("x", (3, 6))
    y = net.add(net.op("MatMul", [x, _w(6, 4)], name="mm"), _w(3, 1), name="add")
    net.output(y, "y")
    graph = net.graph()
    out = _run(graph)
    assert out.op_counts() == graph.op_counts()
    assert "not a bias over 4 features" in _refusals(debug_log)


def test_shared_product_is_not_fused(debug_log):
    net = Network("t")
    x = net.input("x", (None, 6))
    y = net.gemm(x, _w(6, 4), _w(4), name="fc")
    net.output(net.relu(y, name="relu"), "a")
    net.output(net.tanh(y, name="tanh"), "b")
    graph = net.graph()
    out = _run(graph)
    assert out.op_counts() == graph.op_counts()
    assert "2 consumers" in _refusals(debug_log)


def test_integer_matmul_is_not_fused(debug_log):
    net = Network("t")
    x = net.input("x", (None, 6), dtype=np.int64)
    y = net.op("MatMul", [x, np.ones((6, 4), np.int64)], name="mm")
    net.output(net.op("Add", [y, np.ones(4, np.int64)], name="add"), "y")
    graph = net.graph()
    out = fuse_gemm_activation(copy.deepcopy(graph))
    assert out.op_counts() == graph.op_counts()
    assert "not a known floating-point type" in _refusals(debug_log)
