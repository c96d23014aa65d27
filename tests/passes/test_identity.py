"""Identity removal: Identity and inference Dropout go; readers are rewired, graph output names kept."""

import copy
import logging

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.network import Network
from engine.onnx_import import import_model
from engine.onnx_tools import seeded_weights
from engine.passes.identity import remove_identities
from tests.light_zoo import load
from tests.passes.util import assert_same_outputs, random_feeds, run_graph


def _onnx_graph(nodes, inputs, outputs, inits=(), opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def _io(name, shape=None, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _ops(graph):
    return [n.op_type for n in graph.nodes]


def test_identity_between_layers_is_removed():
    net = Network("mid")
    x = net.input("x", (None, 4))
    y = net.op("Identity", [net.relu(x, name="relu")], name="copy")
    net.output(net.sigmoid(y, name="sigmoid"), "out")
    graph = net.graph()
    original = copy.deepcopy(graph)

    remove_identities(graph)
    graph.validate()

    assert _ops(graph) == ["Relu", "Sigmoid"]
    assert graph.nodes[1].inputs == ["relu_out"]
    assert "copy_out" not in graph.values
    assert_same_outputs(original, graph, random_feeds(graph, batch=3))


def test_identity_as_graph_output_renames_its_input():
    graph = _onnx_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("Identity", ["r"], ["i1"], name="id1"),
         helper.make_node("Identity", ["i1"], ["out"], name="id2"),
         helper.make_node("Neg", ["r"], ["neg"], name="neg")],
        [_io("x", ["batch", 4])], [_io("out"), _io("neg")],
    )
    original = copy.deepcopy(graph)

    remove_identities(graph)
    graph.validate()

    assert _ops(graph) == ["Relu", "Neg"]
    assert graph.outputs == ["out", "neg"], "users bind the output names: they stay"
    assert graph.nodes[0].outputs == ["out"] and graph.nodes[1].inputs == ["out"]
    assert "r" not in graph.values and "i1" not in graph.values
    assert graph.values["out"].shape == ("batch", 4)
    assert_same_outputs(original, graph, random_feeds(graph))


def test_identity_of_input_weight_or_other_output_is_kept():
    w = np.arange(4, dtype=np.float32)
    graph = _onnx_graph(
        [helper.make_node("Identity", ["x"], ["x_copy"], name="of_input"),
         helper.make_node("Identity", ["w"], ["w_copy"], name="of_weight"),
         helper.make_node("Relu", ["x"], ["y"], name="relu"),
         helper.make_node("Identity", ["y"], ["y_copy"], name="of_output")],
        [_io("x", ["batch", 4])], [_io("x_copy"), _io("w_copy"), _io("y"), _io("y_copy")],
        [numpy_helper.from_array(w, "w")],
    )
    before = [n.name for n in graph.nodes]

    remove_identities(graph)
    graph.validate()

    assert [n.name for n in graph.nodes] == before
    out = run_graph(graph, random_feeds(graph))
    np.testing.assert_array_equal(out["w_copy"], w)
    np.testing.assert_array_equal(out["y_copy"], out["y"])


def test_dropout_before_opset_12_with_unused_mask_is_removed():
    graph = _onnx_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("Dropout", ["r"], ["d", "mask"], ratio=0.3, name="drop"),
         helper.make_node("Sigmoid", ["d"], ["y"], name="sigmoid")],
        [_io("x", ["batch", 4])], [_io("y")], opset=9,
    )
    original = copy.deepcopy(graph)

    remove_identities(graph)
    graph.validate()

    assert _ops(graph) == ["Relu", "Sigmoid"]
    assert "mask" not in graph.values and "d" not in graph.values
    assert_same_outputs(original, graph, random_feeds(graph))


