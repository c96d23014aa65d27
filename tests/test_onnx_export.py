"""engine.onnx_export.to_onnx: checker-valid models that onnxruntime runs to the engine's numbers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import engine
from engine.builder import BuildConfig
from engine.custom_ops import CUSTOM_DOMAIN, register_custom_op
from engine.ir import Graph, Node, Value
from engine.network import Network
from engine.onnx_export import to_onnx
from engine.onnx_import import import_model

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(1)


def rand(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def engine_run(model, feeds):
    plan = engine.build(model, BuildConfig(probe=False))
    return engine.Engine(plan).create_context().run(feeds)


def ort_run(model: onnx.ModelProto, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def every_layer_network(opset: int = 17) -> Network:
    """One network that uses every Network method, with awkward settings where they exist."""
    net = Network("every_layer", opset=opset)
    x = net.input("image", (None, 4, 13, 12))
    y = net.conv(x, rand(8, 4, 3, 3) * 0.3, rand(8), stride=(2, 1), pad=(1, 0, 0, 2), name="conv_a")
    y = net.batch_norm(y, rand(8), rand(8), rand(8), np.abs(rand(8)) + 0.5, eps=1e-3)
    y = net.leaky_relu(y, 0.1)
    g = net.conv(y, rand(8, 2, 3, 3) * 0.3, groups=4, dilation=2, pad=2)
    y = net.add(y, net.mul(net.sigmoid(g), 2.0))
    y = net.lrn(y, 5, alpha=1e-3, beta=0.75, bias=2.0)
    a = net.max_pool(y, 3, 2, 1, ceil_mode=True)
    b = net.avg_pool(y, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    c = net.avg_pool(y, 3, 2, 1, ceil_mode=True)
    y = net.concat([a, b, net.tanh(c)], axis=1)
    y = net.clip(net.sub(y, rand(24, 1, 1)), -1.0, 3.0)
    y = net.div(net.relu(y), np.float32(1.5))
    flat = net.flatten(net.global_avg_pool(y))
    logits = net.gemm(flat, rand(10, 24), rand(10), trans_b=True, alpha=0.7)
    net.output(net.softmax(logits), "prob")
    net.output(net.reshape(y, (0, -1)), "features")
    return net


@pytest.mark.parametrize("opset", [10, 11, 13, 17])
def test_exported_network_runs_the_same_in_onnxruntime(opset):
    graph = every_layer_network(opset).graph()
    model = to_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    feeds = {"image": rand(2, 4, 13, 12)}
    ours, theirs = engine_run(graph, feeds), ort_run(model, feeds)
    assert set(ours) == set(theirs) == {"prob", "features"}
    for name in ours:
        assert ours[name].shape == theirs[name].shape
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_model_carries_shapes_names_and_weights():
    graph = every_layer_network().graph()
    model = to_onnx(graph)
    assert [o.version for o in model.opset_import if o.domain == ""] == [17]
    assert model.ir_version <= onnx.IR_VERSION and model.producer_name == "batchscore"
    (inp,) = model.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [4, 13, 12]
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert set(weights) == {v.name for v in graph.constants()}
    np.testing.assert_array_equal(weights["conv_a.weight"], graph.value("conv_a.weight").const)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {v.name: v for v in inferred.graph.value_info}
    conv_out = shapes["conv_a_out"].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in conv_out] == ["N", 8, 6, 12]
    nodes = {n.name: n for n in model.graph.node}
    conv_attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes["conv_a"].attribute}
    assert conv_attrs["pads"] == [1, 0, 0, 2] and conv_attrs["strides"] == [2, 1] and conv_attrs["group"] == 1


def test_attribute_types_come_from_the_schema():
    net = Network("t")
    x = net.input("x", (None, 3))
    y = net.op("LeakyRelu", [x], {"alpha": 1})  # an int where ONNX wants a FLOAT
    z = net.op("Transpose", [y], {"perm": (1, 0)})  # a tuple where ONNX wants INTS
    net.output(z)
    model = to_onnx(net.graph())
    attrs = {a.name: a for n in model.graph.node for a in n.attribute}
    assert attrs["alpha"].type == onnx.AttributeProto.FLOAT and attrs["alpha"].f == 1.0
    assert attrs["perm"].type == onnx.AttributeProto.INTS and list(attrs["perm"].ints) == [1, 0]
    feeds = {"x": rand(2, 3)}
    np.testing.assert_array_equal(ort_run(model, feeds)[z.name], engine_run(net.graph(), feeds)[z.name])


def test_round_trip_through_the_importer():
    graph = every_layer_network().graph()
    feeds = {"image": rand(1, 4, 13, 12)}
    direct = engine_run(graph, feeds)
    reimported = import_model(to_onnx(graph))
    assert [n.op_type for n in reimported.nodes] == [n.op_type for n in graph.nodes]
    again = engine_run(reimported, feeds)
    for name in direct:
        np.testing.assert_array_equal(direct[name], again[name])


def test_imported_models_export_too():
    """A Graph from onnx_import (values without shapes, tensor attributes) exports and runs."""
    net = Network("t")
    x = net.input("x", (2, 3))
    net.output(net.op("ConstantOfShape", [np.array([2, 3], dtype=np.int64)], {"value": np.array([2.5], np.float32)}),
               "c")
    net.output(net.add(x, 1.0), "y")
    model = to_onnx(import_model(to_onnx(net.graph())))
    out = ort_run(model, {"x": rand(2, 3)})
    np.testing.assert_array_equal(out["c"], np.full((2, 3), 2.5, np.float32))


def power(x, *, power=2):
    return x ** power


def same_shape(shapes, attrs):
    return shapes[0]


def test_custom_ops_are_exported_in_their_domain():
    register_custom_op("ExportPower", power, same_shape)
    net = Network("t")
    x = net.input("x", (None, 3))
    net.output(net.custom("ExportPower", [x], {"power": 3}))
    model = to_onnx(net.graph())
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17), (CUSTOM_DOMAIN, 1)}
    (node,) = model.graph.node
    assert node.domain == CUSTOM_DOMAIN and node.attribute[0].i == 3


def test_bad_graphs_are_refused_with_the_node_named():
    x = Value("x", np.dtype(np.float32), (1, 3))
    y = Value("y", np.dtype(np.float32), (1, 3))
    bad_attr = Graph("g", [Node("r1", "Relu", ["x"], ["y"], {"alpha": 1.0})], {"x": x, "y": y}, ["x"], ["y"], {"": 17})
    with pytest.raises(ValueError, match="'r1'.*no attribute 'alpha'"):
        to_onnx(bad_attr)
    bad_op = Graph("g", [Node("q", "NotAnOnnxOp", ["x"], ["y"])], {"x": x, "y": y}, ["x"], ["y"], {"": 17})
    with pytest.raises(ValueError, match="'q'.*no operator 'NotAnOnnxOp'"):
        to_onnx(bad_op)
