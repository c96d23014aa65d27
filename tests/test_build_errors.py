"""Bad input to the build phase fails the build with the culprit named: a custom op whose shape rule
is wrong, a graph with a cycle, a pass that breaks the graph."""

import numpy as np
import pytest

import engine
from engine.builder import BuildConfig
from engine.custom_ops import register_custom_op
from engine.errors import BuildError
from engine.ir import Graph, Node, Value
from engine.network import Network
from engine.passes import graph_pass, run_passes


def _halve_channels(x):
    return x[:, : x.shape[1] // 2]


def test_a_custom_op_with_a_wrong_shape_rule_fails_the_build_naming_the_node():
    # the rule claims the op keeps the shape; the kernel halves the channels
    register_custom_op("HalveChannelsWrongRule", _halve_channels, lambda shapes, attrs: [shapes[0]])
    net = Network("wrong_rule")
    x = net.input("x", (None, 4, 3, 3))
    y = net.custom("HalveChannelsWrongRule", [x], name="halver")
    net.output(net.relu(y), "y")
    with pytest.raises(BuildError, match=r"node 'halver' \(HalveChannelsWrongRule\).*declared Nx4x3x3 by its custom op's shape rule.*produced Nx2x3x3"):
        engine.build(net.graph())


def test_a_custom_op_with_a_right_shape_rule_builds_and_runs():
    register_custom_op("HalveChannels", _halve_channels, lambda shapes, attrs: [(shapes[0][0], shapes[0][1] // 2) + tuple(shapes[0][2:])])
    net = Network("right_rule")
    x = net.input("x", (None, 4, 3, 3))
    net.output(net.relu(net.custom("HalveChannels", [x])), "y")
    ctx = engine.Engine(engine.build(net.graph())).create_context()
    data = np.random.default_rng(0).standard_normal((2, 4, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(ctx.run({"x": data})["y"], np.maximum(data[:, :2], 0))


def _tiny_graph() -> Graph:
    values = {n: Value(n, np.dtype("float32"), ("N", 3)) for n in ("x", "a", "b", "y")}
    nodes = [Node("relu_a", "Relu", ["b"], ["a"]), Node("relu_b", "Relu", ["a"], ["b"]), Node("out", "Relu", ["b"], ["y"])]
    return Graph("cyclic", nodes, values, ["x"], ["y"], {"": 13})


def test_a_graph_with_a_cycle_fails_naming_the_nodes_in_it():
    with pytest.raises(BuildError, match=r"cycle among nodes: relu_a, relu_b"):
        engine.build(_tiny_graph())


def test_a_pass_that_breaks_the_graph_is_named_with_the_node():
    net = Network("victim")
    x = net.input("x", (None, 3))
    net.output(net.relu(net.relu(x, name="first"), name="second"), "y")
    graph = net.graph()

    @graph_pass("careless rewrite")
    def drop_first(g: Graph) -> Graph:
        g.nodes = [n for n in g.nodes if n.name != "first"]  # 'second' now reads a value nobody makes
        return g

    with pytest.raises(BuildError, match=r"pass 'careless rewrite' broke the graph: node 'second' \(Relu\) reads"):
        run_passes(graph, [drop_first])


def test_a_pass_that_raises_is_named():
    @graph_pass("exploding pass")
    def explode(g: Graph) -> Graph:
        raise IndexError("list index out of range")

    net = Network("victim2")
    net.output(net.relu(net.input("x", (None, 3))), "y")
    with pytest.raises(BuildError, match=r"pass 'exploding pass' failed: IndexError"):
        run_passes(net.graph(), [explode])


def test_optimized_builds_must_agree_with_the_unoptimized_graph(monkeypatch):
    """The build's self-check catches a pass that computes the wrong thing."""
    from engine.passes import pipeline

    @graph_pass("sign flip")
    def wrong(g: Graph) -> Graph:
        for node in g.nodes:
            if node.op_type == "Relu":
                node.op_type = "Neg"  # a wrong rewrite that keeps the graph well-formed
        return g

    monkeypatch.setattr(pipeline, "default_pipeline", lambda device="cpu": [wrong])
    net = Network("checked")
    net.output(net.relu(net.input("x", (None, 3, 4, 4))), "y")
    with pytest.raises(BuildError, match=r"after optimization, output 'y' differs"):
        engine.build(net.graph(), BuildConfig())


def test_a_plan_for_batch_one_builds_and_refuses_two():
    from engine import zoo

    plan = engine.build(zoo.get("resnet18", image_size=32), engine.BuildConfig(max_batch=1))
    assert plan.header["max_batch"] == 1
    context = engine.Engine(plan).create_context()
    x = np.zeros((2, 3, 32, 32), np.float32)
    assert context.run({"input": x[:1]})["logits"].shape == (1, 1000)
    with pytest.raises(engine.InputError, match="more than the plan's max batch 1"):
        context.run({"input": x})


def test_a_layer_without_a_working_tactic_names_it_and_says_when_memory_ran_out():
    from engine.errors import BuildError
    from engine.tune import no_tactic_error

    layer = {"name": "conv3_2", "kind": "conv_bias_act"}
    tensors = {"x": np.zeros((256, 56, 56, 64), np.float16), "w": np.zeros((64, 3, 3, 64), np.float16)}
    failures = [f"cudnn:{i}: OutOfMemoryError: Out of memory allocating 2,147,483,648 bytes" for i in range(5)]
    error = no_tactic_error(layer, tensors, failures)
    assert isinstance(error, BuildError)
    text = str(error)
    assert "layer 'conv3_2' (conv_bias_act) has no tactic" in text
    assert "x 256x56x56x64 float16" in text and "w 64x3x3x64 float16" in text
    # one reason, given once, with every tactic it stopped
    assert "cudnn:0, cudnn:1, cudnn:2, cudnn:3, cudnn:4: OutOfMemoryError" in text
    assert text.count("Out of memory allocating") == 1
    assert "smaller --max-batch" in text

    other = str(no_tactic_error(layer, {}, ["cudnn:0: RuntimeError: CUDNN_STATUS_NOT_SUPPORTED"]))
    assert "tensors: not known" in other and "CUDNN_STATUS_NOT_SUPPORTED" in other and "--max-batch" not in other
    assert "no candidate could be set up" in str(no_tactic_error(layer, {}, []))
    cudnn_oom = str(no_tactic_error(layer, {}, ["cudnn:1: cudnnException: CUDNN_STATUS_ALLOC_FAILED"]))
    assert "ran out of memory" in cudnn_oom


def test_no_tactic_error_gives_each_reason_once_and_names_graph_tensors_by_name():
    """Thirteen cuDNN plans that failed for two reasons: both reasons show, each with its plans; a
    cuDNN graph tensor (whose repr lists every attribute) is named by its get_name()."""
    from engine.tune import no_tactic_error

    class GraphTensor:  # the cuDNN frontend's tensor: a name behind get_name(), a long repr
        def get_name(self):
            return "X"

        def __repr__(self):
            return "Tensor(name='X', data_type=..., dim=(2, 512, 1, 1), stride=..., is_virtual=False)"

    failures = [f"cudnn:{i}: did not build: cudnnGraphNotSupportedError: Deselecting execution plan"
                for i in range(3)]
    failures += [f"cudnn:{i}: did not build: cudnnException: CUDNN_STATUS_INTERNAL_ERROR" for i in range(3, 13)]
    text = str(no_tactic_error({"name": "layer4.0.conv2", "kind": "FusedConv"},
                               {GraphTensor(): np.zeros((2, 512, 1, 1), np.float32)}, failures))
    assert "tensors: X 2x512x1x1 float32." in text and "Tensor(" not in text
    assert "cudnn:0, cudnn:1, cudnn:2: did not build: cudnnGraphNotSupportedError" in text
    assert "ran out of memory" not in text
    assert "cudnn:3, cudnn:4, cudnn:5, cudnn:6, cudnn:7, cudnn:8, cudnn:9, cudnn:10, cudnn:11, cudnn:12: did not " \
           "build: cudnnException: CUDNN_STATUS_INTERNAL_ERROR" in text


def test_a_kernel_launch_that_ran_out_of_memory_gets_the_memory_advice():
    """cuDNN quotes the driver's error 2 (CUDA_ERROR_OUT_OF_MEMORY) when a plan's kernel cannot launch."""
    from engine.tune import no_tactic_error

    launch = ("cudnn:12: RuntimeError: execute(handle, plan->get_raw_desc(), variant_pack_descriptor.get_ptr()) "
              "failed with message: err 2 != CUDA_SUCCESS :: shimCuLaunchKernelEx(&config, func, kernelParams, nullptr)")
    assert "ran out of memory" in str(no_tactic_error({"name": "c", "kind": "FusedConv"}, {}, [launch]))
    other = launch.replace("err 2 ", "err 700 ")  # an illegal address is not memory
    assert "ran out of memory" not in str(no_tactic_error({"name": "c", "kind": "FusedConv"}, {}, [other]))
