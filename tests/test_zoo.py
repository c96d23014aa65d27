"""engine.zoo: torchvision's parameter counts and names, every model builds, sane activations, and
the engine's numbers match onnxruntime's on the exported ONNX."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import engine
from engine import zoo
from engine.builder import BuildConfig
from engine.onnx_export import to_onnx

# torchvision's numel() sums (inception_v3 without its aux head: 27,161,264 - 3,326,696).
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "resnet152": 60_192_808,
    "googlenet": 6_624_904,
    "vgg19": 143_667_240,
    "alexnet": 61_100_840,
    "inception_v3": 23_834_568,
}
# Parameter counts do not depend on the image size where the head is a global pool, so those
# models are built small here; vgg19 and alexnet need 224 for their 7x7 / 6x6 pools.
SMALL_SIZE = {"resnet18": 64, "resnet50": 64, "resnet152": 64, "googlenet": 64, "inception_v3": 75,
              "vgg19": 224, "alexnet": 224}


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def assert_sane(logits: np.ndarray, batch: int, classes: int = 1000) -> None:
    assert logits.shape == (batch, classes) and logits.dtype == np.float32
    assert np.isfinite(logits).all()
    assert logits.std() > 1e-3, "the logits are (nearly) all equal"
    assert np.abs(logits).max() < 100, "activations blew up"
    assert softmax(logits).max() < 0.9, "the softmax is one-hot on random input"


def test_names():
    assert zoo.NAMES == tuple(TORCHVISION_PARAMS)
    with pytest.raises(ValueError, match="no zoo model named 'resnet34'"):
        zoo.get("resnet34")


@pytest.mark.parametrize("name", zoo.NAMES)
def test_param_counts_match_torchvision_and_the_model_builds(name):
    graph = zoo.get(name, image_size=SMALL_SIZE[name])
    assert zoo.param_count(graph) == TORCHVISION_PARAMS[name]
    assert graph.inputs == ["input"] and graph.outputs == ["logits"]
    assert graph.value("input").shape == ("N", 3, SMALL_SIZE[name], SMALL_SIZE[name])
    assert graph.value("logits").shape == ("N", 1000)
    for v in graph.constants():
        assert v.const.dtype == np.float32 and np.isfinite(v.const).all(), v.name
    plan = engine.build(graph, BuildConfig(probe=False, optimize=False, max_batch=8))
    assert len(plan.layers) == len(graph.nodes)
    assert plan.outputs[0]["shape"] == ["N", 1000]
    # ONNX's own shape inference agrees with every shape the Network computed (it reads only the
    # weights' dims, so their data is dropped: vgg19's 575 MB would take seconds to serialise)
    model = to_onnx(graph, check=False)
    for tensor in model.graph.initializer:
        tensor.ClearField("raw_data")
    onnx.shape_inference.infer_shapes(model, strict_mode=True)


def test_layouts_follow_torchvision():
    r50 = zoo.resnet50(image_size=64)
    nodes = {n.name: n for n in r50.nodes}
    w = {v.name: v.const.shape for v in r50.constants()}
    assert w["conv1.weight"] == (64, 3, 7, 7) and w["fc.weight"] == (1000, 2048) and w["fc.bias"] == (1000,)
    assert w["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert w["layer2.0.conv2.weight"] == (128, 128, 3, 3)
    assert nodes["layer2.0.conv2"].attrs["strides"] == [2, 2]  # v1.5: stride on the 3x3 conv
    assert nodes["layer2.0.conv1"].attrs["strides"] == [1, 1]
    assert "layer1.1.downsample.0" not in nodes
    assert r50.op_counts()["Conv"] == 53 and r50.op_counts()["BatchNormalization"] == 53
    assert "conv1.bias" not in w and "layer4.2.bn3.running_var" in w

    g = zoo.googlenet(image_size=64)
    w = {v.name: v.const.shape for v in g.constants()}
    assert w["inception3a.branch3.1.conv.weight"] == (32, 16, 3, 3)  # torchvision's "5x5" is 3x3
    assert w["inception5b.branch4.1.conv.weight"] == (128, 832, 1, 1)
    pools = [n for n in g.nodes if n.op_type == "MaxPool"]
    assert all(n.attrs.get("ceil_mode") == 1 for n in pools)
    assert g.op_counts().get("LRN", 0) == 0 and g.op_counts()["BatchNormalization"] == 57

    v3 = zoo.inception_v3(image_size=75)
    w = {v.name: v.const.shape for v in v3.constants()}
    assert w["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert w["Mixed_7c.branch3x3dbl_3b.conv.weight"] == (384, 384, 3, 1)
    avg = [n for n in v3.nodes if n.op_type == "AveragePool"]
    assert len(avg) == 9 and all(n.attrs["count_include_pad"] == 1 for n in avg)  # torch's F.avg_pool2d


def test_num_classes_and_fixed_batch():
    graph = zoo.resnet18(batch=3, num_classes=10, image_size=32)
    assert graph.value("input").shape == (3, 3, 32, 32) and graph.value("logits").shape == (3, 10)
    assert zoo.param_count(graph) == TORCHVISION_PARAMS["resnet18"] - 990 * 513  # fc: 512 weights + 1 bias a class
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        zoo.resnet18(batch=0)


def test_vgg_and_alexnet_heads_need_their_feature_map():
    with pytest.raises(ValueError, match="uneven"):
        zoo.alexnet(image_size=200)
    with pytest.raises(ValueError, match="image_size must be an integer >= 75"):
        zoo.inception_v3(image_size=64)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (zoo.resnet18(image_size=32, seed=s) for s in (0, 0, 1))
    for name in ("conv1.weight", "bn1.running_var", "layer3.1.bn2.running_mean", "fc.bias"):
        np.testing.assert_array_equal(a.value(name).const, b.value(name).const)
        assert not np.array_equal(a.value(name).const, c.value(name).const)


def test_batchnorm_statistics_look_trained():
    graph = zoo.resnet50(image_size=64)
    for node in graph.nodes:
        if node.op_type != "BatchNormalization":
            continue
        gamma, beta, mean, var = (graph.value(i).const for i in node.inputs[1:])
        ends_branch = node.name.endswith(".bn3")
        typical = zoo.RESIDUAL_GAMMA if ends_branch else 1.0
        assert 0.5 * typical <= gamma.min() and gamma.max() <= 1.5 * typical
        assert abs(gamma.mean() - typical) < 0.1 * typical
        shift = beta - (0.0 if ends_branch else zoo.ACTIVE_SHIFT) * gamma  # the rest is N(0, 0.1)
        assert np.abs(shift).max() < 0.6 and abs(shift.mean()) < 0.05
        assert (var > 0).all()


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "googlenet"])
def test_models_are_well_conditioned(name):
    """A small relative change of the input moves the logits by a comparable amount, as in a trained
    network; a random network that amplified it 30-70x (resnet50 with gamma ~ 1 at the end of every
    residual branch, googlenet with BNs that centre every ReLU's input) would make FP16-vs-FP32
    comparisons measure the weights, not the engine."""
    graph = zoo.get(name, image_size=64)
    context = engine.Engine(engine.build(graph, BuildConfig(max_batch=4))).create_context()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 64, 64)).astype(np.float32)
    nudged = x * (1 + 1e-3 * rng.standard_normal(x.shape).astype(np.float32))
    y, z = (context.run({"input": a})["logits"].astype(np.float64) for a in (x, nudged))
    amplification = np.linalg.norm(z - y) / np.linalg.norm(y) / 1e-3
    assert amplification < 8, amplification


def compare_with_onnxruntime(graph, size: int, batch: int = 1) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    feeds = {"input": np.random.default_rng(5).standard_normal((batch, 3, size, size)).astype(np.float32)}
    model = to_onnx(graph)
    plan = engine.build(graph)
    ours = engine.Engine(plan).create_context().run(feeds)["logits"]
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4 * np.abs(theirs).max())
    return ours


def test_resnet18_matches_onnxruntime():
    logits = compare_with_onnxruntime(zoo.resnet18(batch=None, image_size=64), 64)
    assert_sane(logits, 1)


def test_googlenet_matches_onnxruntime():
    # 56x56 puts ceil mode to work: floor pooling would give 6, 3, 1 where ceil gives 7, 3, 2
    graph = zoo.googlenet(batch=1, image_size=56)
    assert graph.value("maxpool4_out").shape == (1, 832, 2, 2)
    logits = compare_with_onnxruntime(graph, 56)
    assert_sane(logits, 1)


def test_resnet152_stays_sane_at_small_size():
    graph = zoo.resnet152(batch=1, image_size=32)
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    plan = engine.build(graph, BuildConfig(probe=False))
    assert_sane(engine.Engine(plan).create_context().run({"input": x})["logits"], 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.NAMES)
def test_full_size_models_are_sane(name):
    graph = zoo.get(name, batch=2)
    size = graph.value("input").shape[2]
    x = np.random.default_rng(4).standard_normal((2, 3, size, size)).astype(np.float32)
    plan = engine.build(graph, BuildConfig(probe=False))
    assert_sane(engine.Engine(plan).create_context().run({"input": x})["logits"], 2)
