"""FP32 without TF32 on the GPU: NCHW convolutions (conv-only cuDNN graph + one epilogue pass), the
tiled SGEMM raw kernel, the vectorized and plane pooling kernels, and whole FP32 plans captured in a
CUDA graph. Each kernel is checked against the numpy kernels (run on the GPU machine; skipped
without a GPU)."""

import time

import numpy as np
import pytest

import engine
from engine import zoo
from engine.builder import BuildConfig
from kernels.cpu import CPU_OPS
from kernels.cpu.activations import apply_activation
from kernels.cuda.spec import LayerSpec

pytestmark = pytest.mark.gpu

ACTIVATIONS = [("", []), ("Relu", []), ("Sigmoid", []), ("Tanh", []), ("SiLU", []), ("LeakyRelu", [0.1]),
               ("Clip", [0.0, 6.0]), ("HardSigmoid", [0.2, 0.5]), ("HardSwish", []), ("Elu", [1.0]), ("Softplus", [])]


def _rel(got, want) -> float:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


@pytest.fixture(scope="module")
def gpu():
    import cupy as cp

    from kernels.cuda import load_kernels
    from kernels.cuda.device import make_device

    load_kernels()
    stream = cp.cuda.Stream(non_blocking=True)
    return cp, stream, make_device(stream)


def _nhwc(cp, host, dtype):
    """A host NCHW array on the device as an NCHW-shaped view of NHWC memory (the FP16 arena's layout)."""
    n, c, h, w = host.shape
    out = cp.empty((n, h, w, c), dtype=dtype).transpose(0, 3, 1, 2)
    out[...] = cp.asarray(host.astype(dtype))
    return out


def _run(stream, runner):
    import cupy as cp

    # The cases place their inputs on the legacy default stream, which a non-blocking stream does not
    # wait for: finish those copies first. (Without this, pools_match_numpy[6-nchw-fp32-avg4] read an
    # unfinished input once, with six test processes sharing the H100.)
    cp.cuda.Device().synchronize()
    with stream:
        runner()
    stream.synchronize()


# ------------------------------------------------------------------------------------------------
# NCHW convolution: conv-only cuDNN graph, then bias + residual + activation in one pass


def _conv_case(gpu, *, bias=True, residual=False, activation=("", []), splits=(), split_acts=(), concat_split=None,
               shape=(3, 8, 11, 13), out_channels=12, kernel=3, stride=1, pad=1, seed=0):
    from kernels.cuda.conv import CudnnConv, EpiloguePass

    cp, stream, device = gpu
    rng = np.random.default_rng(seed)
    x_host = rng.standard_normal(shape).astype(np.float32)
    w_host = (rng.standard_normal((out_channels, shape[1], kernel, kernel)) / np.sqrt(shape[1] * kernel * kernel)
              ).astype(np.float32)
    b_host = rng.standard_normal(out_channels).astype(np.float32) if bias else None
    attrs = {"kernel_shape": [kernel, kernel], "strides": [stride, stride], "pads": [pad] * 4, "group": 1,
             "activation": activation[0], "activation_params": list(activation[1]), "residual": int(residual)}
    if splits:
        attrs["output_splits"] = list(splits)
        if split_acts:
            attrs["split_activations"] = [list(a) for a in split_acts]
    reference = CPU_OPS.lookup("FusedConv", 1, "batchscore").fn
    oh = (shape[2] + 2 * pad - kernel) // stride + 1
    ow = (shape[3] + 2 * pad - kernel) // stride + 1
    out_shape = (shape[0], out_channels, oh, ow)
    z_host = rng.standard_normal(out_shape).astype(np.float32) if residual else None
    cpu_attrs = {k: v for k, v in attrs.items() if k not in ("group",)}
    want = reference(x_host, w_host, b_host, z_host, **cpu_attrs)
    want = list(want) if isinstance(want, tuple) else [want]

    x = cp.asarray(x_host)
    inputs = [x, None, None, cp.asarray(z_host) if residual else None]
    consts = {1: w_host} if b_host is None else {1: w_host, 2: b_host}
    buffers, outputs, concat = {}, [], None
    if splits:
        full = cp.zeros(out_shape, dtype=cp.float32)
        buffers["split_buffer"] = full
        start = 0
        for index, size in enumerate(splits):
            if index == concat_split:  # this split belongs to an elided concat: it goes to the concat's slice
                concat = cp.zeros((shape[0], size + 5, oh, ow), dtype=cp.float32)
                outputs.append(concat[:, 2:2 + size])
            else:
                outputs.append(full[:, start:start + size])
            start += size
    else:
        outputs.append(cp.zeros(out_shape, dtype=cp.float32))
    spec = LayerSpec("conv", "FusedConv", attrs, consts, allow_tf32=False, buffers=buffers)
    with stream:
        runner = CudnnConv(spec, inputs, outputs, device)
    assert runner.tactic.startswith("cudnn:") and runner.candidates()
    assert all(isinstance(e, EpiloguePass) for e in runner.epilogues), "NCHW must not use the fused graph's epilogues"
    _run(stream, runner)
    for got, expect in zip(outputs, want):
        assert _rel(cp.asnumpy(got), expect) <= 1e-5, _rel(cp.asnumpy(got), expect)
    if concat is not None:  # nothing outside the split's slice was written
        host = cp.asnumpy(concat)
        assert not host[:, :2].any() and not host[:, 2 + splits[concat_split]:].any()
    return runner


