"""The CUDA backend against the numpy backend (run on the GPU machine; skipped without a GPU)."""

import numpy as np
import pytest

import engine
from engine import zoo
from engine.builder import BuildConfig
from engine.network import Network

pytestmark = pytest.mark.gpu


def _rel(a, b):
    return float(np.linalg.norm((a.astype(np.float64) - b)) / np.linalg.norm(b.astype(np.float64)))


def _cpu_and_gpu(graph, precision, batch, size, seed=0):
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    cpu = engine.Engine(engine.build(graph, BuildConfig(max_batch=batch))).create_context().run({"input": x})["logits"]
    plan = engine.build(graph, BuildConfig(max_batch=batch, device="cuda", precision=precision, timing_cache=None))
    gpu_engine = engine.engine_for(plan)
    gpu = gpu_engine.create_context().run({"input": x})["logits"]
    return cpu, gpu, plan, gpu_engine


SIZES = {"resnet18": 64, "resnet50": 64, "googlenet": 64, "vgg19": 224, "alexnet": 224, "inception_v3": 139,
         "resnet152": 64}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_fp32_plans_match_the_numpy_backend(name):
    cpu, gpu, plan, eng = _cpu_and_gpu(zoo.get(name, image_size=SIZES[name]), "fp32", 4, SIZES[name])
    assert _rel(gpu, cpu) <= 1e-4, _rel(gpu, cpu)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_fp16_plans_are_close_and_agree_on_top1(name):
    cpu, gpu, plan, eng = _cpu_and_gpu(zoo.get(name, image_size=SIZES[name]), "fp16", 8, SIZES[name], seed=1)
    assert _rel(gpu, cpu) <= 1e-2, _rel(gpu, cpu)
    assert (gpu.argmax(1) == cpu.argmax(1)).mean() >= 0.99 or _rel(gpu, cpu) < 3e-3


def test_cuda_graph_replay_equals_eager_and_repeats():
    graph = zoo.get("resnet18", image_size=64)
    plan = engine.build(graph, BuildConfig(max_batch=8, device="cuda", precision="fp16", timing_cache=None))
    eng = engine.engine_for(plan)
    x = np.random.default_rng(2).standard_normal((8, 3, 64, 64)).astype(np.float32)
    eager = eng.create_context(use_graphs=False).run({"input": x})["logits"]
    ctx = eng.create_context()
    first = ctx.run({"input": x})["logits"]  # eager, then captured
    replay = ctx.run({"input": x})["logits"]  # from the graph
    assert ctx.buckets[8].graph is not None
    np.testing.assert_array_equal(first, eager)
    np.testing.assert_array_equal(replay, eager)
    other = ctx.run({"input": x[:3]})["logits"]  # a second bucket
    np.testing.assert_allclose(other, eager[:3], rtol=2e-2, atol=2e-2)


def test_every_layer_runs_on_the_gpu_for_the_zoo():
    for name in ("resnet50", "googlenet", "vgg19"):
        plan = engine.build(zoo.get(name, image_size=SIZES[name]),
                            BuildConfig(max_batch=2, device="cuda", precision="fp16", timing_cache=None))
        assert not plan.header["tuning"]["host_layers"], (name, plan.header["tuning"]["host_layers"])
        assert all(layer.get("tactic") for layer in plan.layers if layer["kind"] == "FusedConv")


