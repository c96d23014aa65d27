"""engine.network: shapes computed by each method agree with what the kernels produce; argument
errors name the layer and the shapes; custom ops run end to end through build and a context."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.builder import BuildConfig
from engine.custom_ops import (
    CUSTOM_DOMAIN,
    custom_op_gpu_kernel,
    custom_op_shape_rule,
    register_custom_op,
)
from engine.ir import Graph
from engine.network import Network, Tensor
from engine.plan import decode_plan

RNG = np.random.default_rng(0)


def rand(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def run(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    plan = engine.build(graph, BuildConfig(probe=False))
    return engine.Engine(plan).create_context().run(feeds)


def assert_shapes_match_kernels(net: Network) -> Graph:
    """Build with the shape probe (batch 1 and 2 when the batch is symbolic) and compare every
    activation's recorded shape and dtype with the one the Network computed."""
    graph = net.graph()
    declared = {v.name: v for v in graph.values.values() if not v.is_const}
    plan = engine.build(net.graph(), BuildConfig(optimize=False))  # every declared value survives
    probed = plan.header["values"]
    assert probed, "the build's shape probe did not run"
    for node in graph.nodes:
        for out in node.outputs:
            want = declared[out]
            got = probed[out]
            assert tuple(got["shape"]) == tuple(want.shape), f"{node.name}: network says {want.shape}, kernel gave {got['shape']}"
            assert got["dtype"] == np.dtype(want.dtype).name, f"{node.name}: dtype {got['dtype']} vs {want.dtype}"
    return graph


def single_layer(build, in_shape=(None, 4, 9, 11), opset=17) -> tuple[Network, Tensor]:
    net = Network("t", opset=opset)
    x = net.input("x", in_shape)
    y = build(net, x)
    net.output(y)
    return net, y