@pytest.mark.parametrize("mask_use", ["read", "graph output"])
def test_dropout_with_used_mask_is_kept(mask_use, caplog):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Dropout", ["r"], ["d", "mask"], name="drop")]
    outputs = [_io("d")]
    if mask_use == "read":
        nodes.append(helper.make_node("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT, name="cast"))
        nodes.append(helper.make_node("Mul", ["d", "mask_f"], ["y"], name="mul"))
        outputs = [_io("y")]
    else:
        outputs.append(_io("mask", elem=TensorProto.BOOL))
    graph = _onnx_graph(nodes, [_io("x", ["batch", 4])], outputs, opset=13)
    original = copy.deepcopy(graph)

    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        remove_identities(graph)
    graph.validate()

    assert "drop not rewritten: its mask output 'mask' is used" in caplog.text

    assert [n.name for n in graph.nodes] == [n.name for n in original.nodes]
    assert_same_outputs(original, graph, random_feeds(graph))


@pytest.mark.parametrize("training", ["absent", "false"])
def test_dropout_12_in_inference_is_removed(training):
    inputs = ["ratio"] + (["train"] if training == "false" else [])
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
             numpy_helper.from_array(np.array(False), "train")]
    graph = _onnx_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("Dropout", ["r"] + inputs, ["d"], name="drop_mid"),
         helper.make_node("Sigmoid", ["d"], ["s"], name="sigmoid"),
         helper.make_node("Dropout", ["s"] + inputs, ["out"], name="drop_last")],
        [_io("x", ["batch", 4])], [_io("out")], inits, opset=13,
    )
    original = copy.deepcopy(graph)

    remove_identities(graph)
    graph.validate()

    assert _ops(graph) == ["Relu", "Sigmoid"]
    assert graph.nodes[1].inputs == ["r"] and graph.nodes[1].outputs == ["out"]
    assert_same_outputs(original, graph, random_feeds(graph))


@pytest.mark.parametrize("training", ["true", "computed"])
def test_dropout_12_in_training_mode_is_kept(training, caplog):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Dropout", ["r", "ratio", "train"], ["d"], seed=3, name="drop"),
             helper.make_node("Neg", ["d"], ["y"], name="neg")]
    inputs = [_io("x", ["batch", 4])]
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "ratio")]
    if training == "true":
        inits.append(numpy_helper.from_array(np.array(True), "train"))
    else:
        inputs.append(_io("train", [], TensorProto.BOOL))
    graph = _onnx_graph(nodes, inputs, [_io("y")], inits, opset=13)

    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        remove_identities(graph)
    graph.validate()

    assert "drop not rewritten: training_mode" in caplog.text

    assert _ops(graph) == ["Relu", "Dropout", "Neg"]


def test_network_without_identities_is_unchanged():
    net = Network("plain")
    x = net.input("x", (None, 4))
    net.output(net.relu(net.sigmoid(x)), "y")
    graph = net.graph()
    original = copy.deepcopy(graph)

    remove_identities(graph)

    wiring = [(n.name, n.inputs, n.outputs) for n in graph.nodes]
    assert wiring == [(n.name, n.inputs, n.outputs) for n in original.nodes]
    assert graph.outputs == original.outputs


@pytest.mark.parametrize("name,dropouts", [("squeezenet", 1), ("inception_v1", 1), ("bvlc_alexnet", 2)])
def test_light_models_lose_their_dropouts(name, dropouts):
    graph = import_model(seeded_weights(load(name), seed=0))
    original = copy.deepcopy(graph)
    before = len(graph.nodes)
    assert graph.op_counts().get("Dropout") == dropouts

    remove_identities(graph)
    graph.validate()

    assert len(graph.nodes) == before - dropouts
    assert "Dropout" not in graph.op_counts()
    assert graph.outputs == original.outputs
    assert_same_outputs(original, graph, random_feeds(graph, batch=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["densenet121", "inception_v2", "resnet50", "shufflenet", "vgg19", "zfnet512"])
def test_other_light_models(name):
    """As shipped (ConstantOfShape weights, cheap to import): only Dropouts go."""
    graph = import_model(load(name))
    counts = graph.op_counts()

    remove_identities(graph)
    graph.validate()

    assert len(graph.nodes) == sum(counts.values()) - counts.get("Dropout", 0)
