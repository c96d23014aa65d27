"""IR -> ONNX: `to_onnx(graph)` writes a Graph as an ONNX model, weights included.

The point is comparison: onnxruntime, PyTorch or any other ONNX consumer can then run exactly the
network and weights this engine runs. Attribute types come from the operator's ONNX schema at the
graph's opset (so alpha=1 is written as the FLOAT the schema wants, and an empty list gets its
type); ops of custom domains, which have no schema, get types from the Python values. Symbolic
dimensions ("N") become dim_params. The IR version is the lowest that the graph's opsets allow,
so older runtimes can read the file too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, helper, numpy_helper

from engine.ir import Graph, Node, Value

PRODUCER = "batchscore"

_LIST_TYPES = {
    AttributeProto.INTS: int,
    AttributeProto.FLOATS: float,
    AttributeProto.STRINGS: str,
}


def to_onnx(graph: Graph, *, check: bool = True) -> onnx.ModelProto:
    """The ONNX model of `graph`; with `check`, onnx.checker must accept it."""
    graph.validate()
    opsets = dict(graph.opsets)
    inputs = [_value_info(graph.value(name), "graph input") for name in graph.inputs]
    outputs = [_value_info(graph.value(name), "graph output") for name in graph.outputs]
    io_names = set(graph.inputs) | set(graph.outputs)
    value_info = [
        _value_info(v, "value")
        for v in graph.values.values()
        if not v.is_const and v.name not in io_names and v.dtype is not None and v.shape is not None
    ]
    nodes = [_node(n, opsets) for n in graph.nodes]
    g = helper.make_graph(nodes, graph.name, inputs, outputs, value_info=value_info)
    opset_imports = [helper.make_opsetid(d, v) for d, v in sorted(opsets.items())]
    model = helper.make_model(g, opset_imports=opset_imports, producer_name=PRODUCER)
    # Weights go straight into the model's own list: protobuf copies messages on every
    # make_graph/make_model/extend, which for vgg19's 575 MB costs seconds.
    for value in graph.constants():
        if value.name not in graph.inputs:
            _fill_tensor(model.graph.initializer.add(), value)
    model.ir_version = helper.find_min_ir_version_for(
        [o for o in opset_imports if o.domain in ("", "ai.onnx", "ai.onnx.ml", "ai.onnx.training")], ignore_unknown=True
    )
    if check:
        onnx.checker.check_model(model)
    return model


def save_onnx(graph: Graph, path: str) -> None:
    """Write `graph` to an ONNX file (weights inline; over 2 GB needs external data, not done here)."""
    onnx.save_model(to_onnx(graph), path)


_RAW_KINDS = "fiub"  # numpy's own numeric types: raw little-endian bytes are ONNX's layout


def _fill_tensor(tensor: onnx.TensorProto, value: Value) -> None:
    array = value.const
    if array.dtype.kind in _RAW_KINDS and array.dtype.itemsize <= 8 and array.dtype.name in np.sctypeDict:
        tensor.name = value.name
        tensor.dims.extend(array.shape)
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.raw_data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    else:  # ml_dtypes (bfloat16, float8, int4), strings: numpy_helper knows their encodings
        tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), name=value.name))


def _value_info(value: Value, what: str) -> onnx.ValueInfoProto:
    dtype = value.dtype if value.dtype is not None else (value.const.dtype if value.is_const else None)
    if dtype is None:
        raise ValueError(f"{what} '{value.name}' has no dtype; ONNX needs one")
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    if value.shape is None:
        return helper.make_tensor_value_info(value.name, elem, None)
    dims = [d if isinstance(d, int) else (None if d == "?" else str(d)) for d in value.shape]
    return helper.make_tensor_value_info(value.name, elem, dims)


def _node(node: Node, opsets: dict[str, int]) -> onnx.NodeProto:
    schema = _schema(node, opsets)
    attrs = [_attribute(node, key, val, schema) for key, val in node.attrs.items()]
    proto = helper.make_node(node.op_type, node.inputs, node.outputs, name=node.name, domain=node.domain or None)
    proto.attribute.extend(attrs)
    return proto


def _schema(node: Node, opsets: dict[str, int]):
    version = opsets.get(node.domain)
    if version is None:
        raise ValueError(f"{node.describe()} is in domain '{node.domain}', which the graph's opsets do not import")
    try:
        return onnx.defs.get_schema(node.op_type, version, node.domain)
    except onnx.defs.SchemaError:
        if node.domain in ("", "ai.onnx"):
            raise ValueError(f"{node.describe()}: ONNX has no operator '{node.op_type}' at opset {version}") from None
        return None  # a custom domain: no schema to consult


def _attribute(node: Node, key: str, val: Any, schema) -> AttributeProto:
    if schema is not None:
        if key not in schema.attributes:
            raise ValueError(f"{node.describe()}: ONNX {node.op_type}-{schema.since_version} has no attribute '{key}'")
        kind = schema.attributes[key].type
        return _typed_attribute(node, key, val, kind)
    if isinstance(val, np.ndarray):
        return helper.make_attribute(key, numpy_helper.from_array(val, name=key))
    if isinstance(val, np.generic):
        val = val.item()
    if isinstance(val, (list, tuple)) and not val:
        raise ValueError(f"{node.describe()}: empty list attribute '{key}' of a custom op has no type to write")
    return helper.make_attribute(key, list(val) if isinstance(val, tuple) else val)


def _typed_attribute(node: Node, key: str, val: Any, kind) -> AttributeProto:
    try:
        if kind == AttributeProto.FLOAT:
            return helper.make_attribute(key, float(val))
        if kind == AttributeProto.INT:
            return helper.make_attribute(key, int(val))
        if kind == AttributeProto.STRING:
            return helper.make_attribute(key, val.encode() if isinstance(val, str) else bytes(val))
        if kind in _LIST_TYPES:
            cast = _LIST_TYPES[kind]
            items = [v.encode() if isinstance(v, str) else v for v in val] if cast is str else [cast(v) for v in val]
            return helper.make_attribute(key, items, attr_type=kind)
        if kind == AttributeProto.TENSOR:
            return helper.make_attribute(key, numpy_helper.from_array(np.asarray(val), name=key))
        if kind == AttributeProto.TENSORS:
            return helper.make_attribute(key, [numpy_helper.from_array(np.asarray(v)) for v in val])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{node.describe()}: attribute '{key}'={val!r} does not fit its ONNX type: {exc}") from None
    raise ValueError(f"{node.describe()}: attribute '{key}' has ONNX type {AttributeProto.AttributeType.Name(kind)}, "
                     f"which this exporter does not write")
