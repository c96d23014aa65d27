"""MaxPool, AveragePool, global pools and LRN against naive loop references (and onnxruntime)."""

import itertools
import math

import numpy as np
import pytest

from kernels.cpu import CPU_OPS
from kernels.cpu.pool import average_pool, global_average_pool, global_max_pool, lrn, max_pool
from kernels.registry import KernelError

RNG = np.random.default_rng(0)


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def naive_pool(x, kernel, strides=None, pads=None, dilations=None, ceil_mode=False, mode="max",
               count_include_pad=False, storage_order=0):
    """Loop over outputs; each gathers its window's in-bounds positions. Returns (y, indices)."""
    spatial = x.shape[2:]
    nd = len(spatial)
    strides = strides or [1] * nd
    dilations = dilations or [1] * nd
    pads = pads or [0] * (2 * nd)
    out_shape = []
    for i in range(nd):
        room = spatial[i] + pads[i] + pads[i + nd] - (kernel[i] - 1) * dilations[i] - 1
        o = (math.ceil(room / strides[i]) if ceil_mode else room // strides[i]) + 1
        if ceil_mode and (o - 1) * strides[i] >= spatial[i] + pads[i]:
            o -= 1
        out_shape.append(o)
    y = np.zeros(x.shape[:2] + tuple(out_shape), np.float64)
    indices = np.zeros(y.shape, np.int64)
    plane = math.prod(spatial)
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for pos in itertools.product(*(range(o) for o in out_shape)):
            values, where, padded_taps = [], [], 0
            for tap in itertools.product(*(range(k) for k in kernel)):
                src = [pos[i] * strides[i] + tap[i] * dilations[i] - pads[i] for i in range(nd)]
                if all(0 <= src[i] < spatial[i] for i in range(nd)):
                    values.append(float(x[(n, c) + tuple(src)]))
                    where.append(src)
                elif all(-pads[i] <= src[i] < spatial[i] + pads[i + nd] for i in range(nd)):
                    padded_taps += 1
            if mode == "max":
                best = int(np.argmax(values))  # first maximum
                y[(n, c) + pos] = values[best]
                src = where[best]
                if storage_order == 0:
                    offset = sum(src[i] * math.prod(spatial[i + 1:]) for i in range(nd))
                else:
                    offset = sum(src[i] * math.prod(spatial[:i]) for i in range(nd))
                indices[(n, c) + pos] = (n * x.shape[1] + c) * plane + offset
            else:
                count = len(values) + (padded_taps if count_include_pad else 0)
                y[(n, c) + pos] = sum(values) / count
    return y, indices


POOL_CASES = [
    ((2, 2, 7), dict(kernel_shape=[3], strides=[2], pads=[1, 1])),  # 1-D
    ((1, 2, 6, 7), dict(kernel_shape=[3, 2])),
    ((2, 1, 7, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),  # ResNet stem
    ((1, 2, 6, 5), dict(kernel_shape=[2, 3], strides=[2, 1], pads=[0, 2, 1, 1])),  # asymmetric pads
    ((1, 1, 8, 9), dict(kernel_shape=[3, 2], dilations=[2, 3], pads=[1, 2, 2, 0])),
    ((1, 2, 7, 6), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ((1, 1, 5, 5), dict(kernel_shape=[3, 3], strides=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1)),  # last window dropped
    ((1, 2, 3, 4, 5), dict(kernel_shape=[2, 2, 3], strides=[1, 2, 2], pads=[0, 1, 1, 1, 0, 1])),  # 3-D
]


def _naive_kwargs(kw):
    return dict(strides=kw.get("strides"), pads=kw.get("pads"), dilations=kw.get("dilations"),
                ceil_mode=bool(kw.get("ceil_mode", 0)))


@pytest.mark.parametrize("shape, kwargs", POOL_CASES)
def test_max_pool_matches_naive(shape, kwargs):
    x = rand(*shape)
    expected, expected_indices = naive_pool(x, kwargs["kernel_shape"], **_naive_kwargs(kwargs))
    y = max_pool(x, **kwargs)
    assert y.dtype == np.float32 and y.shape == expected.shape
    np.testing.assert_array_equal(y, expected.astype(np.float32))
    y2, indices = max_pool(x, num_outputs=2, **kwargs)
    np.testing.assert_array_equal(y2, y)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, expected_indices)


@pytest.mark.parametrize("shape, kwargs", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_matches_naive(shape, kwargs, count_include_pad):
    x = rand(*shape)
    expected, _ = naive_pool(x, kwargs["kernel_shape"], mode="avg", count_include_pad=bool(count_include_pad),
                             **_naive_kwargs(kwargs))
    y = average_pool(x, count_include_pad=count_include_pad, **kwargs)
    assert y.dtype == np.float32 and y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_max_pool_indices_storage_order_and_ties():
    x = rand(2, 3, 5, 4)
    expected, expected_indices = naive_pool(x, [2, 3], strides=[2, 1], storage_order=1)
    _, indices = max_pool(x, kernel_shape=[2, 3], strides=[2, 1], storage_order=1, num_outputs=2)
    np.testing.assert_array_equal(indices, expected_indices)
    # Ties go to the first element of the window in row-major order.
    flat = np.ones((1, 1, 2, 2), np.float32)
    _, indices = max_pool(flat, kernel_shape=[2, 2], num_outputs=2)
    assert indices.item() == 0


@pytest.mark.parametrize("auto_pad, begin, end", [("SAME_UPPER", 0, 1), ("SAME_LOWER", 1, 0)])
def test_pools_auto_pad_same(auto_pad, begin, end):
    # Input 6, kernel 3, stride 2: 3 outputs need (3 - 1) * 2 + 3 - 6 = 1 pad.
    x = rand(1, 2, 6, 6)
    y = max_pool(x, kernel_shape=[3, 3], strides=[2, 2], auto_pad=auto_pad)
    expected, _ = naive_pool(x, [3, 3], strides=[2, 2], pads=[begin, begin, end, end])
    assert y.shape == (1, 2, 3, 3)
    np.testing.assert_array_equal(y, expected.astype(np.float32))
    # Auto padding counts as padding for count_include_pad.
    avg = average_pool(x, kernel_shape=[3, 3], strides=[2, 2], auto_pad=auto_pad, count_include_pad=1)
    expected, _ = naive_pool(x, [3, 3], strides=[2, 2], pads=[begin, begin, end, end], mode="avg", count_include_pad=True)
    np.testing.assert_allclose(avg, expected, rtol=1e-5, atol=1e-6)


def test_pools_auto_pad_valid():
    x = rand(1, 1, 7, 7)
    assert max_pool(x, kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID", pads=[1, 1, 1, 1]).shape == (1, 1, 3, 3)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_max_pool_integers(dtype):
    info = np.iinfo(dtype)
    x = RNG.integers(info.min, info.max, (1, 2, 5, 5), endpoint=True).astype(dtype)
    x[0, 0, 0, 0] = info.min
    y = max_pool(x, kernel_shape=[2, 2], pads=[1, 1, 1, 1])
    expected, _ = naive_pool(x, [2, 2], pads=[1, 1, 1, 1])
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, expected.astype(dtype))


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_pools_keep_float_dtype(dtype):
    x = rand(1, 2, 5, 5, dtype=dtype)
    assert max_pool(x, kernel_shape=[2, 2]).dtype == dtype
    y = average_pool(x, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    expected, _ = naive_pool(x, [3, 3], pads=[1, 1, 1, 1], mode="avg")
    assert y.dtype == dtype
    np.testing.assert_allclose(y.astype(np.float64), expected, rtol=1e-2 if dtype == np.float16 else 1e-12, atol=1e-3)


@pytest.mark.parametrize(
    "shape, kwargs, message",
    [
        ((1, 1, 4, 4), dict(), "kernel_shape"),
        ((1, 1, 4, 4), dict(kernel_shape=[2]), "kernel_shape"),
        ((4, 4), dict(kernel_shape=[2, 2]), "spatial"),
        ((1, 1, 2, 2), dict(kernel_shape=[3, 3]), "does not fit"),
        ((1, 1, 4, 4), dict(kernel_shape=[2, 2], pads=[1, 1, 1]), "pads"),
        ((1, 1, 4, 4), dict(kernel_shape=[2, 2], dilations=[0, 1]), "dilations"),
    ],
)
@pytest.mark.parametrize("fn", [max_pool, average_pool])
def test_pools_reject_bad_input(fn, shape, kwargs, message):
    with pytest.raises(KernelError, match=message):
        fn(rand(*shape), **kwargs)


def test_pools_against_onnxruntime():
    """A second, independent oracle for the conventions (ceil_mode with padding, count_include_pad)."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    x = rand(2, 3, 9, 8)
    configs = [
        ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
        ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1)),
        ("AveragePool", dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 1, 1], ceil_mode=1, count_include_pad=0)),
        ("AveragePool", dict(kernel_shape=[2, 3], strides=[1, 2], dilations=[2, 2], pads=[1, 1, 0, 1])),
    ]
    for op_type, kwargs in configs:
        node = helper.make_node(op_type, ["x"], ["y"], **kwargs)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
        model.ir_version = 9
        expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        got = (max_pool if op_type == "MaxPool" else average_pool)(x, **kwargs)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"{op_type} {kwargs}")


# --- global pools ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 6), (2, 1, 2, 3, 4)])
def test_global_pools(shape):
    x = rand(*shape)
    axes = tuple(range(2, len(shape)))
    avg = global_average_pool(x)
    mx = global_max_pool(x)
    assert avg.shape == mx.shape == shape[:2] + (1,) * (len(shape) - 2)
    assert avg.dtype == mx.dtype == np.float32
    for n, c in itertools.product(range(shape[0]), range(shape[1])):
        values = x[n, c].astype(np.float64).ravel()
        assert abs(avg[n, c].item() - values.sum() / values.size) < 1e-5
        assert mx[n, c].item() == values.max()
    np.testing.assert_allclose(avg, x.mean(axis=axes, keepdims=True), rtol=1e-6)


def test_global_average_pool_float16_accumulates_wide():
    x = np.full((1, 1, 64, 64), 1000.0, np.float16)  # a float16 running sum would overflow
    y = global_average_pool(x)
    assert y.dtype == np.float16 and y.item() == 1000.0


def test_global_pools_reject_flat_input():
    for fn in (global_average_pool, global_max_pool):
        with pytest.raises(KernelError, match="spatial"):
            fn(rand(2, 3))


# --- LRN ---------------------------------------------------------------------------------------------


def naive_lrn(x, size, alpha, beta, bias):
    y = np.zeros(x.shape, np.float64)
    channels = x.shape[1]
    for c in range(channels):
        lo, hi = max(0, c - (size - 1) // 2), min(channels - 1, c + math.ceil((size - 1) / 2))
        square_sum = (x[:, lo:hi + 1].astype(np.float64) ** 2).sum(axis=1)
        y[:, c] = x[:, c] / (bias + alpha / size * square_sum) ** beta
    return y


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_lrn_matches_naive(size):
    x = rand(2, 6, 3, 4)
    got = lrn(x, size=size, alpha=0.5, beta=0.6, bias=2.0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, naive_lrn(x, size, 0.5, 0.6, 2.0), rtol=1e-5, atol=1e-6)


def test_lrn_defaults_and_dtype():
    x = rand(1, 4, 2, 2, dtype=np.float16)
    got = lrn(x, size=3)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, naive_lrn(x, 3, 1e-4, 0.75, 1.0), rtol=2e-3, atol=1e-3)


def test_lrn_requires_size():
    with pytest.raises(KernelError, match="size"):
        lrn(rand(1, 3, 2, 2))


def test_registered_versions():
    assert CPU_OPS.versions("MaxPool") == [1]
    assert CPU_OPS.lookup("MaxPool", 12).wants_num_outputs
    for name in ("AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LRN"):
        assert CPU_OPS.versions(name) == [1]


def test_pools_bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    x = rand(1, 2, 4, 4).astype(bf16)
    y, indices = max_pool(x, kernel_shape=[2, 2], num_outputs=2)
    expected, expected_indices = naive_pool(x.astype(np.float32), [2, 2])
    assert y.dtype == bf16
    np.testing.assert_array_equal(y.astype(np.float32), expected.astype(np.float32))
    np.testing.assert_array_equal(indices, expected_indices)
    assert average_pool(x, kernel_shape=[2, 2]).dtype == bf16
