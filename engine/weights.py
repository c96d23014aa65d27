"""Weight math for the optimization passes: small pure functions of numpy arrays.

Everything here computes in float64 and casts the result back to the dtype of the weight it
replaces, so float32 weights stay float32 and the folded layer rounds once, where the original
network rounded after every layer.

The common form is a per-output-channel affine map y -> y * scale + shift applied to a layer's
output. BatchNormalization in inference form is such a map (`batch_norm_affine`), and so are a
Mul / Add by a constant that broadcasts only along the channel axis. Folding the map into the
layer that produced y rewrites that layer's weights and bias:

- Conv, W (M, C/group, k...): W'[m] = W[m] * scale[m], b' = b * scale + shift.
- ConvTranspose, W (C, M/group, k...): output channel m = g * M/group + j is column j of group g's
  block of rows, so W viewed as (group, C/group, M/group, k...) is scaled along its third axis.
- Gemm, Y = alpha * A' B' + beta * C with B' (K, N): column n of B' is scaled, and the new
  C' = beta * C * scale + shift is meant for beta = 1.

A missing bias counts as zeros.
"""

from __future__ import annotations

import numpy as np


def batch_norm_affine(gamma, beta, mean, var, eps: float, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """BatchNormalization (inference) as y = x * scale + shift, per channel.

    scale = gamma / sqrt(var + eps), shift = beta - mean * scale; computed in float64 and returned
    in `dtype` (default: gamma's dtype; pass np.float64 to keep full precision for further folding).
    """
    target = np.dtype(dtype) if dtype is not None else np.asarray(gamma).dtype
    gamma, beta, mean, var = (np.asarray(a, dtype=np.float64) for a in (gamma, beta, mean, var))
    shapes = {a.shape for a in (gamma, beta, mean, var)}
    if len(shapes) != 1 or gamma.ndim != 1:
        raise ValueError(f"batch-norm parameters must be 1-D of one length, got shapes {sorted(shapes)}")
    scale = gamma / np.sqrt(var + float(eps))
    shift = beta - mean * scale
    return _cast(scale, target), _cast(shift, target)


def _cast(array: np.ndarray, dtype) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(array).astype(dtype, copy=False))


def _channel_vector(values, channels: int, what: str) -> np.ndarray:
    """A scale or shift as a float64 vector of length `channels` (a scalar or size-1 broadcasts)."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 1:
        return np.full(channels, array[0])
    if array.size != channels:
        raise ValueError(f"{what} has {array.size} values for {channels} output channels")
    return array


def fold_affine_into_conv(w: np.ndarray, b: np.ndarray | None, scale=None, shift=None) -> tuple[np.ndarray, np.ndarray]:
    """Conv weights W (M, C/group, k...) and bias b (M,) or None, followed by y * scale + shift per
    output channel (either may be None: 1 and 0), as one conv's (W', b'), in W's dtype."""
    w = np.asarray(w)
    if w.ndim < 3:
        raise ValueError(f"conv weight must be (M, C/group, k...), got shape {w.shape}")
    m = w.shape[0]
    s = np.ones(m) if scale is None else _channel_vector(scale, m, "scale")
    t = np.zeros(m) if shift is None else _channel_vector(shift, m, "shift")
    bias = np.zeros(m) if b is None else _channel_vector(b, m, "conv bias")
    new_w = w.astype(np.float64) * s.reshape((m,) + (1,) * (w.ndim - 1))
    return _cast(new_w, w.dtype), _cast(bias * s + t, w.dtype)


def fold_affine_into_conv_transpose(w: np.ndarray, b: np.ndarray | None, scale=None, shift=None, group: int = 1
                                    ) -> tuple[np.ndarray, np.ndarray]:
    """As `fold_affine_into_conv` for ConvTranspose, whose W is (C, M/group, k...)."""
    w = np.asarray(w)
    if w.ndim < 3:
        raise ValueError(f"conv-transpose weight must be (C, M/group, k...), got shape {w.shape}")
    if group < 1 or w.shape[0] % group:
        raise ValueError(f"conv-transpose weight {w.shape} does not split into {group} groups")
    per_group = w.shape[1]
    m = per_group * group
    s = np.ones(m) if scale is None else _channel_vector(scale, m, "scale")
    t = np.zeros(m) if shift is None else _channel_vector(shift, m, "shift")
    bias = np.zeros(m) if b is None else _channel_vector(b, m, "conv-transpose bias")
    grouped = w.astype(np.float64).reshape((group, w.shape[0] // group) + w.shape[1:])
    grouped = grouped * s.reshape((group, 1, per_group) + (1,) * (w.ndim - 2))
    return _cast(grouped.reshape(w.shape), w.dtype), _cast(bias * s + t, w.dtype)


def fold_affine_into_gemm(b: np.ndarray, c: np.ndarray | None, scale=None, shift=None, *, trans_b: bool = False,
                          beta: float = 1.0) -> tuple[np.ndarray, np.ndarray | None]:
    """Gemm's B ((K, N), or (N, K) with trans_b) and C (anything that broadcasts to (M, N), or None),
    followed by Y * scale + shift per column n. Returns (B', C'): C' = beta * C * scale + shift is
    meant for beta = 1, and is None only when C is None and there is no shift."""
    b = np.asarray(b)
    if b.ndim != 2:
        raise ValueError(f"Gemm's B must be 2-D, got shape {b.shape}")
    n = b.shape[0] if trans_b else b.shape[1]
    s = np.ones(n) if scale is None else _channel_vector(scale, n, "scale")
    new_b = b.astype(np.float64) * (s[:, None] if trans_b else s[None, :])
    new_c = None
    if c is not None:
        c = np.asarray(c)
        if c.ndim > 2:
            raise ValueError(f"Gemm's C must have rank <= 2, got shape {c.shape}")
        new_c = float(beta) * c.astype(np.float64) * s
    if shift is not None:
        t = _channel_vector(shift, n, "shift")
        new_c = t if new_c is None else new_c + t
    return _cast(new_b, b.dtype), None if new_c is None else _cast(new_c, b.dtype if c is None else c.dtype)


def fold_batch_norm_into_conv(w, b, gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Conv (W, b) followed by BatchNormalization as one conv's (W', b')."""
    scale, shift = batch_norm_affine(gamma, beta, mean, var, eps, dtype=np.float64)
    return fold_affine_into_conv(w, b, scale, shift)


def fold_batch_norm_into_conv_transpose(w, b, gamma, beta, mean, var, eps: float, group: int = 1
                                        ) -> tuple[np.ndarray, np.ndarray]:
    """ConvTranspose (W, b) followed by BatchNormalization as one conv-transpose's (W', b')."""
    scale, shift = batch_norm_affine(gamma, beta, mean, var, eps, dtype=np.float64)
    return fold_affine_into_conv_transpose(w, b, scale, shift, group)


def fold_batch_norm_into_gemm(b, c, gamma, beta, mean, var, eps: float, *, trans_b: bool = False,
                              gemm_beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Gemm (B, C) followed by BatchNormalization over its output columns as (B', C'), C' for beta = 1."""
    scale, shift = batch_norm_affine(gamma, beta, mean, var, eps, dtype=np.float64)
    return fold_affine_into_gemm(b, c, scale, shift, trans_b=trans_b, beta=gemm_beta)
