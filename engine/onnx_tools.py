"""Build-side ONNX utilities for tests and benchmarks (imports onnx; never used by the runtime).

- `seeded_weights(model, seed)`: give a model seeded random weights of a sensible scale. The light_*
  model-zoo graphs in the onnx package carry no weights: each is a ConstantOfShape node filling a
  constant. Those nodes become initializers too.
- `expose_logits(model)`: make a final Softmax's input a graph output too.
- `with_batch(model, batch)`: set the batch dimension of every input (and the output shapes' first
  dimension), so the same model can be timed at batch 8 by this engine and by onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def seeded_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    model = _materialize_constant_of_shape(model)
    rng = np.random.default_rng(seed)
    roles = _weight_roles(model.graph)
    new_inits = []
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype.kind == "f":
            array = _random_like(array, roles.get(init.name, ("", 0)), rng)
        new_inits.append(numpy_helper.from_array(array, init.name))
    del model.graph.initializer[:]
    model.graph.initializer.extend(new_inits)
    return model


def _materialize_constant_of_shape(model: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = inits[node.input[0]].astype(np.int64)
            fill = next((numpy_helper.to_array(a.t) for a in node.attribute if a.name == "value"), np.zeros(1, np.float32))
            array = np.full(tuple(shape), fill.reshape(-1)[0], dtype=fill.dtype)
            graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    live = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    live_names = {i.name for i in live}
    inputs = [i for i in graph.input if i.name in live_names or i.name not in inits]
    del graph.input[:]
    graph.input.extend(inputs)
    return model


def _weight_roles(graph: onnx.GraphProto) -> dict[str, tuple[str, int]]:
    """What each weight is for, and its fan-in where it is a layer's weight matrix: BN statistics
    need positive variances and unit-scale gammas, and He-scaled weights keep deep nets finite."""
    inits = {i.name: tuple(i.dims) for i in graph.initializer}
    roles: dict[str, tuple[str, int]] = {}
    bn_roles = {1: "bn_scale", 2: "bn_bias", 3: "bn_mean", 4: "bn_var"}
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for index, name in enumerate(node.input):
            shape = inits.get(name)
            if shape is None:
                continue
            if node.op_type == "BatchNormalization" and index in bn_roles:
                roles[name] = (bn_roles[index], 0)
            elif node.op_type == "Conv" and index == 1:
                roles[name] = ("weight", int(np.prod(shape[1:])))
            elif node.op_type == "Gemm" and index == 1:
                roles[name] = ("weight", shape[1] if attrs.get("transB", 0) else shape[0])
            elif node.op_type == "MatMul" and index == 1:
                roles[name] = ("weight", shape[0])
            elif node.op_type == "Mul":
                roles.setdefault(name, ("scale", 0))
    return roles


def _random_like(array: np.ndarray, role: tuple[str, int], rng: np.random.Generator) -> np.ndarray:
    kind, fan_in = role
    if kind in ("bn_scale", "bn_var", "scale"):
        values = rng.uniform(0.5, 1.5, array.shape)
    elif kind == "weight":
        values = rng.standard_normal(array.shape) * np.sqrt(2.0 / max(fan_in, 1))
    else:
        values = rng.standard_normal(array.shape) * 0.1
    return values.astype(array.dtype)


def with_batch(model: onnx.ModelProto, batch: int | str) -> onnx.ModelProto:
    """Set dim 0 of every runtime input and output; a Reshape whose constant target shape starts with
    the old fixed batch gets 0 there ("copy the input's dim"), so the graph follows the new batch."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    for value in list(graph.input) + list(graph.output):
        if value.name in init_names:
            continue
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            if isinstance(batch, int):
                dims[0].dim_value = batch
            else:
                dims[0].dim_param = batch
    reshape_shapes = {n.input[1] for n in graph.node if n.op_type == "Reshape" and len(n.input) > 1}
    for i, init in enumerate(graph.initializer):
        if init.name in reshape_shapes:
            target = numpy_helper.to_array(init).copy()
            if target.size and target[0] == 1:
                target[0] = 0
                graph.initializer[i].CopyFrom(numpy_helper.from_array(target, init.name))
    del graph.value_info[:]  # stale shapes; inference recomputes them
    return model


def expose_logits(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add the input of a final Softmax as a second graph output: with random weights the softmax
    saturates to one-hot, so comparing it alone would hide differences the logits show."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    last = model.graph.node[-1]
    if last.op_type == "Softmax" and last.input[0] not in {o.name for o in model.graph.output}:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(last.input[0]))
    return model