LAYERS = {
    "conv": lambda n, x: n.conv(x, rand(6, 4, 3, 3), rand(6)),
    "conv_stride_pad": lambda n, x: n.conv(x, rand(5, 4, 3, 2), stride=2, pad=1),
    "conv_asym_pads": lambda n, x: n.conv(x, rand(5, 4, 3, 3), stride=(2, 3), pad=(0, 1, 2, 0)),
    "conv_dilated": lambda n, x: n.conv(x, rand(3, 4, 3, 3), dilation=2, pad=2),
    "conv_groups": lambda n, x: n.conv(x, rand(6, 2, 3, 3), rand(6), groups=2, stride=2),
    "conv_depthwise": lambda n, x: n.conv(x, rand(4, 1, 3, 3), groups=4, pad=1),
    "max_pool": lambda n, x: n.max_pool(x, 3, 2, 1),
    "max_pool_ceil": lambda n, x: n.max_pool(x, 3, 2, ceil_mode=True),
    "max_pool_ceil_drop": lambda n, x: n.max_pool(x, 2, 2, 1, ceil_mode=True),  # last window in padding
    "max_pool_dilated": lambda n, x: n.max_pool(x, 2, 1, dilation=2),
    "max_pool_default_stride": lambda n, x: n.max_pool(x, 2),
    "avg_pool": lambda n, x: n.avg_pool(x, 3, 1, 1),
    "avg_pool_exclude_pad": lambda n, x: n.avg_pool(x, 3, 2, 1, count_include_pad=False, ceil_mode=True),
    "global_avg_pool": lambda n, x: n.global_avg_pool(x),
    "adaptive_avg_pool": lambda n, x: n.adaptive_avg_pool(n.conv(x, rand(2, 4, 1, 1), pad=(0, 1, 0, 0)), (3, 4)),
    "batch_norm": lambda n, x: n.batch_norm(x, rand(4), rand(4), rand(4), np.ones(4) * 1.5, eps=1e-3),
    "lrn": lambda n, x: n.lrn(x, 3, alpha=2e-4, beta=0.5, bias=2.0),
    "relu": lambda n, x: n.relu(x),
    "sigmoid": lambda n, x: n.sigmoid(x),
    "tanh": lambda n, x: n.tanh(x),
    "leaky_relu": lambda n, x: n.leaky_relu(x, 0.2),
    "clip": lambda n, x: n.clip(x, 0.0, 6.0),
    "clip_min_only": lambda n, x: n.clip(x, min=-0.5),
    "softmax": lambda n, x: n.softmax(x),
    "softmax_axis1": lambda n, x: n.softmax(x, axis=1),
    "add_broadcast": lambda n, x: n.add(x, rand(4, 1, 1)),
    "mul_scalar": lambda n, x: n.mul(x, 0.5),
    "sub_tensors": lambda n, x: n.sub(x, n.relu(x)),
    "div_row": lambda n, x: n.div(x, np.full(11, 2.0)),
    "concat": lambda n, x: n.concat([x, n.relu(x), n.conv(x, rand(3, 4, 1, 1))], axis=1),
    "concat_last_axis": lambda n, x: n.concat([x, n.avg_pool(x, (1, 2), (1, 2))], axis=-1),
    "flatten": lambda n, x: n.flatten(x),
    "flatten_axis2": lambda n, x: n.flatten(x, 2),
    "flatten_axis0": lambda n, x: n.flatten(x, 0),
    "reshape": lambda n, x: n.reshape(x, (0, -1, 11)),
    "gemm": lambda n, x: n.gemm(n.flatten(x), rand(396, 7), rand(7)),
    "gemm_trans": lambda n, x: n.gemm(n.flatten(x), rand(7, 396), rand(1, 7), trans_b=True, alpha=0.5, beta=2.0),
    "linear": lambda n, x: n.linear(n.flatten(x), rand(5, 396)),
    "op_transpose": lambda n, x: n.op("Transpose", [x], {"perm": [0, 2, 3, 1]}),
    "op_reduce": lambda n, x: n.op("ReduceMean", [x], {"axes": [2, 3], "keepdims": 0}),
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_method_shapes_match_the_kernels(layer):
    net, y = single_layer(LAYERS[layer])
    assert y.shape is not None
    assert_shapes_match_kernels(net)


@pytest.mark.parametrize("layer", ["conv", "max_pool_ceil", "gemm", "op_transpose", "flatten_axis0"])
def test_fixed_batch_shapes_match_the_kernels(layer):
    net, y = single_layer(LAYERS[layer], in_shape=(3, 4, 9, 11))
    assert all(isinstance(d, int) for d in y.shape)
    assert_shapes_match_kernels(net)


def test_conv_and_pool_shapes_are_the_textbook_ones():
    net = Network("t")
    x = net.input("x", (None, 3, 224, 224))
    y = net.conv(x, rand(64, 3, 7, 7), stride=2, pad=3)
    assert y.shape == ("N", 64, 112, 112)
    assert net.max_pool(y, 3, 2, 1).shape == ("N", 64, 56, 56)
    assert net.max_pool(y, 3, 2, ceil_mode=True).shape == ("N", 64, 56, 56)
    assert net.max_pool(y, 3, 2).shape == ("N", 64, 55, 55)
    # ceil mode drops a window that would start in the end padding: 5 + 1 pad, k2 s2 -> 3, not 4
    z = net.input("z", (1, 1, 5, 5))
    assert net.max_pool(z, 2, 2, 1, ceil_mode=True).shape == (1, 1, 3, 3)


def test_flatten_and_reshape_track_the_batch_symbolically():
    net = Network("t")
    x = net.input("x", (None, 3, 4))
    assert net.flatten(x, 0).shape == (1, "12N")
    assert net.flatten(x, 2).shape == ("3N", 4)
    assert net.reshape(x, (-1,)).shape == ("12N",)
    assert net.reshape(x, (0, 12)).shape == ("N", 12)
    assert net.concat([x, x], axis=0).shape == ("2N", 3, 4)


def test_opset_decides_clip_and_gemm_encoding():
    for opset, clip_inputs, clip_attrs in ((9, 1, {"min": 0.0, "max": 6.0}), (17, 3, {})):
        net = Network("t", opset=opset)
        x = net.input("x", (None, 8))
        y = net.gemm(net.clip(x, 0.0, 6.0), rand(8, 3))
        net.output(y)
        graph = assert_shapes_match_kernels(net)
        clip, gemm = graph.nodes
        assert len(clip.inputs) == clip_inputs and clip.attrs == clip_attrs
        assert len(gemm.inputs) == (3 if opset < 11 else 2)  # Gemm before 11 needs C
        feeds = {"x": np.linspace(-3, 9, 16, dtype=np.float32).reshape(2, 8)}
        w = graph.value(gemm.inputs[1]).const
        np.testing.assert_allclose(run(graph, feeds)[y.name], np.clip(feeds["x"], 0, 6) @ w, rtol=1e-5)


def test_softmax_before_opset_13_only_on_the_last_axis():
    net = Network("t", opset=11)
    x = net.input("x", (None, 4, 5))
    assert net.softmax(x).shape == ("N", 4, 5)
    with pytest.raises(ValueError, match="opset 13"):
        net.softmax(x, axis=1)


def test_names_are_readable_and_unique():
    net = Network("t")
    x = net.input("input", (None, 3, 8, 8))
    a = net.conv(x, rand(4, 3, 3, 3), rand(4))
    b = net.conv(a, rand(4, 4, 3, 3), name="stem")
    c = net.conv(b, rand(4, 4, 1, 1))
    r1, r2 = net.relu(c), net.relu(c)
    assert (a.name, b.name, c.name) == ("conv1_out", "stem_out", "conv2_out")
    assert (r1.name, r2.name) == ("relu1_out", "relu2_out")
    net.output(net.add(r1, r2), "sum")
    graph = net.graph()
    assert [n.name for n in graph.nodes] == ["conv1", "stem", "conv2", "relu1", "relu2", "add1"]
    assert graph.nodes[0].inputs == ["input", "conv1.weight", "conv1.bias"]
    assert graph.outputs == ["sum"]
    for v in graph.constants():
        assert v.const.dtype == np.float32 and v.const.flags.c_contiguous and v.dtype == np.float32
    with pytest.raises(ValueError, match="'stem' already exists"):
        net.relu(c, name="stem")


def test_output_renames_and_old_handles_still_work():
    net = Network("t")
    x = net.input("x", (None, 5))
    y = net.relu(x)
    out = net.output(y, "prob")
    assert out.name == "prob" and out.shape == ("N", 5)
    z = net.sigmoid(y)  # the handle from before the rename still resolves
    net.output(z)
    net.output(x, "x_copy")  # an input as an output gets an Identity
    graph = net.graph()
    assert graph.outputs == ["prob", z.name, "x_copy"]
    assert graph.nodes[1].inputs == ["prob"]
    feeds = {"x": rand(2, 5)}
    got = run(graph, feeds)
    np.testing.assert_array_equal(got["prob"], np.maximum(feeds["x"], 0))
    np.testing.assert_array_equal(got["x_copy"], feeds["x"])


def test_graph_is_a_copy_the_builder_cannot_disturb():
    net = Network("t")
    x = net.input("x", (None, 2))
    net.output(net.relu(x))
    first = net.graph()
    engine.build(first, BuildConfig(input_shapes={"x": (4, 2)}))
    assert net.graph().value("x").shape == ("N", 2)


def test_dropout_is_the_identity():
    net = Network("t")
    x = net.input("x", (None, 3))
    assert net.dropout(x, 0.5) == x
    with pytest.raises(ValueError, match="ratio"):
        net.dropout(x, 1.5)


ERRORS = [
    (lambda n, x: n.conv(x, rand(8, 3, 3, 3), name="conv1"), r"'conv1'.*4 channels.*\(8, 3, 3, 3\).*expects 3"),
    (lambda n, x: n.conv(x, rand(8, 4, 3, 3), rand(7)), r"'conv1'.*bias.*\(8,\).*\(7,\)"),
    (lambda n, x: n.conv(x, rand(6, 2, 3, 3), groups=4), "do not split into 4 groups"),
    (lambda n, x: n.conv(x, rand(6, 4, 3)), r"rank 4.*\(6, 4, 3\)"),
    (lambda n, x: n.conv(x, rand(6, 4, 13, 3)), "larger than the padded input"),
    (lambda n, x: n.conv(x, rand(6, 4, 3, 3), stride=0), "stride must be positive"),
    (lambda n, x: n.conv(x, rand(6, 4, 3, 3), pad=(1, 1, 1)), "pad must be"),
    (lambda n, x: n.conv(x, np.full((6, 4, 3, 3), np.nan)), "NaN"),
    (lambda n, x: n.max_pool(x, 3, 2, 3), "padding"),
    (lambda n, x: n.batch_norm(x, rand(3), rand(4), rand(4), np.ones(4)), r"'bn1'.*weight.*\(3,\).*4 channels"),
    (lambda n, x: n.gemm(n.flatten(x), rand(100, 5), name="fc"), r"'fc'.*396 features.*expects 100"),
    (lambda n, x: n.gemm(x, rand(11, 5)), "rank 2"),
    (lambda n, x: n.concat([x, n.max_pool(x, 2)]), "differ on axis 2"),
    (lambda n, x: n.concat(x), "list of tensors"),
    (lambda n, x: n.add(x, rand(3, 1, 1)), "do not broadcast"),
    (lambda n, x: n.add(x, rand(7, 9, 11)), "do not broadcast"),
    (lambda n, x: n.softmax(x, axis=4), "out of range"),
    (lambda n, x: n.reshape(x, (0, 7, -1)), "cannot reshape"),
    (lambda n, x: n.reshape(x, (-1, -1)), "one -1"),
    (lambda n, x: n.relu("nope"), "no value named 'nope'"),
    (lambda n, x: n.relu(3), "expected a Tensor"),
    (lambda n, x: n.adaptive_avg_pool(x, 4), "uneven"),
    (lambda n, x: n.op("NoSuchOp", [x]), "no kernel for op 'NoSuchOp'"),
    (lambda n, x: n.op("Reshape", [x, np.array([5, 5], dtype=np.int64)]), "output_shapes"),
    (lambda n, x: n.clip(x, 2.0, 1.0), "above max"),
    (lambda n, x: n.lrn(x, 0), "size"),
    (lambda n, x: n.custom("NotRegisteredOp", [x]), "NotRegisteredOp"),
]


@pytest.mark.parametrize("make, message", ERRORS, ids=[m for _, m in ERRORS])
def test_argument_errors_name_the_layer_and_shapes(make, message):
    net = Network("t")
    x = net.input("x", (None, 4, 9, 11))
    with pytest.raises((ValueError, KeyError), match=message):
        make(net, x)


def test_input_and_graph_errors():
    net = Network("t")
    with pytest.raises(ValueError, match="only the first"):
        net.input("x", (1, None, 3))
    with pytest.raises(ValueError, match="positive"):
        net.input("x", (1, 0))
    x = net.input("x", (None, 3))
    with pytest.raises(ValueError, match="already exists"):
        net.input("x", (None, 3))
    with pytest.raises(ValueError, match="no outputs"):
        net.graph()
    with pytest.raises(ValueError, match="opset"):
        Network("old", opset=5)
    net.output(net.relu(x))
    with pytest.raises(ValueError, match="a value of that name exists"):
        net.output(net.tanh(x), "x")


def test_failed_layers_leave_nothing_behind():
    net = Network("t")
    x = net.input("x", (None, 4))
    with pytest.raises(ValueError):
        net.op("Reshape", [x, np.array([3, 3], dtype=np.int64)])  # its shape constant is stored first
    y = net.relu(x)
    net.output(y, "prob")
    with pytest.raises(ValueError, match="already exists"):
        net.input("relu1_out", (1, 4))  # the old name of a renamed output still means that output
    graph = net.graph()
    assert list(graph.values) == ["x", "prob"] and [n.name for n in graph.nodes] == ["relu1"]


def test_escape_hatch_learns_shapes_and_dtypes_from_the_kernel():
    net = Network("t")
    x = net.input("x", (None, 3, 4))
    idx = net.op("ArgMax", [x], {"axis": 2, "keepdims": 0})
    assert idx.shape == ("N", 3) and idx.dtype == np.int64
    first, second = net.op("Split", [x, np.array([1, 2], dtype=np.int64)], {"axis": 1}, num_outputs=2)
    assert first.shape == ("N", 1, 4) and second.shape == ("N", 2, 4)
    given = net.op("Reshape", [x, np.array([-1, 4], dtype=np.int64)], output_shapes=[("3N", 4)])
    assert given.shape == ("3N", 4)
    for t in (idx, first, second, given):
        net.output(t)
    assert_shapes_match_kernels(net)


# -------------------------------------------------------------------- custom ops


def scaled_tanh(x, *, scale=1.0):
    return np.tanh(x) * np.float32(scale)


def scaled_tanh_shape(shapes, attrs):
    return [shapes[0]]


def halves(x):
    """Two outputs: the first and second half of the channels, the second doubled."""
    c = x.shape[1] // 2
    return x[:, :c], x[:, c:] * np.float32(2)


def halves_shape(shapes, attrs):
    n, c = shapes[0][:2]
    return [(n, c // 2) + tuple(shapes[0][2:]), (n, c - c // 2) + tuple(shapes[0][2:])]


GPU_STANDIN = object()
register_custom_op("TestScaledTanh", scaled_tanh, scaled_tanh_shape, gpu_kernel=GPU_STANDIN)
register_custom_op("TestHalves", halves, halves_shape)


def test_custom_op_runs_end_to_end():
    net = Network("custom")
    x = net.input("x", (None, 6, 5))
    y = net.custom("TestScaledTanh", [x], {"scale": 3.0})
    a, b = net.custom("TestHalves", [net.relu(y)])
    assert y.shape == ("N", 6, 5) and a.shape == ("N", 3, 5) and b.shape == ("N", 3, 5)
    net.output(net.add(a, b), "out")
    graph = assert_shapes_match_kernels(net)
    assert graph.opsets == {"": 17, CUSTOM_DOMAIN: 1}
    assert graph.nodes[0].domain == CUSTOM_DOMAIN
    plan = engine.build(graph)
    assert plan.layers[0]["kernel"] == f"{CUSTOM_DOMAIN}:TestScaledTanh-1"
    loaded = engine.Engine(decode_plan(plan.to_bytes()))  # through the plan file's bytes
    feeds = {"x": rand(2, 6, 5)}
    t = np.maximum(np.tanh(feeds["x"]) * 3, 0)
    np.testing.assert_allclose(loaded.create_context().run(feeds)["out"], t[:, :3] + 2 * t[:, 3:], rtol=1e-6)


def test_custom_op_registry():
    assert custom_op_shape_rule("TestScaledTanh") is scaled_tanh_shape
    assert custom_op_gpu_kernel("TestScaledTanh") is GPU_STANDIN
    assert custom_op_gpu_kernel("TestHalves") is None
    register_custom_op("TestScaledTanh", scaled_tanh, scaled_tanh_shape)  # the same again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_custom_op("TestScaledTanh", halves, scaled_tanh_shape)
    with pytest.raises(ValueError, match="identifier"):
        register_custom_op("bad name", scaled_tanh, scaled_tanh_shape)
    with pytest.raises(KeyError, match="TestNope"):
        custom_op_shape_rule("TestNope")


def test_custom_op_shape_rule_errors_are_reported():
    register_custom_op("TestBadRule", scaled_tanh, lambda shapes, attrs: "not a shape")
    register_custom_op("TestRaisingRule", scaled_tanh, lambda shapes, attrs: shapes[5])
    net = Network("t")
    x = net.input("x", (None, 3))
    with pytest.raises(ValueError, match="TestBadRule.*must return a shape"):
        net.custom("TestBadRule", [x])
    with pytest.raises(ValueError, match="TestRaisingRule.*shape rule failed"):
        net.custom("TestRaisingRule", [x])