@pytest.mark.parametrize("bias,residual", [(False, False), (True, False), (False, True), (True, True)])
def test_nchw_conv_bias_and_residual(gpu, bias, residual):
    runner = _conv_case(gpu, bias=bias, residual=residual, activation=("Relu", []))
    assert len(runner.epilogues) == 1


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: a[0] or "none")
def test_nchw_conv_each_activation(gpu, activation):
    _conv_case(gpu, bias=True, residual=True, activation=activation)


def test_nchw_conv_alone_needs_no_pass(gpu):
    runner = _conv_case(gpu, bias=False, residual=False)
    assert runner.epilogues == []


@pytest.mark.parametrize("kernel,stride,pad,shape", [(1, 1, 0, (4, 16, 7, 7)), (7, 2, 3, (2, 3, 29, 31)),
                                                     (3, 2, 1, (2, 8, 14, 15))])
def test_nchw_conv_geometries(gpu, kernel, stride, pad, shape):
    _conv_case(gpu, kernel=kernel, stride=stride, pad=pad, shape=shape, activation=("Relu", []))


def test_nchw_conv_splits_with_one_activation_are_one_pass(gpu):
    runner = _conv_case(gpu, splits=(3, 5, 4), activation=("Relu", []))
    assert len(runner.epilogues) == 1


def test_nchw_conv_split_activations(gpu):
    acts = (("Relu", []), ("", []), ("Clip", [0.0, 6.0]))
    runner = _conv_case(gpu, splits=(3, 5, 4), split_acts=acts)
    assert len(runner.epilogues) == 3


@pytest.mark.parametrize("activation", [("", []), ("Relu", [])], ids=["none", "relu"])
def test_nchw_conv_split_into_an_elided_concat(gpu, activation):
    _conv_case(gpu, splits=(3, 5, 4), concat_split=1, activation=activation, bias=False)


# ------------------------------------------------------------------------------------------------
# Tiled SGEMM


@pytest.mark.parametrize("m,k,n", [(1, 2048, 1000), (256, 2048, 1000), (7, 13, 5), (65, 17, 130), (64, 64, 64)])
@pytest.mark.parametrize("bias,activation", [(False, ("", [])), (True, ("", [])), (True, ("Relu", [])),
                                             (False, ("Sigmoid", []))], ids=["plain", "bias", "bias-relu", "sigmoid"])
