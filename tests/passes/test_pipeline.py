"""The whole pass pipeline on the zoo networks: far fewer layers, the same numbers (fp32)."""

import numpy as np
import pytest

import engine
from engine import zoo
from engine.builder import BuildConfig
from engine.passes import layer_count
from engine.passes.pipeline import default_pipeline

SIZES = {"resnet18": 32, "resnet50": 32, "resnet152": 32, "googlenet": 40, "vgg19": 224, "alexnet": 224, "inception_v3": 75}


def _relative_l2(a, b):
    return float(np.linalg.norm((a - b).astype(np.float64)) / np.linalg.norm(b.astype(np.float64)))


def _as_float64(graph):
    for value in graph.values.values():
        if value.const is not None and value.const.dtype == np.float32:
            value.const = value.const.astype(np.float64)
        if value.dtype == np.float32:
            value.dtype = np.dtype("float64")
    return graph


@pytest.mark.parametrize("name", zoo.NAMES)
def test_optimized_zoo_networks_match_the_unoptimized_ones(name):
    """Fused fp32 is as close to the float64 truth as unfused fp32 is (deep random-weight nets such as
    ResNet-152 drift ~1e-3 from float64 in plain fp32 already, so a fixed bound would be arbitrary)."""
    size = SIZES[name]
    graph = zoo.get(name, image_size=size)
    fused = engine.build(graph, BuildConfig(max_batch=4))
    plain = engine.build(graph, BuildConfig(max_batch=4, optimize=False))
    assert len(fused.layers) <= len(plain.layers) * 0.7, (len(fused.layers), len(plain.layers))
    exact = engine.build(_as_float64(graph.copy()), BuildConfig(max_batch=4, optimize=False, probe=False))
    x = np.random.default_rng(3).standard_normal((1, 3, size, size)).astype(np.float32)
    truth = engine.Engine(exact).create_context().run({"input": x.astype(np.float64)})["logits"]
    want = engine.Engine(plain).create_context().run({"input": x})["logits"]
    got = engine.Engine(fused).create_context().run({"input": x})["logits"]
    fp32_noise = _relative_l2(want, truth)
    assert _relative_l2(got, truth) <= 3 * fp32_noise + 1e-6, (_relative_l2(got, truth), fp32_noise)
    assert _relative_l2(got, want) < max(1e-4, 4 * fp32_noise)


def test_the_pipeline_order_is_explicit_and_complete():
    names = [p.name for p in default_pipeline()]
    assert names[0] == "identity removal" and names[-1] == "dead-layer elimination"
    assert names.index("batch-norm folding") < names.index("conv fusion") < names.index("horizontal fusion") \
        < names.index("concat elision")


def test_arena_and_no_arena_give_the_same_outputs():
    plan = engine.build(zoo.get("googlenet", image_size=40), BuildConfig(max_batch=4))
    assert any(layer.get("attrs", {}).get("elided") for layer in plan.layers)
    eng = engine.Engine(plan)
    x = np.random.default_rng(4).standard_normal((2, 3, 40, 40)).astype(np.float32)
    with_arena = eng.create_context().run({"input": x})["logits"]
    without = eng.create_context(arena=False).run({"input": x})["logits"]
    # BLAS may block a strided `out=` differently, so the last bits can differ
    np.testing.assert_allclose(with_arena, without, rtol=1e-5, atol=1e-5)
    # a second run with a different batch re-plans the arena and still agrees
    x3 = np.concatenate([x, x[:1]])
    np.testing.assert_allclose(eng.create_context().run({"input": x3})["logits"][:2], with_arena, rtol=1e-5, atol=1e-5)


def test_layer_count_skips_views_and_elided_concats():
    graph = zoo.get("googlenet", image_size=40)
    plan = engine.build(graph, BuildConfig(max_batch=2))
    kinds = [layer["kind"] for layer in plan.layers]
    elided = sum(1 for layer in plan.layers if layer.get("attrs", {}).get("elided"))
    views = sum(1 for k in kinds if k in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"))
    assert elided == 9
    from engine.inspect import describe_plan

    assert describe_plan(plan)["totals"]["layers_running_kernels"] == len(kinds) - elided - views
