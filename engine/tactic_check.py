"""A tuned GPU tactic checked against its layer's numpy kernel before the plan keeps it.

Tuning times a layer's tactics on the whole max-batch bucket, but numpy checks only the first
CHECK_IMAGES images of it: enough to catch a wrong kernel, and milliseconds on the host where the
whole batch would take the build minutes. Host code only: `to_host` copies a device array out, so
the CPU tests run it with numpy arrays standing in for device ones.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from engine.precision import relative_error

CHECK_IMAGES = 2
FP16_BOUND = 1e-2  # relative L2 of an FP16 (or TF32) layer against FP32 numpy
FP32_BOUND = 1e-4


def bound_for(output_dtypes: Sequence, allow_tf32: bool) -> float:
    """FP16 outputs or TF32 math round at about 1e-3 per layer; FP32 without TF32 agrees to ~1e-6."""
    if allow_tf32 or any(np.dtype(d) == np.float16 for d in output_dtypes):
        return FP16_BOUND
    return FP32_BOUND


def host_inputs(args: Sequence, is_activation: Sequence[bool], batch: int, to_host: Callable = np.asarray,
                images: int = CHECK_IMAGES) -> list:
    """A layer's inputs on the host as its numpy kernel takes them: weights whole, activations cut to
    their first `images` images where their first axis is the batch, float16 widened to float32.
    Take them before the GPU run that is checked, in case an output shares an input's memory."""
    host = []
    for value, activation in zip(args, is_activation):
        if value is None:
            host.append(None)
            continue
        if activation and value.shape and value.shape[0] == batch:
            value = value[:images]
        value = np.asarray(to_host(value))
        host.append(value.astype(np.float32) if value.dtype == np.float16 else value)
    return host


def numpy_error(kernel, attrs: dict, host_args: list, outputs: Sequence, to_host: Callable = np.asarray,
                images: int = CHECK_IMAGES) -> float:
    """The largest relative L2 error of a layer's `outputs` (device arrays, as the GPU just wrote
    them) over their first `images` images, against `kernel` (an OpKernel of the numpy registry)
    run on `host_args` (from host_inputs)."""
    if kernel.wants_num_outputs:
        attrs = dict(attrs, num_outputs=len(outputs))
    with np.errstate(all="ignore"):
        wanted = kernel.fn(*host_args, **attrs)
    wanted = wanted if isinstance(wanted, tuple) else (wanted,)
    errors = [relative_error(np.asarray(to_host(got[:images]), np.float32), np.asarray(want, np.float32))
              for got, want in zip(outputs, wanted) if got is not None]
    return max(errors, default=0.0)