def test_sgemm_matches_numpy(gpu, m, k, n, bias, activation):
    from kernels.cuda.gemm import TiledSgemm

    cp, stream, _ = gpu
    rng = np.random.default_rng(m * 7 + n)
    a_host = rng.standard_normal((m, k)).astype(np.float32)
    b_host = rng.standard_normal((k, n)).astype(np.float32)
    c_host = rng.standard_normal(n).astype(np.float32) if bias else None
    y = cp.zeros((m, n), dtype=cp.float32)
    with stream:
        runner = TiledSgemm(cp.asarray(a_host), b_host, c_host, y, activation[0], activation[1])
    _run(stream, runner)
    want = a_host.astype(np.float64) @ b_host.astype(np.float64)
    if bias:
        want = want + c_host
    want = apply_activation(want.astype(np.float32), activation[0], activation[1])
    assert _rel(cp.asnumpy(y), want) <= 1e-5, _rel(cp.asnumpy(y), want)


@pytest.mark.parametrize("trans_a,trans_b,alpha,beta,c_shape", [(0, 1, 1.0, 1.0, (5,)), (1, 0, 0.5, 2.0, (1, 5)),
                                                                (1, 1, 1.0, 0.0, (7, 1)), (0, 0, 2.0, 1.0, (7, 5)),
                                                                (0, 1, 1.0, 1.0, ())])
def test_gemm_factory_falls_back_to_sgemm_with_onnx_semantics(gpu, trans_a, trans_b, alpha, beta, c_shape):
    from kernels.cuda.elementwise import _make_gemm

    cp, stream, device = gpu
    rng = np.random.default_rng(3)
    m, k, n = 7, 13, 5
    a_host = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b_host = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c_host = rng.standard_normal(c_shape).astype(np.float32)
    attrs = {"transA": trans_a, "transB": trans_b, "alpha": alpha, "beta": beta, "activation": "Relu",
             "activation_params": []}
    want = CPU_OPS.lookup("FusedGemm", 1, "batchscore").fn(a_host, b_host, c_host, **attrs)
    y = cp.zeros((m, n), dtype=cp.float32)
    for tactic in ("sgemm", None):  # forced, then whatever the factory picks (cuDNN if it can)
        spec = LayerSpec("gemm", "FusedGemm", attrs, {1: b_host, 2: c_host}, tactic=tactic, allow_tf32=False)
        with stream:
            runner = _make_gemm(spec, [cp.asarray(a_host), None, None], [y], device)
        if tactic:
            assert runner.tactic == "sgemm"
        y[...] = 0
        _run(stream, runner)
        assert _rel(cp.asnumpy(y), want) <= 1e-5, (tactic, _rel(cp.asnumpy(y), want))


def test_fp32_gemm_without_tf32_runs_on_the_gpu(gpu):
    """cuDNN has no non-TF32 FP32 matmul: the factory must give the SGEMM rather than refuse."""
    from kernels.cuda.elementwise import _make_gemm

    cp, stream, device = gpu
    b_host = np.ones((16, 4), dtype=np.float32)
    spec = LayerSpec("fc", "FusedGemm", {"transB": 0}, {1: b_host}, allow_tf32=False)
    with stream:
        runner = _make_gemm(spec, [cp.ones((2, 16), dtype=cp.float32), None], [cp.zeros((2, 4), dtype=cp.float32)],
                            device)
    assert runner is not None


# ------------------------------------------------------------------------------------------------
# Pooling


