"""Normalisations over the channel axis: BatchNormalization and InstanceNormalization.

Both fold their per-channel parameters into one scale and one shift, y = x * a + b, so the image
is read once and written once. Statistics and parameters are computed in float64 (they are small)
and the per-element work runs in the input's precision; float16 and bfloat16 images are computed
in float32 and rounded back.
"""

from __future__ import annotations

import numpy as np

from kernels.cpu._registry import op
from kernels.cpu.conv import compute_dtype
from kernels.registry import KernelError


def _channel_param(value, x, name: str, op_name: str, per_activation_ok: bool = False) -> np.ndarray:
    """A per-channel parameter (C,) reshaped to broadcast against x (N, C, *spatial).

    Before opset 9, BatchNormalization with spatial=0 takes per-activation parameters of shape
    (C, *spatial); those broadcast as they are.
    """
    value = np.asarray(value)
    channels = x.shape[1]
    if value.shape == (channels,):
        return value.astype(np.float64).reshape((channels,) + (1,) * (x.ndim - 2))
    if per_activation_ok and value.shape == x.shape[1:]:
        return value.astype(np.float64)
    raise KernelError(f"{op_name}: {name} has shape {value.shape}, expected ({channels},) for X {x.shape}")


def _affine(x, a, b) -> np.ndarray:
    """x * a + b in the compute precision of x, returned in x's dtype."""
    dtype = compute_dtype(x.dtype, "normalisation")
    y = np.multiply(x.astype(dtype, copy=False), a.astype(dtype))
    y += b.astype(dtype)
    return y.astype(x.dtype, copy=False)


def _check_image(x, op_name: str) -> None:
    if x.ndim < 2:
        raise KernelError(f"{op_name}: X must be (N, C, ...), got shape {x.shape}")


@op("BatchNormalization", since=1)
def batch_normalization(x, scale, b, mean, var, *, epsilon=1e-5, momentum=0.9, spatial=1, is_test=0,
                        consumed_inputs=None):
    """Inference form, y = (x - mean) / sqrt(var + epsilon) * scale + B, for opsets 1 to 13.

    is_test and the training outputs of these opsets are not supported: every runtime treats
    these nodes as inference, and only Y is returned. spatial=0 (per-activation statistics) is.
    """
    _check_image(x, "BatchNormalization")
    return _batch_norm_inference(x, scale, b, mean, var, epsilon)


@op("BatchNormalization", since=14)
def batch_normalization_14(x, scale, b, input_mean, input_var, *, epsilon=1e-5, momentum=0.9,
                           training_mode=0):
    """Opset 14+: with training_mode=1 the batch's own statistics normalise X, and the outputs
    running_mean / running_var are input * momentum + batch statistic * (1 - momentum), the
    variance being the population (biased) one. Otherwise it is the inference form and the two
    extra outputs just pass the inputs through.
    """
    _check_image(x, "BatchNormalization")
    if not training_mode:
        return _batch_norm_inference(x, scale, b, input_mean, input_var, epsilon), input_mean, input_var
    axes = (0,) + tuple(range(2, x.ndim))
    batch_mean = x.mean(axis=axes, dtype=np.float64)
    batch_var = x.var(axis=axes, dtype=np.float64)
    y = _batch_norm_inference(x, scale, b, batch_mean, batch_var, epsilon)
    running_mean = input_mean * momentum + batch_mean * (1 - momentum)
    running_var = input_var * momentum + batch_var * (1 - momentum)
    return y, running_mean.astype(input_mean.dtype), running_var.astype(input_var.dtype)


def _batch_norm_inference(x, scale, b, mean, var, epsilon) -> np.ndarray:
    scale = _channel_param(scale, x, "scale", "BatchNormalization", True)
    shift = _channel_param(b, x, "B", "BatchNormalization", True)
    mean = _channel_param(mean, x, "mean", "BatchNormalization", True)
    var = _channel_param(var, x, "var", "BatchNormalization", True)
    a = scale / np.sqrt(var + epsilon)
    return _affine(x, a, shift - mean * a)


@op("InstanceNormalization", since=1)
def instance_normalization(x, scale, b, *, epsilon=1e-5, consumed_inputs=None):
    """y = (x - mean) / sqrt(var + epsilon) * scale + B, statistics per (image, channel) over the
    spatial dims (population variance). Versions 1, 6 and 22 differ only in types.
    """
    _check_image(x, "InstanceNormalization")
    scale = _channel_param(scale, x, "scale", "InstanceNormalization")
    shift = _channel_param(b, x, "B", "InstanceNormalization")
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
    var = x.var(axis=axes, keepdims=True, dtype=np.float64)
    a = scale / np.sqrt(var + epsilon)
    return _affine(x, a, shift - mean * a)
