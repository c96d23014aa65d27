"""Shared by test_bn_folding.py and test_scale_folding.py: graphs prepared as the builder prepares
them before these passes run (constants folded, shapes probed)."""

from __future__ import annotations

import copy

import numpy as np

import engine
from engine.builder import BuildConfig
from engine.ir import Graph
from kernels.cpu import CPU_OPS
from kernels.dtypes import resolve


def light_model(name: str) -> Graph:
    from engine.onnx_import import import_model
    from engine.onnx_tools import seeded_weights
    from tests.light_zoo import load

    return import_model(seeded_weights(load(name), seed=0))


def with_probed_shapes(graph: Graph) -> Graph:
    """Fill in every activation's shape and dtype by running the graph once (the builder's probe)."""
    plan = engine.build(copy.deepcopy(graph), BuildConfig(optimize=False))
    for name, info in plan.header["values"].items():
        value = graph.values.get(name)
        if value is not None and not value.is_const:
            value.shape, value.dtype = tuple(info["shape"]), resolve(info["dtype"])
    return graph


def fold_constants(graph: Graph) -> Graph:
    """The project's constant folding where it exists; else a minimal one: run every node whose
    inputs are all constants once with the numpy kernels and keep its outputs as constants."""
    try:
        from engine.passes.constant_folding import fold_constants as project_pass
    except ImportError:
        project_pass = None
    if project_pass is not None:
        return project_pass(graph)
    kept = []
    for node in graph.nodes:
        if node.domain or not node.inputs or not all(not i or graph.value(i).is_const for i in node.inputs):
            kept.append(node)
            continue
        kernel = CPU_OPS.lookup(node.op_type, graph.opset)
        attrs = dict(node.attrs, num_outputs=len(node.outputs)) if kernel.wants_num_outputs else node.attrs
        results = kernel.fn(*[graph.value(i).const if i else None for i in node.inputs], **attrs)
        for name, array in zip(node.outputs, results if isinstance(results, tuple) else (results,)):
            array = np.ascontiguousarray(array)
            value = graph.values[name]
            value.const, value.dtype, value.shape = array, array.dtype, tuple(array.shape)
    graph.nodes = kept
    return graph


def count(graph: Graph, *op_types: str) -> dict[str, int]:
    counts = graph.op_counts()
    return {op: counts.get(op, 0) for op in op_types}