def _pool_case(gpu, kind, shape, dtype, layout, attrs, expect_kind=None):
    from kernels.cuda.pool import Pool2d

    cp, stream, _ = gpu
    rng = np.random.default_rng(11)
    x_host = rng.standard_normal(shape).astype(np.float32)
    op = {"max": "MaxPool", "avg": "AveragePool", "gavg": "GlobalAveragePool", "gmax": "GlobalMaxPool"}[kind]
    want = CPU_OPS.lookup(op, 17).fn(x_host.astype(dtype).astype(np.float32), **attrs)
    want = want[0] if isinstance(want, tuple) else want
    place = (lambda host: _nhwc(cp, host, dtype)) if layout == "nhwc" else (lambda host: cp.asarray(host.astype(dtype)))
    x, y = place(x_host), place(np.zeros(want.shape, dtype=np.float32))
    with stream:
        runner = Pool2d(LayerSpec("pool", op, attrs, {}), [x], [y], is_max=kind in ("max", "gmax"),
                        global_pool=kind.startswith("g"))
    if expect_kind:
        assert runner.kind == expect_kind, (runner.kind, expect_kind)
    _run(stream, runner)
    tolerance = 1e-6 if dtype == np.float32 else 2e-3
    got = cp.asnumpy(y).astype(np.float32)
    assert np.allclose(got, want.astype(dtype).astype(np.float32), rtol=tolerance, atol=tolerance), \
        float(np.abs(got - want).max())
    return runner


POOLS = [("max", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
         ("max", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 0, 0], ceil_mode=1)),
         ("max", dict(kernel_shape=[2, 3], strides=[1, 2], pads=[0, 1, 0, 1], dilations=[2, 1])),
         ("avg", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
         ("avg", dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1)),
         ("avg", dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], ceil_mode=1)),
         ("gavg", {}), ("gmax", {})]


