"""Small ONNX models for tests, built with onnx.helper."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def tiny_model(batch="batch", opset: int = 13) -> "helper.ModelProto":
    """y = relu(x) + x, with x of shape (batch, 3): the smallest model with a symbolic batch."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu1"), helper.make_node("Add", ["r", "x"], ["y"], name="add1")]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def weighted_model(opset: int = 13, initializers_as_inputs: bool = False) -> "helper.ModelProto":
    """y = x + w with a weight initializer (listed as a graph input too, if asked, as old exporters do)."""
    w = np.arange(3, dtype=np.float32)
    init = numpy_helper.from_array(w, "w")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])]
    if initializers_as_inputs:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [3]))
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"], name="add_w")], "weighted", inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], initializer=[init],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
