"""engine/precision.py: the FP16 check of every layer, the FP32 fallback it chooses, and how a plan
shows it. The numpy side runs here; the GPU side is in tests/gpu/test_gpu_backend.py."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import zoo
from engine.builder import BuildConfig
from engine.inspect import describe_plan, format_plan
from engine.network import Network
from engine.precision import (activation_dtypes, as_fp16, choose_precisions, concat_groups, fp16_emulated_outputs,
                              fp16_layer_errors, fp16_output_error, fp32_fallbacks, fp32_layer_set,
                              near_fp16_overflow, relative_error, FP16_HEADROOM, FP16_MAX)
from engine.probe import synthetic_feeds


def _conv_relu(net, x, rng, suffix=""):
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
    return net.relu(net.conv(x, weight, pad=1, name=f"conv{suffix}"), name=f"relu{suffix}")


def _classifier(net, y, rng, channels: int):
    """global pool -> flatten -> gemm into 5 logits, small weights (the logits fit float16)."""
    y = net.flatten(net.global_avg_pool(y, name="pool"), name="flatten")
    net.output(net.gemm(y, rng.standard_normal((5, channels)).astype(np.float32) * 1e-5, trans_b=True, name="fc"),
               "logits")
    return net.graph()


def overflowing_network():
    """conv -> relu -> x 3e5 (beyond float16's 65,504) -> global pool -> flatten -> gemm."""
    rng = np.random.default_rng(0)
    net = Network("overflow")
    y = _conv_relu(net, net.input("input", (None, 3, 8, 8)), rng)
    return _classifier(net, net.mul(y, np.float32(3e5), name="scale"), rng, 4)


def scaled_network(scale: float):
    """conv -> relu -> x scale -> global pool -> flatten -> gemm (the `overflowing_network` with any scale)."""
    rng = np.random.default_rng(0)
    net = Network("scaled")
    y = _conv_relu(net, net.input("input", (None, 3, 8, 8)), rng)
    return _classifier(net, net.mul(y, np.float32(scale), name="scale"), rng, 4)


def overflowing_branch_network():
    """Two conv branches written in place into one concat; one is scaled beyond float16's range."""
    rng = np.random.default_rng(0)
    net = Network("overflow_branch")
    x = net.input("input", (None, 3, 8, 8))
    a, b = _conv_relu(net, x, rng, "_a"), _conv_relu(net, x, rng, "_b")
    y = net.concat([a, net.mul(b, np.float32(3e5), name="scale")], axis=1, name="cat")
    return _classifier(net, y, rng, 8)


def test_rounding_and_the_error_measure():
    x = np.array([1.0, 1e-4, 70000.0], np.float32)
    assert as_fp16(x)[0] == 1.0 and as_fp16(x)[1] == pytest.approx(1e-4, rel=1e-3) and np.isinf(as_fp16(x)[2])
    assert as_fp16(np.arange(3)) is not None and as_fp16(np.arange(3)).dtype == np.int64  # ints untouched
    assert relative_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert relative_error([1.1, 2.0], [1.0, 2.0]) == pytest.approx(0.1 / np.sqrt(5))
    assert relative_error([np.inf, 2.0], [1.0, 2.0]) == float("inf")
    assert relative_error([0.0], [0.0]) == 0.0 and relative_error([1.0], [0.0]) == float("inf")


def test_each_layer_gets_its_own_error_and_overflow_falls_back():
    plan = engine.build(overflowing_network(), BuildConfig(max_batch=2, optimize=False))
    errors = fp16_layer_errors(plan, synthetic_feeds(plan.inputs, 2))
    assert errors["conv"] < 2e-3 and errors["relu"] < 2e-3  # float16 rounding, nothing more
    assert errors["scale"] == float("inf")  # 3e5 does not fit float16
    assert errors["pool"] == errors["fc"] == float("inf")  # nor do their inputs
    assert "flatten" not in errors  # a view computes nothing
    assert set(fp32_fallbacks(errors)) == {"scale", "pool", "fc"}
    assert fp32_fallbacks({"a": 0.5}, bound=1.0) == {} and list(fp32_fallbacks({"a": float("nan")})) == ["a"]


def test_a_layer_within_a_headroom_of_the_float16_limit_falls_back_too():
    """Values that fit float16 on the synthetic inputs but reach a quarter of its range run in FP32,
    with the layers that read them; half of that does not."""
    plan = engine.build(scaled_network(1.0), BuildConfig(max_batch=2, optimize=False))
    feeds = synthetic_feeds(plan.inputs, 2)
    peaks = {}
    engine.Engine(plan).create_context().run(
        feeds, observer=lambda layer, outputs: peaks.setdefault(layer.name, float(np.abs(outputs[0]).max())))
    limit = FP16_MAX / FP16_HEADROOM
    near = engine.build(scaled_network(1.2 * limit / peaks["relu"]), BuildConfig(max_batch=2, optimize=False))
    errors = fp16_layer_errors(near, feeds)
    assert errors["conv"] < 2e-3 and errors["relu"] < 2e-3
    assert errors["scale"] == errors["pool"] == float("inf")  # 1.2x the limit, though float16 holds it
    far = engine.build(scaled_network(0.5 * limit / peaks["relu"]), BuildConfig(max_batch=2, optimize=False))
    assert fp32_fallbacks(fp16_layer_errors(far, feeds)) == {}
    assert near_fp16_overflow([np.float32([limit])]) and near_fp16_overflow([np.float32([np.nan])])
    assert not near_fp16_overflow([np.float32([limit / 2]), np.arange(10**6)])  # integers are not activations


def test_the_plan_records_and_inspect_shows_the_fallback():
    plan = engine.build(overflowing_network(), BuildConfig(max_batch=2, optimize=False))
    fallback = choose_precisions(plan, synthetic_feeds(plan.inputs, 2))
    assert "scale" in fallback and plan.header["fp32_fallback"]["scale"] == "inf"
    by_name = {layer["name"]: layer for layer in plan.layers}
    assert by_name["scale"]["precision"] == "fp32" and by_name["conv"]["precision"] == "fp32"  # a CPU plan
    info = describe_plan(plan)
    assert info["fp32_fallback"] == plan.header["fp32_fallback"] and info["fp16_layer_bound"] == 1e-2
    text = format_plan(info)
    assert "in FP32 (FP16 error above 1e-02, or values near float16's limit): scale (near float16's limit)" in text
    assert 0 < float(plan.header["fp16_output_error"]) < 1e-2  # with those layers in FP32, the outputs are fine
    assert "expected output error against FP32 (emulated, random input): " in text


def test_the_whole_plan_error_is_carried_through_the_layers():
    plan = engine.build(overflowing_network(), BuildConfig(max_batch=2, optimize=False))
    feeds = synthetic_feeds(plan.inputs, 2)
    assert fp16_output_error(plan, feeds) == float("inf")  # all in FP16: the scaled values overflow
    assert fp16_output_error(plan, feeds, {"scale", "pool", "fc"}) < 1e-2
    # rounding carried through 2 conv layers is about 2 layers' worth, more than 1 layer's
    net = Network("two_convs")
    rng = np.random.default_rng(1)
    y = net.input("input", (None, 3, 8, 8))
    for k in range(2):
        y = net.conv(y, rng.standard_normal((3, 3, 3, 3)).astype(np.float32) * 0.3, pad=1, name=f"c{k}")
    net.output(y, "out")
    plan = engine.build(net.graph(), BuildConfig(max_batch=2, optimize=False))
    feeds = synthetic_feeds(plan.inputs, 2)
    one = max(fp16_layer_errors(plan, feeds).values())
    assert 1e-4 < one < fp16_output_error(plan, feeds) < 4 * one


def test_values_written_by_fp32_layers_stay_float32():
    layers = [{"name": "a", "kind": "Conv", "inputs": ["x"], "outputs": ["y"]},
              {"name": "b", "kind": "Mul", "inputs": ["y"], "outputs": ["z"]},
              {"name": "f", "kind": "Flatten", "inputs": ["z"], "outputs": ["flat"]},
              {"name": "g", "kind": "Gemm", "inputs": ["flat", "w"], "outputs": ["out"]}]
    values = {n: {"dtype": "float32"} for n in ("x", "y", "z", "flat", "out")} | {"idx": {"dtype": "int64"}}
    dtypes = activation_dtypes(layers, values, {"b"})
    assert dtypes == {"x": "float16", "y": "float16", "z": "float32", "flat": "float32", "out": "float16"}
    assert activation_dtypes(layers, values, set()) == dict.fromkeys(("x", "y", "z", "flat", "out"), "float16")


def test_an_elided_concat_and_its_writers_form_one_group():
    layers = [{"name": "p", "kind": "Relu", "inputs": ["x"], "outputs": ["a"]},
              {"name": "q", "kind": "Relu", "inputs": ["x"], "outputs": ["b"]},
              {"name": "cat", "kind": "Concat", "inputs": ["a", "b"], "outputs": ["c"], "attrs": {"elided": True}},
              {"name": "s", "kind": "Relu", "inputs": ["x"], "outputs": ["d"]},
              {"name": "outer", "kind": "Concat", "inputs": ["c", "d"], "outputs": ["e"], "attrs": {"elided": True}},
              {"name": "kept", "kind": "Concat", "inputs": ["e", "x"], "outputs": ["f"]}]
    assert concat_groups(layers) == [{"p", "q", "cat", "s", "outer"}]  # a concat written into another's slice


def test_the_fp32_set_is_the_layers_above_the_bound_and_their_concat_groups():
    layers = [{"name": "p", "kind": "Relu", "inputs": ["x"], "outputs": ["a"]},
              {"name": "q", "kind": "Relu", "inputs": ["x"], "outputs": ["b"]},
              {"name": "cat", "kind": "Concat", "inputs": ["a", "b"], "outputs": ["c"], "attrs": {"elided": True}},
              {"name": "r", "kind": "Relu", "inputs": ["c"], "outputs": ["d"]}]
    errors = {"p": 2e-2, "q": 1e-4, "r": 5e-3}
    assert fp32_layer_set(layers, errors, 1e-2) == {"p": 2e-2, "q": 1e-4, "cat": 0.0}
    assert fp32_layer_set(layers, errors, 1e-3) == {"p": 2e-2, "r": 5e-3, "q": 1e-4, "cat": 0.0}
    assert fp32_layer_set(layers, errors, 0.1) == {}


def test_the_writers_of_an_elided_concat_widen_together():
    """A concat's buffer has one dtype: when one branch must run in FP32, the other branch and the
    concat do too (light_shufflenet's FP16 plan overflowed where one did not)."""
    plan = engine.build(overflowing_branch_network(), BuildConfig(max_batch=2))
    cat = next(layer for layer in plan.layers if layer["kind"] == "Concat")
    assert cat["attrs"].get("elided"), "the test needs the concat elided"
    fallback = choose_precisions(plan, synthetic_feeds(plan.inputs, 2))
    writers = {layer["name"] for layer in plan.layers if set(layer["outputs"]) & set(cat["inputs"])}
    assert len(writers) == 2 and writers | {cat["name"]} <= set(fallback)
    assert 0 < float(plan.header["fp16_output_error"]) < 1e-2


@pytest.mark.parametrize("bound", [0, -1e-2, "1e-2", None])
def test_the_bound_is_checked(bound):
    with pytest.raises(engine.BuildError, match="fp16_layer_bound must be a positive number"):
        engine.build(overflowing_network(), BuildConfig(fp16_layer_bound=bound))


def test_the_emulated_outputs_are_the_exact_run_and_its_fp16_twin():
    graph = zoo.get("resnet18", image_size=32)
    plan = engine.build(graph, BuildConfig(max_batch=4))
    x = np.random.default_rng(3).standard_normal((4, 3, 32, 32)).astype(np.float32)
    exact, fp16 = fp16_emulated_outputs(plan, {"input": x})
    want = engine.Engine(plan).create_context().run({"input": x})["logits"]
    np.testing.assert_array_equal(exact["logits"], want)  # the same kernels, the same order
    assert 1e-4 < relative_error(fp16["logits"], want) < 1e-2  # rounding, carried through
    assert np.array_equal(fp16["logits"], as_fp16(fp16["logits"]))  # stored as float16 would be
    assert fp16_output_error(plan, {"input": x}) == relative_error(fp16["logits"], want)