@pytest.mark.parametrize("kind", ["max", "avg", "avg_pad", "lrn", "softmax", "chain", "concat", "gemm"])
def test_single_layers_match_numpy(kind):
    net = Network(f"single_{kind}")
    x = net.input("input", (None, 8, 9, 9))
    rng = np.random.default_rng(5)
    if kind == "max":
        y = net.max_pool(x, kernel=3, stride=2, pad=1)
    elif kind == "avg":
        y = net.avg_pool(x, kernel=3, stride=2, pad=0)
    elif kind == "avg_pad":
        y = net.avg_pool(x, kernel=3, stride=1, pad=1)
    elif kind == "lrn":
        y = net.lrn(x, size=5)
    elif kind == "softmax":
        y = net.softmax(net.flatten(x))
    elif kind == "chain":
        y = net.relu(net.add(net.mul(x, rng.uniform(0.5, 1.5, (1, 8, 1, 1)).astype(np.float32)), x))
    elif kind == "concat":
        y = net.concat([net.relu(x), net.sigmoid(x)], axis=1)
    else:
        y = net.gemm(net.flatten(x), rng.standard_normal((5, 8 * 81)).astype(np.float32), rng.standard_normal(5).astype(np.float32), trans_b=True)
    net.output(y, "logits")
    graph = net.graph()
    data = rng.standard_normal((3, 8, 9, 9)).astype(np.float32)
    want = engine.Engine(engine.build(graph, BuildConfig(max_batch=3))).create_context().run({"input": data})["logits"]
    plan = engine.build(graph, BuildConfig(max_batch=3, device="cuda", precision="fp32", timing_cache=None))
    got = engine.engine_for(plan).create_context().run({"input": data})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_plan_for_another_gpu_architecture_is_refused():
    plan = engine.build(zoo.get("resnet18", image_size=32), BuildConfig(max_batch=2, device="cuda", timing_cache=None))
    plan.header["device"]["arch"] = "sm_70"
    with pytest.raises(engine.PlanFormatError, match="rebuild the plan on this GPU type"):
        engine.engine_for(plan)


def test_a_second_build_uses_the_timing_cache(tmp_path):
    cache = str(tmp_path / "timing.json")
    graph = zoo.get("resnet18", image_size=64)
    first = engine.build(graph, BuildConfig(max_batch=16, device="cuda", precision="fp16", timing_cache=cache))
    second = engine.build(graph, BuildConfig(max_batch=16, device="cuda", precision="fp16", timing_cache=cache))
    assert first.header["tuning"]["tuned"] > 0 and second.header["tuning"]["tuned"] == 0
    assert [l.get("tactic") for l in first.layers] == [l.get("tactic") for l in second.layers]


@pytest.mark.parametrize("precision, bound", [("fp16", 1e-2), ("fp32", 1e-4)])
def test_every_tuned_tactic_matched_the_numpy_kernel(precision, bound, caplog):
    """engine/tactic_check: each layer's chosen tactic was run against its numpy kernel while tuning."""
    plan = engine.build(zoo.get("resnet18", image_size=64),
                        BuildConfig(max_batch=16, device="cuda", precision=precision, timing_cache=None))
    tuning = plan.header["tuning"]
    assert tuning["tuned"] > 0 and 0 < tuning["numpy_check_worst_error"] <= bound, tuning
    assert "differs from the numpy kernel" not in caplog.text


def test_a_smaller_batch_runs_the_engine_tuned_at_the_largest_by_name():
    """cuDNN ranks a convolution's plans per shape: the batch-1 bucket finds the tuned engine by the
    name the plan records (kernels.cuda.conv.plan_index_for), or takes cuDNN's first choice for batch 1."""
    plan = engine.build(zoo.get("resnet18", image_size=64),
                        BuildConfig(max_batch=64, device="cuda", precision="fp16", timing_cache=None))
    recorded = {layer["name"]: layer["tactic"] for layer in plan.layers if str(layer.get("tactic")).startswith("cudnn:")}
    assert recorded and all(t.count(":") == 2 for t in recorded.values()), recorded  # index and name
    bucket = engine.engine_for(plan).create_context().bucket(1)
    checked = 0
    for name, runner in bucket.runners:
        if name not in recorded or not hasattr(runner, "count"):
            continue
        wanted = recorded[name].split(":", 2)[2]
        names = [runner._plan_name(i) for i in range(runner.count)]
        assert runner.tactic.split(":", 2)[2] == wanted if wanted in names else runner.index == 0, (name, names)
        checked += 1
    assert checked == len(recorded)


