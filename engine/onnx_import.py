"""ONNX -> IR.

Reads an ONNX file, bytes or ModelProto; runs ONNX shape inference; turns initializers into
constant Values (also when an old exporter lists them as graph inputs too); converts attributes to
plain Python values; and refuses a model that uses operators without a kernel with one error that
lists every such op, its node names and the opset. Only the build side imports this module.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from engine.errors import ModelImportError, UnsupportedOpsError
from engine.ir import Graph, Node, Shape, Value
from kernels.cpu import CPU_OPS

log = logging.getLogger("batchscore.build")

MIN_OPSET = 7  # older models are upgraded with ONNX's version converter on import
DEFAULT_DOMAINS = ("", "ai.onnx")


def load_model(model: str | os.PathLike | bytes | onnx.ModelProto) -> onnx.ModelProto:
    """Read a model, with errors that name the file and say what is wrong with it."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        source, data = "<bytes>", model
    else:
        path = Path(model)
        source = str(path)
        if not path.exists():
            raise ModelImportError(f"{source}: no such file")
        if path.is_dir():
            raise ModelImportError(f"{source}: is a directory, not an ONNX file")
        data = path.read_bytes()
    if not data:
        raise ModelImportError(f"{source}: the file is empty, not an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError or RuntimeError on damaged input
        raise ModelImportError(
            f"{source}: not a readable ONNX model ({len(data)} bytes; the protobuf parser says: "
            f"{exc}). The file may be truncated or not an ONNX file at all."
        ) from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelImportError(f"{source}: parsed, but holds no graph; is it really an ONNX model?")
    if source != "<bytes>":
        _load_external_data(proto, Path(source).parent)
    return proto


def _load_external_data(proto: onnx.ModelProto, base_dir: Path) -> None:
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(base_dir))
        except OSError as exc:
            raise ModelImportError(f"cannot read the model's external weight data: {exc}") from None


def import_model(model: str | os.PathLike | bytes | onnx.ModelProto, name: str | None = None) -> Graph:
    proto = load_model(model)
    opsets = _opsets(proto)
    opset = opsets.get("", 0)
    if opset < MIN_OPSET:
        proto = _upgrade(proto, opset)
        opsets = _opsets(proto)
        opset = opsets[""]
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ModelImportError(f"model uses ONNX opset {opset}, newer than the {newest} this onnx package knows")
    _check_supported(proto.graph, opsets)
    inferred = _infer_shapes(proto)
    graph_name = name or proto.graph.name or "model"
    return _to_graph(inferred.graph, graph_name, opsets)


