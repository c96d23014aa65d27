"""Concat elision: a Concat whose producers can write into slices of its output is marked `elided`."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest

from engine import zoo
from engine.ir import Graph
from engine.network import Network
from engine.passes import FUSED_DOMAIN, layer_count
from engine.passes.concat_elision import elide_concats
from engine.passes.horizontal_fusion import fuse_siblings
from kernels.cpu import CPU_OPS
from tests.passes.test_horizontal_fusion import optimized_for_horizontal_fusion
from tests.passes.util import assert_same_outputs, random_feeds

RNG = np.random.default_rng(11)


def _w(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _concats(graph: Graph) -> dict[str, int]:
    return {n.name: n.attrs.get("elided", 0) for n in graph.nodes if n.op_type == "Concat"}


def _refusals(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if "concat elision" in r.getMessage())


def two_branches(axis: int = 1) -> Network:
    net = Network("two_branches")
    x = net.input("x", (None, 3, 6, 6))
    a = net.relu(net.conv(x, _w(4, 3, 3, 3), _w(4), pad=1, name="a"), name="relu_a")
    b = net.relu(net.conv(x, _w(2, 3, 1, 1), _w(2), name="b"), name="relu_b")
    return net, x, a, b


def test_concat_of_private_producer_outputs_is_elided():
    net, x, a, b = two_branches()
    net.output(net.relu(net.concat([a, b], name="cat"), name="after"), "y")
    graph = net.graph()
    before = copy.deepcopy(graph)
    elide_concats(graph)
    graph.validate()
    assert _concats(graph) == {"cat": 1}
    cat = next(n for n in graph.nodes if n.name == "cat")
    assert cat.attrs == {"axis": 1, "elided": 1} and cat.inputs == ["relu_a_out", "relu_b_out"]
    assert len(graph.nodes) == len(before.nodes)  # nothing removed: the planner does the rest
    assert layer_count(graph) == layer_count(before) - 1
    # however the runtime treats it (plain Concat, or producers writing into its slices), same numbers
    assert_same_outputs(before, graph, random_feeds(before, batch=3))


def test_concat_that_is_a_graph_output_and_negative_axis():
    net, x, a, b = two_branches()
    net.output(net.concat([a, b], axis=-3, name="cat"), "y")
    graph = net.graph()
    before = copy.deepcopy(graph)
    elide_concats(graph)
    assert _concats(graph) == {"cat": 1}
    assert_same_outputs(before, graph, random_feeds(before))


def test_nested_concats_elide_only_the_inner_one(caplog):
    net, x, a, b = two_branches()
    c = net.relu(net.conv(x, _w(1, 3, 1, 1), name="c"), name="relu_c")
    inner = net.concat([a, b], name="inner")
    net.output(net.concat([inner, c], name="outer"), "y")
    graph = net.graph()
    before = copy.deepcopy(graph)
    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        elide_concats(graph)
    assert _concats(graph) == {"inner": 1, "outer": 0}
    assert "produced by elided concat 'inner'" in _refusals(caplog)
    assert_same_outputs(before, graph, random_feeds(before))


def _net_with(case: str) -> Network:
    net, x, a, b = two_branches()
    if case == "read elsewhere":
        net.output(net.concat([a, b], name="cat"), "y")
        net.output(net.sigmoid(b, name="side"), "side")
    elif case == "graph input":
        net.output(net.concat([a, x], name="cat"), "y")
    elif case == "repeated":
        net.output(net.concat([a, b, a], name="cat"), "y")
    elif case == "graph output":
        net.output(b, "yb")
        net.output(net.concat([a, "yb"], name="cat"), "y")
    elif case == "view":
        flat_a = net.flatten(a, name="flat_a")
        flat_b = net.flatten(b, name="flat_b")
        net.output(net.concat([flat_a, flat_b], name="cat"), "y")
    elif case == "batch axis":
        net.output(net.concat([a, net.relu(net.conv(x, _w(4, 3, 1, 1), name="c"), name="relu_c")], axis=0,
                              name="cat"), "y")
    else:
        raise AssertionError(case)
    return net


@pytest.mark.parametrize("case, reason", [
    ("read elsewhere", "also read by ['side']"),
    ("graph input", "is a graph input"),
    ("repeated", "more than once"),
    ("graph output", "is a graph output"),
    ("view", "view op"),
    ("batch axis", "not all fixed"),
])
def test_concat_is_kept_when_a_producer_cannot_write_in_place(case, reason, caplog):
    graph = _net_with(case).graph()
    before = copy.deepcopy(graph)
    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        elide_concats(graph)
    assert _concats(graph) == {"cat": 0}
    assert layer_count(graph) == layer_count(before)
    assert reason in _refusals(caplog)


def test_weight_input_is_refused(caplog):
    net, x, a, b = two_branches()
    net.output(net.concat([a, b], name="cat"), "y")
    graph = net.graph()
    cat = next(n for n in graph.nodes if n.name == "cat")
    cat.inputs[1] = graph.add_constant("ones", np.ones((1, 2, 6, 6), np.float32))
    graph.values["ones"].shape = ("N", 2, 6, 6)  # pretend it matches, so only the weight rule refuses
    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        elide_concats(graph)
    assert _concats(graph) == {"cat": 0}
    assert "is a weight" in _refusals(caplog)


def test_unknown_or_mismatched_shapes_are_refused(caplog):
    net, x, a, b = two_branches()
    net.output(net.concat([a, b], name="cat"), "y")
    graph = net.graph()
    graph.values["relu_b_out"].shape = None
    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        elide_concats(graph)
    assert _concats(graph) == {"cat": 0}
    graph.values["relu_b_out"].shape = ("N", 2, 5, 6)
    with caplog.at_level(logging.DEBUG, logger="batchscore.build"):
        elide_concats(graph)
    assert _concats(graph) == {"cat": 0}
    assert "unknown" in _refusals(caplog) and "differ on axis 2" in _refusals(caplog)


# -------------------------------------------------------------------- GoogLeNet


@pytest.fixture(scope="module")
def googlenet() -> Graph:
    return zoo.googlenet(image_size=32, seed=3)


def test_googlenet_elides_every_inception_concat(googlenet):
    graph = copy.deepcopy(googlenet)
    layers = layer_count(graph)
    elide_concats(graph)
    graph.validate()
    concats = _concats(graph)
    assert len(concats) == 9 and all(concats.values())
    assert layer_count(graph) == layers - 9


@pytest.mark.skipif("FusedConv" not in CPU_OPS.op_types(FUSED_DOMAIN),
                    reason="the FusedConv numpy kernel is not registered yet")
def test_googlenet_after_horizontal_fusion_still_elides_and_computes_the_same(googlenet):
    graph = optimized_for_horizontal_fusion(copy.deepcopy(googlenet))
    fuse_siblings(graph)
    elide_concats(graph)
    graph.validate()
    # branch1's output is now one split of the merged 1x1 conv, still read only by the concat
    assert all(_concats(graph).values()) and len(_concats(graph)) == 9
    assert_same_outputs(googlenet, graph, random_feeds(googlenet, batch=2), rtol=1e-4, atol=1e-4)
