"""A GPU bucket reading an input in place from another array (engine.gpu_runtime: prepare_input,
execute_from): the layers that read the input are bound to the array, the rest run as one shared
graph, and the scores are those of the array's rows, whatever the input binding holds."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.builder import BuildConfig
from engine.network import Network

pytestmark = pytest.mark.gpu

SIZE, CLASSES, BATCH = 8, 5, 4


def two_readers() -> Network:
    """The input read by two layers, a conv and a flatten (a copy in channels-last memory), whose
    results meet at the end: the head must rebind both."""
    rng = np.random.default_rng(0)
    net = Network("two_readers")
    x = net.input("input", [None, 3, SIZE, SIZE])
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    y = net.relu(net.conv(x, w, np.zeros(8, np.float32), pad=1))
    y = net.linear(net.flatten(net.global_avg_pool(y)), rng.standard_normal((CLASSES, 8)).astype(np.float32))
    z = net.linear(net.flatten(x), rng.standard_normal((CLASSES, 3 * SIZE * SIZE)).astype(np.float32) * 0.1)
    net.output(net.add(y, z), "logits")
    return net


@pytest.fixture(scope="module")
def fp16_engine(tmp_path_factory):
    plan = engine.build(two_readers().graph(), BuildConfig(max_batch=BATCH, device="cuda", precision="fp16"))
    return engine.load(plan.save(tmp_path_factory.mktemp("heads") / "two_readers.plan"))


def _ready_context(eng):
    """A context whose bucket has run eagerly and captured its graph, as GpuRunner's warm-up does."""
    context = eng.create_context()
    bucket = context.bucket(BATCH)
    with context.stream:
        bucket.bound["input"][...] = 0
        context.execute(bucket)
        context.execute(bucket)
    context.stream.synchronize()
    return context, bucket


def _like(cp, binding, rows: np.ndarray):
    """A fresh device array with the binding's shape, strides and dtype, holding `rows` (NCHW)."""
    memory = cp.empty(binding.size, binding.dtype)
    array = cp.ndarray(binding.shape, binding.dtype, memptr=memory.data, strides=binding.strides)
    array[...] = cp.asarray(rows.astype(binding.dtype))
    return array


def test_each_prepared_array_is_read_in_place_whatever_the_binding_holds(fp16_engine):
    import cupy as cp

    context, bucket = _ready_context(fp16_engine)
    binding = bucket.bound["input"]
    rng = np.random.default_rng(1)
    rows = [rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float16) for _ in range(3)]
    slots = [_like(cp, binding, r) for r in rows]
    for slot in slots:
        assert context.prepare_input(bucket, "input", slot) is None
    assert len(bucket.heads) == 3 and bucket.tail is not None
    length = bucket.tail[0]
    readers = {name for name, _ in bucket.runners[:length]}
    assert 2 <= length < len(bucket.runners), readers  # the conv and the flatten's copy, at least
    binding[...] = 7.0  # what the binding holds must not matter
    reference = fp16_engine.create_context()
    between = []
    for rows_k, slot in reversed(list(zip(rows, slots))):
        context.execute_from(bucket, "input", slot, between=lambda k=len(between): between.append(k))
        got = cp.asnumpy(bucket.bound["logits"], stream=context.stream)
        context.stream.synchronize()
        want = reference.run({"input": rows_k.astype(np.float32)})["logits"]
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)
    assert between == [0, 1, 2]
    assert float(cp.abs(binding.astype(cp.float32) - 7.0).max()) == 0.0  # nothing wrote the binding


def test_an_array_of_another_layout_is_refused_with_the_reason(fp16_engine):
    import cupy as cp

    context, bucket = _ready_context(fp16_engine)
    binding = bucket.bound["input"]
    nchw = cp.zeros(binding.shape, binding.dtype)  # the binding is channels-last
    why = context.prepare_input(bucket, "input", nchw)
    assert why is not None and "strides" in why and str(tuple(binding.strides)) in why
    assert context.prepare_input(bucket, "image", _like(cp, binding, np.zeros(binding.shape))) == \
        "the engine has no input 'image'"
    with pytest.raises(ValueError, match="prepare_input first"):
        context.execute_from(bucket, "input", nchw)


def test_a_bucket_that_has_not_captured_its_graph_is_refused(fp16_engine):
    import cupy as cp

    context = fp16_engine.create_context()
    bucket = context.bucket(BATCH)
    binding = bucket.bound["input"]
    assert context.prepare_input(bucket, "input", _like(cp, binding, np.zeros(binding.shape))) == \
        "the bucket has not run yet"
    eager = fp16_engine.create_context(use_graphs=False)
    bucket = eager.bucket(BATCH)
    eager.execute(bucket)
    assert eager.prepare_input(bucket, "input", _like(cp, binding, np.zeros(binding.shape))) == \
        "the bucket runs without a CUDA graph"
