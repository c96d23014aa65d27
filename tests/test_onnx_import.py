import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import engine
from engine.errors import ModelImportError, UnsupportedOpsError
from engine.onnx_import import import_model
from tests.helpers import tiny_model, weighted_model


def test_initializers_listed_as_inputs_are_weights_not_inputs():
    graph = import_model(weighted_model(initializers_as_inputs=True))
    assert graph.inputs == ["x"]
    assert graph.value("w").is_const
    np.testing.assert_array_equal(graph.value("w").const, [0, 1, 2])


def test_symbolic_batch_becomes_N_and_shapes_are_inferred():
    graph = import_model(tiny_model(batch="batch_size"))
    assert graph.value("x").shape == ("batch_size", 3)
    assert graph.value("r").shape == ("batch_size", 3)  # from ONNX shape inference
    plan = engine.build(tiny_model(batch="batch_size"))
    assert plan.inputs[0]["shape"] == ["N", 3]
    assert plan.outputs[0]["shape"] == ["N", 3]
    assert plan.header["max_batch"] == 256


def test_fixed_batch_is_kept_and_other_max_batches_refused():
    plan = engine.build(tiny_model(batch=4))
    assert plan.inputs[0]["shape"] == [4, 3] and plan.header["max_batch"] == 4
    with pytest.raises(engine.BuildError, match="fixed batch of 4"):
        engine.build(tiny_model(batch=4), engine.BuildConfig(max_batch=8))


def test_truncated_and_foreign_files_name_the_file(tmp_path):
    data = tiny_model().SerializeToString()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelImportError, match=r"cut\.onnx.*truncated"):
        import_model(cut)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelImportError, match="empty"):
        import_model(empty)
    with pytest.raises(ModelImportError, match="no such file"):
        import_model(tmp_path / "missing.onnx")


def test_every_unsupported_op_is_listed_once_with_its_nodes():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("FancyOp", ["a"], ["b"], name="fancy1"),
        helper.make_node("FancyOp", ["b"], ["c"], name="fancy2"),
        helper.make_node("Mystery", ["c"], ["y"], name="mystery1"),
    ]
    graph = helper.make_graph(nodes, "odd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedOpsError) as info:
        import_model(model)
    message = str(info.value)
    assert "2 operator(s)" in message
    assert "FancyOp (opset 13): 2 node(s): fancy1, fancy2" in message
    assert "Mystery (opset 13): 1 node(s): mystery1" in message
    assert "Relu (" not in message


def test_old_opset_models_are_upgraded():
    model = weighted_model(opset=6)
    plan = engine.build(model)
    assert plan.header["opsets"][""] == 7
    ctx = engine.Engine(plan).create_context()
    np.testing.assert_allclose(ctx.run({"x": np.ones((2, 3), np.float32)})["y"], [[1, 2, 3]] * 2)


def test_shape_subgraphs_that_compute_a_reshape_target():
    """Shape -> Gather -> Concat with a constant -> Reshape: the usual exported flatten."""
    shape_nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Constant", [], ["zero"], name="c0", value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsq"),
        helper.make_node("ConstantOfShape", ["one"], ["minus1"], name="cos",
                         value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape"),
    ]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "axes"), numpy_helper.from_array(np.array([1], np.int64), "one")]
    graph = helper.make_graph(shape_nodes, "flatten", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    plan = engine.build(model)
    assert plan.outputs[0]["shape"] == ["N", 6]  # recorded by the build's shape probe
    x = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    np.testing.assert_array_equal(engine.Engine(plan).create_context().run({"x": x})["y"], x.reshape(4, 6))


def test_models_without_an_input_shape_need_one():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "noshape",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(engine.BuildError, match="--input-shape x:"):
        engine.build(model)
    plan = engine.build(model, engine.BuildConfig(input_shapes={"x": (2, 5)}))
    assert plan.inputs[0]["shape"] == [2, 5]