@pytest.mark.parametrize("kind,attrs", POOLS, ids=[f"{k}{i}" for i, (k, _) in enumerate(POOLS)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("channels", [64, 12, 6, 5])
def test_pools_match_numpy(gpu, kind, attrs, dtype, layout, channels):
    _pool_case(gpu, kind, (3, channels, 9, 11), dtype, layout, attrs)


@pytest.mark.parametrize("dtype,channels,expect", [(np.float16, 64, "vector8"), (np.float32, 64, "vector4"),
                                                   (np.float16, 12, "vector4"), (np.float16, 6, "vector2"),
                                                   (np.float32, 6, "vector2"), (np.float16, 5, "generic"),
                                                   (np.float32, 5, "generic")])
def test_channels_last_pools_take_the_widest_vector_the_channels_allow(gpu, dtype, channels, expect):
    _pool_case(gpu, "max", (2, channels, 12, 12), dtype, "nhwc", POOLS[0][1], expect_kind=expect)


def test_nchw_global_pooling_reduces_planes(gpu):
    _pool_case(gpu, "gavg", (4, 2048, 7, 7), np.float32, "nchw", {}, expect_kind="planes")
    _pool_case(gpu, "gavg", (4, 2048, 7, 7), np.float16, "nhwc", {}, expect_kind="vector8")


def test_resnet50_maxpool_vector_kernel_is_faster_than_the_generic_one(gpu):
    """The FP16 stem maxpool of ResNet-50 at batch 256 (64x112x112 -> 56x56, channels-last)."""
    import cupy as cp

    from kernels.cuda import pool

    _, stream, _ = gpu
    attrs = POOLS[0][1]
    x = cp.empty((256, 112, 112, 64), dtype=cp.float16).transpose(0, 3, 1, 2)
    x[...] = 1
    y = cp.empty((256, 56, 56, 64), dtype=cp.float16).transpose(0, 3, 1, 2)
    with stream:
        fast = pool.Pool2d(LayerSpec("pool", "MaxPool", attrs, {}), [x], [y], is_max=True)
        assert fast.kind == "vector8"
        e = x.itemsize
        generic = pool._generic_kernel("float16", True, True)
        args = tuple(np.int32(v) if isinstance(v, int) else v for v in (
            x, y, 256, 64, 112, 112, 56, 56, *[s // e for s in x.strides], *[s // e for s in y.strides],
            3, 3, 2, 2, 1, 1, 1, 1, 0))
        grid = (min((256 * 64 * 56 * 56 + 255) // 256, 65535 * 8),)
        slow = lambda: generic(grid, (256,), args)  # noqa: E731

    def median_ms(run) -> float:
        times = []
        with stream:
            for _ in range(3):
                run()
            for _ in range(20):
                start, end = cp.cuda.Event(), cp.cuda.Event()
                start.record(stream)
                run()
                end.record(stream)
                end.synchronize()
                times.append(cp.cuda.get_elapsed_time(start, end))
        return float(np.median(times))

    fast_ms, slow_ms = median_ms(fast), median_ms(slow)
    print(f"\nResNet-50 maxpool fp16 NHWC batch 256: vector {fast_ms:.3f} ms, generic {slow_ms:.3f} ms")
    assert fast_ms < slow_ms
    assert bool((y == 1).all())


# ------------------------------------------------------------------------------------------------
# Whole FP32 plans: NCHW, no host layers, CUDA graph replay equals eager


@pytest.mark.parametrize("name,size", [("resnet18", 64), ("googlenet", 64)])
def test_fp32_plan_runs_nchw_on_the_gpu_and_its_graph_replays_eager(name, size):
    graph = zoo.get(name, image_size=size)
    plan = engine.build(graph, BuildConfig(max_batch=4, device="cuda", precision="fp32", timing_cache=None))
    assert plan.header["tf32"] is False
    assert not plan.header["tuning"]["host_layers"], plan.header["tuning"]["host_layers"]
    eng = engine.engine_for(plan)
    x = np.random.default_rng(4).standard_normal((4, 3, size, size)).astype(np.float32)
    eager_ctx = eng.create_context(use_graphs=False)
    eager = eager_ctx.run({"input": x})["logits"]
    assert eager_ctx.buckets[4].channels_last is False
    ctx = eng.create_context()
    first = ctx.run({"input": x})["logits"]  # eager, then captured
    replay = ctx.run({"input": x})["logits"]
    assert ctx.buckets[4].graph is not None, "the FP32 forward pass must be captured in a CUDA graph"
    np.testing.assert_array_equal(first, eager)
    np.testing.assert_array_equal(replay, eager)
    cpu = engine.Engine(engine.build(graph, BuildConfig(max_batch=4))).create_context().run({"input": x})["logits"]
    assert _rel(replay, cpu) <= 1e-4, _rel(replay, cpu)


def test_fp32_with_tf32_and_fp16_plans_stay_channels_last():
    graph = zoo.get("resnet18", image_size=32)
    for config in (BuildConfig(max_batch=2, device="cuda", precision="fp16", timing_cache=None),
                   BuildConfig(max_batch=2, device="cuda", precision="fp32", tf32=True, timing_cache=None)):
        eng = engine.engine_for(engine.build(graph, config))
        ctx = eng.create_context()
        ctx.run({"input": np.zeros((2, 3, 32, 32), dtype=np.float32)})
        assert ctx.buckets[2].channels_last is True, config


def test_fp32_resnet50_batch_throughput_is_reported():
    """Not a pass/fail speed bar: prints the FP32 (no TF32) ResNet-50 time per batch of 64 at 224,
    for comparison with PyTorch's NCHW FP32 figure (72.5 ms per batch of 256 on an H100)."""
    config = BuildConfig(max_batch=64, device="cuda", precision="fp32", timing_cache=None)
    plan = engine.build(zoo.get("resnet50"), config)
    eng = engine.engine_for(plan)
    ctx = eng.create_context()
    x = np.random.default_rng(0).standard_normal((64, 3, 224, 224)).astype(np.float32)
    ctx.run({"input": x})
    ctx.run({"input": x})
    bucket = ctx.buckets[64]
    assert bucket.graph is not None and not bucket.host_layers
    start = time.perf_counter()
    for _ in range(5):
        with ctx.stream:
            ctx.execute(bucket)
    ctx.stream.synchronize()
    ms = (time.perf_counter() - start) / 5 * 1e3
    print(f"\nResNet-50 fp32 (no TF32) batch 64: {ms:.1f} ms per batch, {64 / ms * 1e3:.0f} images/s")