def test_two_contexts_in_one_process_each_run_on_their_own_stream():
    # A cuDNN handle shared by contexts once ran the first context's convolutions on the stream
    # of the last context created, unordered with the rest of the first one's work.
    graph = zoo.get("resnet18", image_size=64)
    x = np.random.default_rng(3).standard_normal((4, 3, 64, 64)).astype(np.float32)
    want = engine.Engine(engine.build(graph, BuildConfig(max_batch=4))).create_context().run({"input": x})["logits"]
    plans = [engine.build(graph, BuildConfig(max_batch=4, device="cuda", precision=p, timing_cache=None))
             for p in ("fp32", "fp16")]
    first, second = (engine.engine_for(p).create_context(use_graphs=False) for p in plans)
    second.run({"input": x})
    assert _rel(first.run({"input": x})["logits"], want) <= 1e-4
    assert _rel(second.run({"input": x})["logits"], want) <= 1e-2


@pytest.mark.parametrize("network", ["overflowing_network", "overflowing_branch_network"])
def test_fp16_layers_that_overflow_run_in_fp32_and_the_plan_stays_accurate(network):
    """The second network puts an overflowing branch and a plain one into one elided concat, written
    by one horizontally fused conv: the concat and both its writers run in FP32."""
    import tests.test_precision

    graph = getattr(tests.test_precision, network)()
    x = np.random.default_rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = engine.Engine(engine.build(graph, BuildConfig(max_batch=2))).create_context().run({"input": x})["logits"]
    plan = engine.build(graph, BuildConfig(max_batch=2, device="cuda", precision="fp16", timing_cache=None))
    fallback = plan.header["fp32_fallback"]
    assert fallback, "the layer scaling by 3e5 must not run in float16"
    fp32_layers = [layer for layer in plan.layers if layer["precision"] == "fp32"]
    assert {layer["name"] for layer in fp32_layers} == set(fallback)
    values = plan.header["values"]
    assert all(values[out]["dtype"] == "float32" for layer in fp32_layers for out in layer["outputs"] if out)
    assert not plan.header["tuning"]["host_layers"]
    context = engine.engine_for(plan).create_context()
    got = context.run({"input": x})["logits"]
    again = context.run({"input": x})["logits"]  # replayed from the CUDA graph, casts included
    assert context.buckets[2].graph is not None
    assert np.isfinite(got).all() and _rel(got, want) <= 1e-2, _rel(got, want)
    np.testing.assert_array_equal(again, got)


def test_an_ordinary_fp16_plan_keeps_every_layer_in_fp16():
    plan = engine.build(zoo.get("resnet18", image_size=64),
                        BuildConfig(max_batch=2, device="cuda", precision="fp16", timing_cache=None))
    assert plan.header["fp32_fallback"] == {}
    assert all(layer["precision"] == "fp16" for layer in plan.layers)


def test_running_a_gpu_plan_does_not_import_torch():
    """The cuDNN frontend imports torch, where it is installed, to ask whether a buffer is a torch
    tensor (8 s of a worker's start-up on the H100 machine); kernels.cuda.import_cudnn stops it."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, numpy as np, engine\n"
            "from engine import zoo\n"
            "from engine.builder import BuildConfig\n"
            "plan = engine.build(zoo.get('resnet18', image_size=32), BuildConfig(max_batch=2, device='cuda', "
            "precision='fp16', timing_cache=None))\n"
            "engine.engine_for(plan).create_context().run({'input': np.zeros((2, 3, 32, 32), np.float32)})\n"
            "print('torch' in sys.modules)\n")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False", "running a GPU plan imported torch"


def test_a_contexts_cudnn_handle_is_destroyed_with_it():
    import gc

    plan = engine.build(zoo.get("resnet18", image_size=32), BuildConfig(max_batch=2, device="cuda",
                                                                           timing_cache=None))
    context = engine.engine_for(plan).create_context()
    context.run({"input": np.zeros((2, 3, 32, 32), np.float32)})
    handle = context.device.cudnn_handle
    assert handle.backend_handle is not None
    del context
    gc.collect()
    assert handle.backend_handle is None, "the context's cuDNN handle outlived it"
