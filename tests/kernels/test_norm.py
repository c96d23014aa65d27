"""BatchNormalization and InstanceNormalization against per-channel loop references."""

import numpy as np
import pytest

from kernels.cpu import CPU_OPS
from kernels.cpu.norm import batch_normalization, batch_normalization_14, instance_normalization
from kernels.registry import KernelError

RNG = np.random.default_rng(0)


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def bn_params(channels, dtype=np.float32):
    scale, bias, mean = rand(channels, dtype=dtype), rand(channels, dtype=dtype), rand(channels, dtype=dtype)
    var = RNG.uniform(0.5, 2.0, channels).astype(dtype)
    return scale, bias, mean, var


def naive_bn(x, scale, bias, mean, var, eps):
    y = np.zeros(x.shape, np.float64)
    for c in range(x.shape[1]):
        y[:, c] = (x[:, c].astype(np.float64) - mean[c]) / np.sqrt(float(var[c]) + eps) * scale[c] + bias[c]
    return y


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (2, 3, 4, 5), (1, 2, 2, 3, 2)])
@pytest.mark.parametrize("fn", [batch_normalization, batch_normalization_14])
def test_batch_norm_inference_matches_naive(shape, fn):
    x = rand(*shape)
    params = bn_params(shape[1])
    result = fn(x, *params, epsilon=1e-3)
    y = result[0] if isinstance(result, tuple) else result
    assert y.dtype == np.float32 and y.shape == shape
    np.testing.assert_allclose(y, naive_bn(x, *params, 1e-3), rtol=1e-5, atol=1e-5)


def test_batch_norm_14_inference_passes_statistics_through():
    x = rand(2, 3, 4)
    scale, bias, mean, var = bn_params(3)
    _, out_mean, out_var = batch_normalization_14(x, scale, bias, mean, var)
    np.testing.assert_array_equal(out_mean, mean)
    np.testing.assert_array_equal(out_var, var)


def test_batch_norm_spatial_0_takes_per_activation_parameters():
    x = rand(2, 3, 4)
    scale, bias, mean = rand(3, 4), rand(3, 4), rand(3, 4)
    var = RNG.uniform(0.5, 2.0, (3, 4)).astype(np.float32)
    y = batch_normalization(x, scale, bias, mean, var, spatial=0)
    expected = (x.astype(np.float64) - mean) / np.sqrt(var.astype(np.float64) + 1e-5) * scale + bias
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_batch_norm_training_mode():
    x = rand(4, 3, 5, 2)
    scale, bias, mean, var = bn_params(3)
    y, running_mean, running_var = batch_normalization_14(x, scale, bias, mean, var, epsilon=1e-2, momentum=0.8,
                                                          training_mode=1)
    batch_mean = np.array([x[:, c].astype(np.float64).mean() for c in range(3)])
    batch_var = np.array([x[:, c].astype(np.float64).var() for c in range(3)])  # population variance
    np.testing.assert_allclose(y, naive_bn(x, scale, bias, batch_mean, batch_var, 1e-2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(running_mean, mean * 0.8 + batch_mean * 0.2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(running_var, var * 0.8 + batch_var * 0.2, rtol=1e-5, atol=1e-6)
    assert y.dtype == running_mean.dtype == running_var.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_batch_norm_keeps_dtype(dtype):
    x = rand(2, 3, 4, dtype=dtype)
    params = bn_params(3, dtype)
    y = batch_normalization(x, *params)
    assert y.dtype == dtype
    np.testing.assert_allclose(y.astype(np.float64), naive_bn(x, *params, 1e-5),
                               rtol=1e-2 if dtype == np.float16 else 1e-12, atol=1e-2 if dtype == np.float16 else 1e-12)


def test_batch_norm_float16_image_with_float32_parameters():
    # Opset 15 lets the parameters have another float type than X; Y follows X.
    x = rand(2, 3, 4, dtype=np.float16)
    y, _, _ = batch_normalization_14(x, *bn_params(3, np.float32))
    assert y.dtype == np.float16


def test_batch_norm_rejects_bad_parameter_shape():
    x = rand(2, 3, 4)
    scale, bias, mean, var = bn_params(3)
    with pytest.raises(KernelError, match="scale"):
        batch_normalization(x, rand(4), bias, mean, var)
    with pytest.raises(KernelError, match="var"):
        batch_normalization_14(x, scale, bias, mean, rand(2))
    with pytest.raises(KernelError, match=r"\(N, C"):
        batch_normalization(rand(3), scale, bias, mean, var)


# --- InstanceNormalization ---------------------------------------------------------------------------


def naive_instance_norm(x, scale, bias, eps):
    y = np.zeros(x.shape, np.float64)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            values = x[n, c].astype(np.float64)
            y[n, c] = (values - values.mean()) / np.sqrt(values.var() + eps) * scale[c] + bias[c]
    return y


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5), (1, 2, 2, 3, 2)])
def test_instance_norm_matches_naive(shape):
    x = rand(*shape) * 3 + 1
    scale, bias = rand(shape[1]), rand(shape[1])
    y = instance_normalization(x, scale, bias, epsilon=1e-3)
    assert y.dtype == np.float32 and y.shape == shape
    np.testing.assert_allclose(y, naive_instance_norm(x, scale, bias, 1e-3), rtol=1e-5, atol=1e-5)


def test_instance_norm_float16():
    x = rand(2, 3, 8, 8, dtype=np.float16)
    scale, bias = rand(3, dtype=np.float16), rand(3, dtype=np.float16)
    y = instance_normalization(x, scale, bias)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), naive_instance_norm(x, scale, bias, 1e-5), rtol=1e-2, atol=1e-2)


def test_instance_norm_rejects_bad_parameters():
    x = rand(2, 3, 4)
    with pytest.raises(KernelError, match="scale"):
        instance_normalization(x, rand(2), rand(3))
    with pytest.raises(KernelError, match="B"):
        instance_normalization(x, rand(3), rand(3, 4))  # no per-activation form here


def test_registered_versions():
    assert CPU_OPS.versions("BatchNormalization") == [1, 14]
    assert CPU_OPS.lookup("BatchNormalization", 9).fn is batch_normalization
    assert CPU_OPS.lookup("BatchNormalization", 15).fn is batch_normalization_14
    assert CPU_OPS.versions("InstanceNormalization") == [1]
