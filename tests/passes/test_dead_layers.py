"""Dead-layer elimination: unused branches and unread weights go; outputs' producers always stay."""

import copy

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.ir import Graph, Node, Value
from engine.network import Network
from engine.onnx_import import import_model
from engine.onnx_tools import seeded_weights
from engine.passes.dead_layers import eliminate_dead_layers
from tests.light_zoo import MODELS, load
from tests.passes.util import assert_same_outputs, random_feeds


def _onnx_graph(nodes, inputs, outputs, inits=(), opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def _float_input(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_unused_branch_is_removed_in_one_call():
    net = Network("branch")
    x = net.input("x", (None, 4))
    net.output(net.relu(x, name="used"), "y")
    dead = net.tanh(net.sigmoid(net.mul(x, np.full(4, 2.0, np.float32), name="dead_mul"), name="dead_sig"),
                    name="dead_tanh")
    assert dead.name == "dead_tanh_out"
    graph = net.graph()
    original = copy.deepcopy(graph)
    assert len(graph.nodes) == 4

    eliminate_dead_layers(graph)
    graph.validate()

    assert [n.name for n in graph.nodes] == ["used"]
    assert not any(v.is_const for v in graph.values.values()), "the dead Mul's weight is dropped too"
    assert "dead_tanh_out" not in graph.values
    assert graph.inputs == ["x"] and graph.outputs == ["y"]
    assert_same_outputs(original, graph, random_feeds(graph, batch=3))


def test_live_graph_is_left_alone():
    net = Network("live")
    x = net.input("x", (None, 3, 8, 8))
    rng = np.random.default_rng(0)
    y = net.conv(x, rng.standard_normal((4, 3, 3, 3)).astype(np.float32), np.zeros(4, np.float32), pad=1)
    net.output(net.relu(y), "y")
    graph = net.graph()
    original = copy.deepcopy(graph)

    eliminate_dead_layers(graph)

    assert [n.name for n in graph.nodes] == [n.name for n in original.nodes]
    assert set(graph.values) == set(original.values)
    assert_same_outputs(original, graph, random_feeds(graph))


def test_node_with_one_used_output_stays_and_its_unused_readers_go():
    split = helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1, name="split")
    graph = _onnx_graph(
        [split,
         helper.make_node("Relu", ["a"], ["y"], name="relu_a"),
         helper.make_node("Neg", ["b"], ["b_neg"], name="neg_b"),
         helper.make_node("Abs", ["b_neg"], ["b_abs"], name="abs_b")],
        [_float_input("x", ["batch", 6])], [_float_input("y", None)],
        [numpy_helper.from_array(np.array([2, 4], np.int64), "sizes")],
    )
    original = copy.deepcopy(graph)

    eliminate_dead_layers(graph)
    graph.validate()

    assert [n.name for n in graph.nodes] == ["split", "relu_a"]
    assert graph.nodes[0].outputs == ["a", "b"], "the split keeps its unused output"
    assert "sizes" in graph.values and graph.values["sizes"].is_const
    assert_same_outputs(original, graph, random_feeds(graph))


def test_graph_outputs_producers_are_never_removed():
    # 'mid' is a graph output that another output's chain also reads; 'side' is an output nobody reads.
    graph = _onnx_graph(
        [helper.make_node("Relu", ["x"], ["mid"], name="relu"),
         helper.make_node("Sigmoid", ["mid"], ["y"], name="sigmoid"),
         helper.make_node("Neg", ["x"], ["side"], name="neg"),
         helper.make_node("Abs", ["x"], ["unused"], name="abs")],
        [_float_input("x", ["batch", 5])],
        [_float_input("y", None), _float_input("mid", None), _float_input("side", None)],
    )
    original = copy.deepcopy(graph)

    eliminate_dead_layers(graph)
    graph.validate()

    assert [n.name for n in graph.nodes] == ["relu", "sigmoid", "neg"]
    assert graph.outputs == ["y", "mid", "side"]
    assert_same_outputs(original, graph, random_feeds(graph))


def test_unread_weights_go_and_read_ones_stay_unused_inputs_stay():
    used = np.arange(4, dtype=np.float32)
    graph = Graph(
        "weights",
        [Node("add", "Add", ["x", "w_used"], ["y"])],
        {"x": Value("x", np.dtype(np.float32), ("N", 4)), "extra": Value("extra", np.dtype(np.float32), ("N", 4)),
         "y": Value("y", np.dtype(np.float32), ("N", 4)),
         "w_used": Value("w_used", used.dtype, used.shape, used),
         "w_stale": Value("w_stale", used.dtype, used.shape, used.copy()),
         "w_out": Value("w_out", used.dtype, used.shape, used.copy())},
        ["x", "extra"], ["y", "w_out"],
    )
    original = copy.deepcopy(graph)

    eliminate_dead_layers(graph)
    graph.validate()

    assert "w_stale" not in graph.values
    assert graph.values["w_used"].is_const and graph.values["w_out"].is_const, "a weight that is a graph output stays"
    assert graph.inputs == ["x", "extra"], "graph inputs stay even when unread: users bind them"
    assert len(graph.nodes) == 1
    assert_same_outputs(original, graph, random_feeds(graph))


def test_light_resnet50_with_a_dangling_head():
    """A real network with an auxiliary head that feeds no output: the head goes, nothing else."""
    model = seeded_weights(load("resnet50"), seed=0)
    mid = next(n for n in model.graph.node if n.op_type == "Relu").output[0]
    model.graph.node.extend([
        helper.make_node("GlobalAveragePool", [mid], ["aux_pool"], name="aux_pool"),
        helper.make_node("Flatten", ["aux_pool"], ["aux_flat"], name="aux_flat"),
        helper.make_node("Sigmoid", ["aux_flat"], ["aux_prob"], name="aux_prob"),
    ])
    graph = import_model(model)
    original = copy.deepcopy(graph)
    before = len(graph.nodes)

    eliminate_dead_layers(graph)
    graph.validate()

    assert len(graph.nodes) == before - 3
    assert not {"aux_pool", "aux_flat", "aux_prob"} & {n.name for n in graph.nodes}
    assert_same_outputs(original, graph, random_feeds(graph, batch=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_light_models_lose_only_unread_weights(name):
    """The model-zoo graphs as shipped (weights built by ConstantOfShape): every node is live; a few
    carry an initializer no node reads (resnet50, zfnet512: a data-queue blob), and those go."""
    graph = import_model(load(name))
    nodes = [n.name for n in graph.nodes]
    read = {i for n in graph.nodes for i in n.inputs}
    weights = {v.name for v in graph.constants()}

    eliminate_dead_layers(graph)
    graph.validate()

    assert [n.name for n in graph.nodes] == nodes
    assert {v.name for v in graph.constants()} == weights & read


@pytest.mark.parametrize("name", ["resnet50", "shufflenet", "squeezenet"])
def test_light_models_with_seeded_weights_still_match(name):
    graph = import_model(seeded_weights(load(name), seed=0))
    original = copy.deepcopy(graph)
    before = len(graph.nodes)

    eliminate_dead_layers(graph)
    graph.validate()

    assert len(graph.nodes) == before
    assert_same_outputs(original, graph, random_feeds(graph, batch=1), rtol=1e-4, atol=1e-5)
