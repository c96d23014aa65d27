"""A tuned GPU tactic checked against its layer's numpy kernel before the plan keeps it.

Tuning times a layer's tactics on the whole max-batch bucket, but numpy checks only the first
CHECK_IMAGES images of it: enough to catch a wrong kernel, and milliseconds on the host where the
whole batch would take the build minutes. Host code only: `to_host` copies a device array out, so
the CPU tests run it with numpy arrays standing in for device ones.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np

from engine.errors import BuildError
from engine.precision import relative_error

log = logging.getLogger("batchscore.build")

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


def agreeing_tactic(runner, ranked: Sequence[str], layer: dict, io: tuple, weights: dict, batch: int, tf32: bool,
                    synchronize: Callable, to_host: Callable) -> tuple[str, float]:
    """The first of `ranked` (fastest first) whose output matches the layer's numpy kernel, and its
    error; a BuildError naming the layer where none does.

    runner: the layer's GPU kernel (select(index), tactic, a call runs it); io: the bucket's
    (attrs, input arrays as the kernel reads them, output arrays) for the layer; weights: the
    plan's host weights by name."""
    from engine.tune import tactic_index  # the tactic string's format is tune's
    from kernels.cpu import CPU_OPS

    attrs, in_arrays, out_arrays = io
    args = [weights[n] if n in weights else a for n, a in zip(layer["inputs"], in_arrays)]
    activation = [bool(n) and n not in weights for n in layer["inputs"]]
    kernel = CPU_OPS.by_key(layer["kernel"])
    bound = bound_for([o.dtype for o in out_arrays if o is not None], tf32)
    disagreeing = []
    for tactic in ranked:
        runner.select(tactic_index(tactic))
        host = host_inputs(args, activation, batch, to_host)
        runner()
        synchronize()
        error = numpy_error(kernel, attrs, host, out_arrays, to_host)
        if error <= bound:
            return tactic, error
        disagreeing.append(f"{tactic} {error:.1e}")
        log.warning("layer %s: tactic %s differs from the numpy kernel by %.1e (bound %.0e); trying the next",
                    layer["name"], runner.tactic, error, bound)
    raise BuildError(f"layer '{layer['name']}' ({layer['kind']}): no tactic matches the numpy kernel on the first "
                     f"{CHECK_IMAGES} images within {bound:.0e} (relative L2): {', '.join(disagreeing)}")
