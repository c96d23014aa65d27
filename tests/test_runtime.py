import subprocess
import sys

import numpy as np
import pytest

import engine
from engine.errors import InputError, LayerError, PlanFormatError
from tests.helpers import tiny_model, weighted_model


@pytest.fixture
def tiny_engine():
    return engine.Engine(engine.build(tiny_model(), engine.BuildConfig(max_batch=8)))


def test_runs_and_matches_numpy(tiny_engine):
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    y = tiny_engine.create_context().run({"x": x})["y"]
    np.testing.assert_array_equal(y, np.maximum(x, 0) + x)
    assert y.dtype == np.float32


@pytest.mark.parametrize("feeds, pattern", [
    ({}, r"missing input 'x'.*x \(float32, Nx3\)"),
    ({"x": np.zeros((2, 3), np.float32), "z": np.zeros(1)}, r"unknown input\(s\) 'z'"),
    ({"x": np.zeros((2, 3), np.float64)}, r"'x' has dtype float64; the plan expects float32"),
    ({"x": np.zeros((2, 4), np.float32)}, r"axis 1 must be 3"),
    ({"x": np.zeros((2, 3, 1), np.float32)}, r"rank 3.*rank 2"),
    ({"x": np.zeros((9, 3), np.float32)}, r"batch 9, more than the plan's max batch 8"),
])
def test_bad_inputs_get_clear_errors(tiny_engine, feeds, pattern):
    with pytest.raises(InputError, match=pattern):
        tiny_engine.create_context().run(feeds)


def test_contexts_share_the_engine_weights():
    eng = engine.Engine(engine.build(weighted_model()))
    a, b = eng.create_context(), eng.create_context()
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(a.run({"x": x})["y"], b.run({"x": x})["y"])
    assert len(eng.weights) == 1 and a.engine.weights["w"] is b.engine.weights["w"]


def test_a_failing_layer_is_named_with_its_input_shapes():
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"], name="mm1")], "mm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", "K"]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    eng = engine.Engine(engine.build(model))
    with pytest.raises(LayerError, match=r"layer 'mm1' \(MatMul.*a: 2x3 float32, b: 4x2 float32"):
        eng.create_context().run({"a": np.zeros((2, 3), np.float32), "b": np.zeros((4, 2), np.float32)})


def test_a_plan_for_another_device_is_refused():
    plan = engine.build(tiny_model())
    plan.header["device"] = {"kind": "cuda", "arch": "sm_90"}
    with pytest.raises(PlanFormatError, match="built for device 'cuda'"):
        engine.Engine(plan)


def test_the_runtime_imports_neither_onnx_nor_torch(tmp_path):
    path = tmp_path / "tiny.plan"
    engine.build(tiny_model()).save(path)
    code = (
        "import sys, numpy as np, engine\n"
        f"e = engine.load({str(path)!r})\n"
        "y = e.create_context().run({'x': np.ones((2, 3), np.float32)})['y']\n"
        "assert (y == 2).all()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'torch', 'onnxruntime'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
