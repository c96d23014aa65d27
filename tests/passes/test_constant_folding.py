"""Constant folding: weight-only subgraphs, static Shape, and Reshape/Expand targets on a symbolic batch."""

import copy
import logging

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import engine
from engine.builder import BuildConfig
from engine.ir import Graph, Node, Value
from engine.network import Network
from engine.onnx_import import import_model
from engine.onnx_tools import seeded_weights
from engine.passes import constant_folding
from engine.passes.constant_folding import expand_target, fold_constants, reshape_target
from tests.light_zoo import MODELS, load
from tests.passes.util import assert_same_outputs, random_feeds

F32 = TensorProto.FLOAT


def _onnx_graph(nodes, inputs, outputs, inits=(), opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def _io(name, shape=None, elem=F32):
    return helper.make_tensor_value_info(name, elem, shape)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _ops(graph):
    return [n.op_type for n in graph.nodes]


def record_shapes(graph: Graph) -> Graph:
    """What the builder does before the passes run: probe the graph at batch 1 and 2 and record
    every value's shape, with "N" for the batch."""
    plan = engine.build(copy.deepcopy(graph), BuildConfig(optimize=False))
    for name in graph.inputs:
        shape = graph.values[name].shape
        if shape and isinstance(shape[0], str):
            graph.values[name].shape = ("N",) + tuple(shape[1:])
    for name, entry in plan.header["values"].items():
        if name in graph.values:
            graph.values[name].shape = tuple(entry["shape"])
    return graph


# -------------------------------------------------------------------- ordinary folding


def test_weight_preprocessing_chain_is_folded():
    graph = _onnx_graph(
        [helper.make_node("Unsqueeze", ["scale", "axes"], ["scale_u"], name="unsqueeze"),
         helper.make_node("Mul", ["scale_u", "two"], ["scale_2"], name="double"),
         helper.make_node("Add", ["x", "scale_2"], ["y"], name="add")],
        [_io("x", ["batch", 3, 4, 4])], [_io("y")],
        [_init("scale", np.array([1, 2, 3], np.float32)), _init("axes", np.array([1, 2], np.int64)),
         _init("two", np.array(2, np.float32))],
    )
    original = copy.deepcopy(graph)

    fold_constants(graph)
    graph.validate()

    assert _ops(graph) == ["Add"]
    folded = graph.values["scale_2"]
    assert folded.is_const and folded.shape == (3, 1, 1) and folded.dtype == np.float32
    np.testing.assert_array_equal(folded.const.ravel(), [2, 4, 6])
    assert {"scale", "axes", "two", "scale_u"}.isdisjoint(graph.values), "inputs only the folded nodes read go"
    assert_same_outputs(original, graph, random_feeds(graph, batch=2))


def test_constant_of_shape_weight_is_folded():
    graph = _onnx_graph(
        [helper.make_node("ConstantOfShape", ["w_shape"], ["w"], name="make_w",
                          value=helper.make_tensor("v", F32, [1], [0.02])),
         helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        [_io("x", ["batch", 3, 5, 5])], [_io("y")], [_init("w_shape", np.array([4, 3, 3, 3], np.int64))],
    )
    original = copy.deepcopy(graph)

    fold_constants(graph)
    graph.validate()

    assert _ops(graph) == ["Conv"]
    assert graph.values["w"].is_const and graph.values["w"].const.shape == (4, 3, 3, 3)
    np.testing.assert_array_equal(graph.values["w"].const, np.float32(0.02))
    assert "w_shape" not in graph.values
    assert_same_outputs(original, graph, random_feeds(graph, batch=2))


def test_data_path_is_left_alone():
    net = Network("plain")
    x = net.input("x", (None, 3, 8, 8))
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    net.output(net.relu(net.conv(x, w, np.zeros(4, np.float32), pad=1)), "y")
    graph = net.graph()
    before = [(n.name, list(n.inputs)) for n in graph.nodes]

    fold_constants(graph)

    assert [(n.name, n.inputs) for n in graph.nodes] == before


def test_multi_output_split_of_a_weight_is_folded():
    # Split-13 decides its output count from the node: the pass passes num_outputs as the runtime does.
    graph = _onnx_graph(
        [helper.make_node("Split", ["w"], ["w0", "w1"], axis=0, name="split"),
         helper.make_node("Add", ["x", "w0"], ["a"], name="add0"),
         helper.make_node("Mul", ["x", "w1"], ["b"], name="mul1")],
        [_io("x", ["batch", 3])], [_io("a"), _io("b")],
        [_init("w", np.arange(6, dtype=np.float32).reshape(2, 3))],
    )
    original = copy.deepcopy(graph)

    fold_constants(graph)
    graph.validate()

    assert _ops(graph) == ["Add", "Mul"]
    np.testing.assert_array_equal(graph.values["w1"].const, [[3, 4, 5]])
    assert_same_outputs(original, graph, random_feeds(graph))


def test_constant_graph_output_keeps_its_name():
    graph = _onnx_graph(
        [helper.make_node("Mul", ["w", "w"], ["w_sq"], name="square"),
         helper.make_node("Relu", ["x"], ["y"], name="relu")],
        [_io("x", ["batch", 3])], [_io("y"), _io("w_sq")], [_init("w", np.array([1, -2, 3], np.float32))],
    )
    original = copy.deepcopy(graph)

    fold_constants(graph)
    graph.validate()

    assert _ops(graph) == ["Relu"] and graph.outputs == ["y", "w_sq"]
    assert_same_outputs(original, graph, random_feeds(graph))


def test_random_and_training_dropout_are_not_folded(caplog):
    data = np.ones((2, 3), np.float32)
    values = {name: Value(name, np.dtype(np.float32), (2, 3)) for name in ("x", "r", "d_train", "d_eval", "y", "z")}
    values.update({
        "c": Value("c", data.dtype, data.shape, data),
        "ratio": Value("ratio", np.dtype(np.float32), (), np.array(0.5, np.float32)),
        "on": Value("on", np.dtype(bool), (), np.array(True)),
        "off": Value("off", np.dtype(bool), (), np.array(False)),
    })
    graph = Graph(
        "rnd",
        [Node("rnd", "RandomNormal", [], ["r"], {"shape": [2, 3]}),
         Node("drop_train", "Dropout", ["c", "ratio", "on"], ["d_train"], {"seed": 1}),
         Node("drop_eval", "Dropout", ["c", "ratio", "off"], ["d_eval"]),
         Node("add", "Add", ["x", "r"], ["y"]),
         Node("sum", "Sum", ["y", "d_train", "d_eval"], ["z"])],
        values, ["x"], ["z"], {"": 13},
    )

    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        fold_constants(graph)
    graph.validate()

    assert [n.name for n in graph.nodes] == ["rnd", "drop_train", "add", "sum"]
    assert graph.values["d_eval"].is_const
    assert "rnd not rewritten: random op" in caplog.text
    assert "drop_train not rewritten: training-mode Dropout is random" in caplog.text


def test_large_results_are_not_folded_unless_inputs_are_as_large(monkeypatch):
    monkeypatch.setattr(constant_folding, "MAX_FOLD_BYTES", 1024)
    graph = _onnx_graph(
        [helper.make_node("Expand", ["one", "big_shape"], ["big"], name="expand"),
         helper.make_node("ConstantOfShape", ["big_shape"], ["zeros"], name="zeros"),
         helper.make_node("Transpose", ["w"], ["w_t"], name="transpose"),
         helper.make_node("Add", ["x", "big"], ["a"], name="add_big"),
         helper.make_node("Add", ["a", "zeros"], ["b"], name="add_zeros"),
         helper.make_node("MatMul", ["b", "w_t"], ["y"], name="matmul")],
        [_io("x", ["batch", 1000])], [_io("y")],
        [_init("one", np.ones(1, np.float32)), _init("big_shape", np.array([1000], np.int64)),
         _init("w", np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32))],
    )
    original = copy.deepcopy(graph)

    fold_constants(graph)
    graph.validate()

    # 4000 bytes from 4: refused; ConstantOfShape builds weights: folded; the transpose of a
    # 12000-byte weight is as large as its input: folded.
    assert _ops(graph) == ["Expand", "Add", "Add", "MatMul"]
    assert graph.values["zeros"].is_const and graph.values["w_t"].is_const
    assert_same_outputs(original, graph, random_feeds(graph))


# -------------------------------------------------------------------- Shape and shape subgraphs


def test_static_shape_is_folded():
    graph = _onnx_graph(
        [helper.make_node("Shape", ["x"], ["s"], name="shape"),
         helper.make_node("Gather", ["s", "one"], ["c"], name="gather"),
         helper.make_node("Cast", ["c"], ["cf"], to=F32, name="cast"),
         helper.make_node("Mul", ["x", "cf"], ["y"], name="mul")],
        [_io("x", [2, 3])], [_io("y")], [_init("one", np.array(1, np.int64))],
    )
    original = copy.deepcopy(graph)

    fold_constants(graph)
    graph.validate()

    assert _ops(graph) == ["Mul"]
    assert graph.values["cf"].const == 3
    assert_same_outputs(original, graph, random_feeds(graph))


def test_shape_of_a_symbolic_batch_is_not_folded():
    graph = _onnx_graph(
        [helper.make_node("Shape", ["x"], ["s"], name="shape"),
         helper.make_node("Gather", ["s", "one"], ["c"], name="gather"),
         helper.make_node("Cast", ["c"], ["cf"], to=F32, name="cast"),
         helper.make_node("Mul", ["x", "cf"], ["y"], name="mul")],
        [_io("x", ["batch", 3])], [_io("y")], [_init("one", np.array(1, np.int64))],
    )
    record_shapes(graph)
    original = copy.deepcopy(graph)

    fold_constants(graph)
    graph.validate()

    assert _ops(graph) == ["Shape", "Gather", "Cast", "Mul"]
    assert_same_outputs(original, graph, random_feeds(graph, batch=3))


def test_shape_15_start_skips_the_batch():
    # x.view(-1, *x.shape[2:]) with channels folded into the batch: Shape(start=2) is static.
    graph = _onnx_graph(
        [helper.make_node("Shape", ["x"], ["hw"], start=2, name="shape"),
         helper.make_node("Concat", ["head", "hw"], ["target"], axis=0, name="concat"),
         helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape")],
        [_io("x", ["batch", 3, 4, 5])], [_io("y")], [_init("head", np.array([-1], np.int64))], opset=15,
    )
    original = copy.deepcopy(graph)

    fold_constants(graph)
    graph.validate()

    assert _ops(graph) == ["Reshape"]
    np.testing.assert_array_equal(graph.values[graph.nodes[0].inputs[1]].const, [-1, 4, 5])
    assert_same_outputs(original, graph, random_feeds(graph, batch=2))


def _exported_flatten(opset=13):
    """torch's `x.view(x.size(0), -1)` as exported: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    return _onnx_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("Shape", ["r"], ["s"], name="shape"),
         helper.make_node("Gather", ["s", "zero"], ["n"], axis=0, name="gather"),
         helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsqueeze"),
         helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0, name="concat"),
         helper.make_node("Reshape", ["r", "target"], ["y"], name="flatten")],
        [_io("x", ["batch", 3, 4, 4])], [_io("y")],
        [_init("zero", np.array(0, np.int64)), _init("axes", np.array([0], np.int64)),
         _init("minus_one", np.array([-1], np.int64))],
        opset=opset,
    )


def test_exported_flatten_on_a_symbolic_batch_gets_a_constant_target():
    graph = record_shapes(_exported_flatten())
    assert graph.values["y"].shape == ("N", 48)
    original = copy.deepcopy(graph)

    fold_constants(graph)
    graph.validate()

    assert _ops(graph) == ["Relu", "Reshape"]
    target = graph.values[graph.nodes[1].inputs[1]]
    np.testing.assert_array_equal(target.const, [0, 48])  # 0: copy the batch from the input
    assert not {"s", "n", "n1", "target", "zero", "axes", "minus_one"} & set(graph.values)
    for batch in (1, 5):  # 5: a batch the probe never saw
        assert_same_outputs(original, graph, random_feeds(graph, batch=batch))


def test_flatten_without_recorded_output_shape_is_left_alone(caplog):
    graph = _exported_flatten()
    assert graph.values["y"].shape is None
    original = copy.deepcopy(graph)

    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        fold_constants(graph)
    graph.validate()

    assert _ops(graph) == _ops(original)
    assert "flatten not rewritten: target shape: output shape not recorded" in caplog.text
    assert_same_outputs(original, graph, random_feeds(graph, batch=3))


def test_reshape_whose_target_comes_from_runtime_values_is_left_alone(caplog):
    graph = _onnx_graph(
        [helper.make_node("Relu", ["t"], ["t_pos"], name="relu"),
         helper.make_node("Reshape", ["x", "t_pos"], ["y"], name="reshape")],
        [_io("x", ["batch", 12]), _io("t", [2], TensorProto.INT64)], [_io("y")],
    )
    graph.values["y"].shape = ("N", 12)  # as if recorded: the rule must still not trust it

    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        fold_constants(graph)
    graph.validate()

    assert _ops(graph) == ["Relu", "Reshape"] and graph.nodes[1].inputs == ["x", "t_pos"]
    assert "computed from the values of 't'" in caplog.text


def test_expand_with_computed_target_on_a_symbolic_batch():
    graph = record_shapes(_onnx_graph(
        [helper.make_node("Shape", ["x"], ["s"], name="shape"),
         helper.make_node("Gather", ["s", "first"], ["n"], axis=0, name="gather"),
         helper.make_node("Concat", ["n", "rest"], ["target"], axis=0, name="concat"),
         helper.make_node("Expand", ["x", "target"], ["y"], name="expand")],
        [_io("x", ["batch", 1, 4])], [_io("y")],
        [_init("first", np.array([0], np.int64)), _init("rest", np.array([3, 4], np.int64))],
    ))
    assert graph.values["y"].shape == ("N", 3, 4)
    original = copy.deepcopy(graph)

    fold_constants(graph)
    graph.validate()

    assert _ops(graph) == ["Expand"]
    np.testing.assert_array_equal(graph.values[graph.nodes[0].inputs[1]].const, [1, 3, 4])
    for batch in (2, 3):
        assert_same_outputs(original, graph, random_feeds(graph, batch=batch))


def test_reshape_target_rule():
    assert reshape_target(("N", 3, 4, 4), ("N", 48)) == [0, 48]
    assert reshape_target(("N", 3, 4, 4), ("N", 48), allowzero=1) == [-1, 48]
    assert reshape_target((3, "N"), ("N", 3)) == [-1, 3]  # the batch moved: infer it
    assert reshape_target(None, ("N", 48)) == [-1, 48]
    assert reshape_target((2, 6), (3, 4)) == [3, 4]
    assert isinstance(reshape_target(("N", "S", 4), ("N", "S", 4)), str)  # two unknowns
    assert isinstance(reshape_target(("N", 0), ("N", 0)), str)  # a zero dim would mean "copy"


def test_expand_target_rule():
    assert expand_target(("N", 1, 4), ("N", 3, 4)) == [1, 3, 4]
    assert expand_target(("N", 1, 4), (2, "N", 3, 4)) == [2, 1, 3, 4]
    assert isinstance(expand_target((1, 4), ("N", 4)), str)  # the batch does not come from the input
    assert isinstance(expand_target(None, ("N", 4)), str)


# -------------------------------------------------------------------- the light_* model zoo


def _data_path(graph):
    """Names of the nodes that depend, transitively, on a runtime input: what folding must keep."""
    live, names = set(graph.inputs), []
    for node in graph.nodes:
        if any(i in live for i in node.inputs):
            live.update(node.outputs)
            names.append(node.name)
    return names


@pytest.mark.parametrize("name", MODELS)
def test_light_models_as_shipped_fold_to_their_data_path(name):
    graph = import_model(load(name))
    data_path = _data_path(graph)

    fold_constants(graph)
    graph.validate()

    # Everything else is weight generation: ConstantOfShape everywhere, the Unsqueezes of
    # densenet121's and inception_v2's BN-style scales, inception_v1's Reshape of its fc weight.
    assert [n.name for n in graph.nodes] == data_path
    assert "ConstantOfShape" not in graph.op_counts()


def test_light_resnet50_as_shipped_matches_after_folding():
    graph = import_model(load("resnet50"))
    original = copy.deepcopy(graph)

    fold_constants(graph)

    assert len(graph.nodes) == 176 and "ConstantOfShape" not in graph.op_counts()
    assert_same_outputs(original, graph, random_feeds(graph, batch=1), rtol=1e-4, atol=1e-5)


def test_light_inception_v2_with_seeded_weights_matches_after_folding():
    """Its BN-style scales are Unsqueezed weights (as in densenet121, which costs twice the time)."""
    graph = import_model(seeded_weights(load("inception_v2"), seed=0))
    original = copy.deepcopy(graph)
    unsqueezes = graph.op_counts()["Unsqueeze"]

    fold_constants(graph)
    graph.validate()

    assert len(graph.nodes) == len(original.nodes) - unsqueezes
    assert_same_outputs(original, graph, random_feeds(graph, batch=1), rtol=1e-4, atol=1e-5)