def _upgrade(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Models older than opset 7 (legacy broadcast attributes) go through ONNX's version converter,
    so the kernels only ever see opset 7+ semantics."""
    from onnx import version_converter

    try:
        try:
            upgraded = version_converter.convert_version(proto, MIN_OPSET)
        except Exception:
            # Some of the converter's adapters insist on numeric dims: convert a copy whose symbolic
            # dims are 1, then put the model's own input and output declarations back.
            upgraded = version_converter.convert_version(_with_unit_dims(proto), MIN_OPSET)
            for mine, theirs in ((proto.graph.input, upgraded.graph.input), (proto.graph.output, upgraded.graph.output)):
                del theirs[:]
                theirs.extend(mine)
            del upgraded.graph.value_info[:]
    except Exception as exc:
        raise ModelImportError(
            f"model '{proto.graph.name}' uses ONNX opset {opset}; the earliest this engine runs is "
            f"{MIN_OPSET}, and ONNX's version converter could not upgrade it: {exc}"
        ) from None
    _channel_prelu_slopes(upgraded)
    log.info("upgraded model '%s' from opset %d to %d", proto.graph.name, opset, MIN_OPSET)
    return upgraded


def _channel_prelu_slopes(proto: onnx.ModelProto) -> None:
    """PRelu before opset 7 applied a 1-D slope per channel (axis 1); from opset 7 it broadcasts from
    the right. The version converter leaves such slopes alone, so reshape them to (C, 1, ..., 1)."""
    inits = {init.name: init for init in proto.graph.initializer}
    ranks = {}
    for info in shape_inference.infer_shapes(proto).graph.value_info[:] or []:
        ranks[info.name] = len(info.type.tensor_type.shape.dim)
    for info in proto.graph.input:
        ranks[info.name] = len(info.type.tensor_type.shape.dim)
    for node in proto.graph.node:
        if node.op_type != "PRelu" or node.input[1] not in inits:
            continue
        slope = numpy_helper.to_array(inits[node.input[1]])
        rank = ranks.get(node.input[0], 0)
        if slope.ndim == 1 and slope.size > 1 and rank >= 3:
            reshaped = slope.reshape((slope.size,) + (1,) * (rank - 2))
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(reshaped, node.input[1]))
            for info in proto.graph.input:  # old exporters list weights as inputs too
                if info.name == node.input[1]:
                    info.type.tensor_type.shape.CopyFrom(
                        onnx.helper.make_tensor_type_proto(info.type.tensor_type.elem_type, reshaped.shape).tensor_type.shape)


def _with_unit_dims(proto: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto.FromString(proto.SerializeToString())
    del copy.graph.value_info[:]
    for info in list(copy.graph.input) + list(copy.graph.output):
        for dim in info.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    return copy


def _opsets(proto: onnx.ModelProto) -> dict[str, int]:
    opsets: dict[str, int] = {}
    for entry in proto.opset_import:
        domain = "" if entry.domain in DEFAULT_DOMAINS else entry.domain
        opsets[domain] = entry.version
    if "" not in opsets and proto.ir_version < 3:
        opsets[""] = 1
    return opsets


def _check_supported(graph: onnx.GraphProto, opsets: dict[str, int]) -> None:
    missing: dict[tuple[str, str], list[str]] = defaultdict(list)
    for index, node in enumerate(graph.node):
        domain = "" if node.domain in DEFAULT_DOMAINS else node.domain
        version = opsets.get(domain)
        if version is None or CPU_OPS.lookup(node.op_type, version, domain) is None:
            missing[(domain, node.op_type)].append(node.name or f"#{index}")
    if not missing:
        return
    lines = []
    for (domain, op_type), nodes in sorted(missing.items()):
        shown = ", ".join(nodes[:5]) + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")
        where = f"domain '{domain}' opset {opsets.get(domain, '?')}" if domain else f"opset {opsets.get('')}"
        lines.append(f"  {op_type} ({where}): {len(nodes)} node(s): {shown}")
    raise UnsupportedOpsError(
        f"model '{graph.name}' uses {len(missing)} operator(s) this engine has no kernel for:\n"
        + "\n".join(lines)
        + "\nSupported operators: "
        + ", ".join(sorted(CPU_OPS.op_types()))
    )


def _infer_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as exc:  # inference is a help, not a requirement: the build probes shapes too
        raise ModelImportError(f"ONNX shape inference rejected model '{proto.graph.name}': {exc}") from None


def _to_graph(g: onnx.GraphProto, name: str, opsets: dict[str, int]) -> Graph:
    values: dict[str, Value] = {}
    for info in list(g.input) + list(g.value_info) + list(g.output):
        values[info.name] = _value_from_info(info)
    for init in g.initializer:
        array = _tensor_to_array(init)
        values[init.name] = Value(init.name, array.dtype, tuple(array.shape), array)
    for init in g.sparse_initializer:
        raise ModelImportError(f"sparse initializer '{init.values.name}' is not supported")
    weight_names = {v.name for v in values.values() if v.is_const}
    inputs = [i.name for i in g.input if i.name not in weight_names]

    nodes = []
    used_names: set[str] = set()
    for index, n in enumerate(g.node):
        node_name = n.name or f"{n.op_type}_{index}"
        if node_name in used_names:
            node_name = f"{node_name}_{index}"
        used_names.add(node_name)
        domain = "" if n.domain in DEFAULT_DOMAINS else n.domain
        attrs = {a.name: _attribute_value(a, node_name, n.op_type) for a in n.attribute}
        nodes.append(Node(node_name, n.op_type, list(n.input), list(n.output), attrs, domain))
        for out in n.output:
            if out and out not in values:
                values[out] = Value(out)
    graph = Graph(name, nodes, values, inputs, [o.name for o in g.output], dict(opsets))
    for out in graph.outputs:
        graph.values.setdefault(out, Value(out))
    return graph


def _value_from_info(info: onnx.ValueInfoProto) -> Value:
    tensor_type = info.type.tensor_type
    if not info.type.HasField("tensor_type"):
        raise ModelImportError(f"value '{info.name}' is not a tensor (sequences and maps are not supported)")
    dtype = _np_dtype(tensor_type.elem_type, info.name) if tensor_type.elem_type else None
    shape: Shape | None = None
    if tensor_type.HasField("shape"):
        shape = tuple(_dim(d) for d in tensor_type.shape.dim)
    return Value(info.name, dtype, shape)


def _dim(d: onnx.TensorShapeProto.Dimension) -> int | str:
    if d.HasField("dim_value"):
        return int(d.dim_value)
    return d.dim_param or "?"


def _np_dtype(elem_type: int, where: str) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        name = onnx.TensorProto.DataType.Name(elem_type)
        raise ModelImportError(f"'{where}' has element type {name}, which this engine does not support") from None


def _tensor_to_array(tensor: onnx.TensorProto) -> np.ndarray:
    try:
        array = numpy_helper.to_array(tensor)
    except Exception as exc:
        raise ModelImportError(f"weight '{tensor.name}' cannot be read: {exc}") from None
    if array.dtype.kind in "OSU":
        raise ModelImportError(f"weight '{tensor.name}' holds strings, which this engine does not support")
    return np.asarray(array, order="C")  # keeps 0-d scalars 0-d


def _attribute_value(attr: onnx.AttributeProto, node_name: str, op_type: str) -> Any:
    if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        raise ModelImportError(f"node '{node_name}' ({op_type}): subgraph attribute '{attr.name}' is not supported")
    if attr.type in (onnx.AttributeProto.SPARSE_TENSOR, onnx.AttributeProto.SPARSE_TENSORS):
        raise ModelImportError(f"node '{node_name}' ({op_type}): sparse attribute '{attr.name}' is not supported")
    if attr.type == onnx.AttributeProto.TENSOR:
        return _tensor_to_array(attr.t)
    if attr.type == onnx.AttributeProto.TENSORS:
        return [_tensor_to_array(t) for t in attr.tensors]
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list):
        return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
    return value
