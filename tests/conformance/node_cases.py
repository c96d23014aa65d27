"""Shared helper: the ONNX node test cases and a runner that checks one through the engine."""

from __future__ import annotations

import functools
import warnings

import numpy as np

from kernels.cpu import CPU_OPS


@functools.lru_cache(maxsize=1)
def all_node_cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return {case.name: case for case in collect_testcases()}


def case_ops(case) -> set[str]:
    return {n.op_type for n in case.model.graph.node}


def is_supported(case) -> bool:
    domains = {n.domain for n in case.model.graph.node}
    return domains <= {"", "ai.onnx"} and case_ops(case) <= CPU_OPS.op_types()


def _array(value) -> np.ndarray:
    """Data sets hold arrays, or TensorProtos for element types numpy lacks (bfloat16, float8...)."""
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(value) if isinstance(value, TensorProto) else np.asarray(value)


def run_case(case) -> None:
    """Build, save/load and run one node case; assert every output matches within its tolerance."""
    from engine.onnx_backend import EngineBackend

    rep = EngineBackend.prepare(case.model)
    for inputs, expected in case.data_sets:
        got = rep.run([_array(x) for x in inputs])
        assert len(got) == len(expected), f"{case.name}: {len(got)} outputs, expected {len(expected)}"
        for index, (g, e) in enumerate(zip(got, expected)):
            e = _array(e)
            assert g.dtype == e.dtype, f"{case.name} output {index}: dtype {g.dtype}, expected {e.dtype}"
            assert g.shape == e.shape, f"{case.name} output {index}: shape {g.shape}, expected {e.shape}"
            if e.dtype.kind == "V":  # ml_dtypes narrow types: compare bits, so NaN matches NaN
                np.testing.assert_array_equal(g.view(np.uint8), e.view(np.uint8), err_msg=f"{case.name} output {index}")
            elif e.dtype.kind in "fc":
                np.testing.assert_allclose(g, e, rtol=case.rtol, atol=case.atol, equal_nan=True,
                                           err_msg=f"{case.name} output {index}")
            else:
                np.testing.assert_array_equal(g, e, err_msg=f"{case.name} output {index}")
