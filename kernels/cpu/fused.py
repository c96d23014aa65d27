"""Fused layers (domain "batchscore", version 1): what the fusion passes turn chains of ONNX ops into.

FusedConv(X, W, B?, Z?) -> Y, or one Y per entry of `output_splits`
    Y = act(conv(X, W) + B + Z). Attributes: every ONNX Conv attribute (auto_pad, dilations, group,
    kernel_shape, pads, strides), plus
      activation         "" (none) or an activation of kernels/cpu/activations.py
      activation_params  its params (LeakyRelu [alpha], Clip [min, max], HardSigmoid [alpha, beta],
                         Elu [alpha], others [])
      residual           1: input 3 is Z, added after the bias and before the activation
      output_splits      [c1, c2, ...]: output channels split into consecutive groups, one output
                         each, returned as views of one result (horizontally fused siblings)
      split_activations  [[activation, params], ...] per split, used instead of `activation`
    The convolution is kernels/cpu/conv.py's; bias, residual and activation are added in place
    on its result.

FusedGemm(A, B, C?) -> Y
    Y = act(alpha * A' @ B' + beta * C): ONNX Gemm's attributes (alpha, beta, transA, transB) plus
    `activation` and `activation_params`. MatMul(A, B) + Add(bias) is transB=0, C=bias.

ElementwiseChain(X, *operands) -> Y
    `steps`: [[kernel_key, operand_inputs, attrs], ...], each an ONNX element-wise op applied to the
    running value: kernel_key names a kernel of the numpy registry ("Mul-7"), operand_inputs gives
    one int per input of that op (-1: the running value; k >= 1: input k of the fused node) and
    attrs are the op's attributes. Every step must keep X's shape.

Every kernel takes an optional keyword `out=`: an array of the output's shape and dtype (possibly a
strided view into the runtime's activation arena) to write the result into; it is then returned.
For FusedConv with output_splits, `out` is either one array of the full (unsplit) shape or a
sequence of one array (or None) per split. `out` must not overlap any input.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import numpy as np

from kernels.cpu import conv as conv_ops
from kernels.cpu import elementwise as onnx_ops
from kernels.cpu._registry import CPU_OPS, op
from kernels.cpu.activations import apply_activation
from kernels.registry import KernelError

DOMAIN = "batchscore"
_FAST_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

# When conv.py's kernel can write into a given array, FusedConv hands it the output buffer.
_CONV_TAKES_OUT = "out" in inspect.signature(conv_ops.conv).parameters


# ----------------------------------------------------------------------------------------------
# FusedConv


@op("FusedConv", since=1, domain=DOMAIN)
def fused_conv(x, w, b=None, z=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
               pads=None, strides=None, activation="", activation_params=(), residual=0, output_splits=(),
               split_activations=(), out=None):
    """act(conv(X, W) + B + Z), optionally split along the channels into several outputs."""
    if residual and z is None:
        raise KernelError("FusedConv: residual=1 but input Z (index 3) is missing")
    if z is not None and not residual:
        raise KernelError("FusedConv: input Z (index 3) is given but residual=0")
    splits = [int(s) for s in (output_splits or ())]
    m = w.shape[0] if w.ndim >= 1 else 0
    if splits and (sum(splits) != m or any(s < 1 for s in splits)):
        raise KernelError(f"FusedConv: output_splits {splits} do not add up to W's {m} output channels")
    acts = _split_activations(splits, activation, activation_params, split_activations)
    whole_out, split_outs = _out_arrays(out, splits)

    conv_args = dict(auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape, pads=pads,
                     strides=strides)
    if _CONV_TAKES_OUT and whole_out is not None:
        y = conv_ops.conv(x, w, b, **conv_args, out=whole_out)
    else:
        y = conv_ops.conv(x, w, b, **conv_args)  # the bias is added in place, inside the conv
    if whole_out is not None and (whole_out.shape != y.shape or whole_out.dtype != y.dtype):
        raise KernelError(f"FusedConv: out is {whole_out.dtype} {whole_out.shape}, the result is {y.dtype} {y.shape}")

    if residual:
        if z.dtype != y.dtype or z.shape != y.shape:
            raise KernelError(f"FusedConv: residual Z {z.dtype} {z.shape} does not match the conv output "
                              f"{y.dtype} {y.shape}")
        target = whole_out if whole_out is not None else y
        np.add(y, z, out=target)
        y = target

    if not splits:
        name, params = acts[0]
        return apply_activation(y, name, params, out=whole_out)
    results = []
    start = 0
    for i, (count, (name, params)) in enumerate(zip(splits, acts)):
        part = y[:, start:start + count]
        target = split_outs[i] if split_outs else (None if whole_out is None else whole_out[:, start:start + count])
        results.append(apply_activation(part, name, params, out=target))
        start += count
    return tuple(results)


def _split_activations(splits: list[int], activation, activation_params, split_activations) -> list[tuple[str, list]]:
    """One (activation, params) per output: per split when split_activations is set."""
    if not splits:
        if split_activations:
            raise KernelError("FusedConv: split_activations needs output_splits")
        return [(activation or "", list(activation_params or ()))]
    if not split_activations:
        return [(activation or "", list(activation_params or ()))] * len(splits)
    if len(split_activations) != len(splits):
        raise KernelError(f"FusedConv: {len(split_activations)} split_activations for {len(splits)} output_splits")
    acts = []
    for entry in split_activations:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise KernelError(f"FusedConv: a split activation must be [name, params], got {entry!r}")
        acts.append((entry[0] or "", list(entry[1] or ())))
    return acts


def _out_arrays(out, splits: list[int]) -> tuple[np.ndarray | None, list | None]:
    """(one full-shape output array, or per-split output arrays), from the `out` argument."""
    if out is None or isinstance(out, np.ndarray):
        return out, None
    if not splits:
        raise KernelError("FusedConv: out is a sequence but the layer has one output")
    if len(out) != len(splits):
        raise KernelError(f"FusedConv: {len(out)} out arrays for {len(splits)} output_splits")
    return None, list(out)


# ----------------------------------------------------------------------------------------------
# FusedGemm


@op("FusedGemm", since=1, domain=DOMAIN)
def fused_gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, activation="", activation_params=(),
               out=None):
    """act(alpha * A' @ B' + beta * C): one matmul, then scale, bias and activation in place."""
    if a.ndim != 2 or b.ndim != 2:
        raise KernelError(f"FusedGemm needs 2-D A and B, got A {a.shape} and B {b.shape}")
    if a.dtype != b.dtype or not (a.dtype.kind == "f" or a.dtype.name.startswith(("bfloat", "float"))):
        raise KernelError(f"FusedGemm: A and B must share one floating-point type, got {a.dtype} and {b.dtype}")
    a_op = a.T if transA else a
    b_op = b.T if transB else b
    if a_op.shape[1] != b_op.shape[0]:
        raise KernelError(f"FusedGemm: inner dimensions differ: A {a.shape} (transA={transA}) and "
                          f"B {b.shape} (transB={transB})")
    shape = (a_op.shape[0], b_op.shape[1])
    if c is not None and (c.ndim > 2 or any(d not in (1, full) for d, full in zip(c.shape[::-1], shape[::-1]))):
        # C broadcasts one way only: to (M, N), never growing the result.
        raise KernelError(f"FusedGemm: C {c.shape} does not broadcast to the result shape {shape}")
    if out is not None and (out.shape != shape or out.dtype != a.dtype):
        raise KernelError(f"FusedGemm: out is {out.dtype} {out.shape}, the result is {a.dtype} {shape}")

    work = a.dtype if a.dtype in _FAST_FLOATS else np.dtype(np.float32)
    a_op = a_op.astype(work, copy=False)
    b_op = b_op.astype(work, copy=False)
    direct = out is not None and work == a.dtype
    y = np.matmul(a_op, b_op, out=out) if direct else np.matmul(a_op, b_op)
    if alpha != 1.0:
        np.multiply(y, work.type(alpha), out=y)
    if c is not None and beta != 0.0:
        bias = c.astype(work, copy=False)
        if beta != 1.0:
            bias = bias * work.type(beta)
        np.add(y, bias, out=y)
    y = y.astype(a.dtype, copy=False)
    return apply_activation(y, activation, activation_params, out=None if direct else out)


# ----------------------------------------------------------------------------------------------
# ElementwiseChain

# Registry kernels that are one numpy ufunc on float32/float64 inputs of one dtype: these steps
# run with out= (in place on the running value, or straight into `out`) and give the same bits.
_UFUNC_STEPS = {
    onnx_ops.add: np.add,
    onnx_ops.sub: np.subtract,
    onnx_ops.mul: np.multiply,
    onnx_ops.div: np.divide,
    onnx_ops.relu: lambda v, out=None: np.maximum(v, v.dtype.type(0), out=out),
}


@op("ElementwiseChain", since=1, domain=DOMAIN)
def elementwise_chain(x, *operands, steps=(), out=None):
    """Apply `steps` to x in order (see the module docstring); each step must keep x's shape."""
    if not steps:
        raise KernelError("ElementwiseChain: no steps")
    if out is not None and (out.shape != x.shape):
        raise KernelError(f"ElementwiseChain: out has shape {out.shape}, X has {x.shape}")
    running = x
    owned = False  # whether `running` is a buffer of ours that a step may overwrite
    for index, step in enumerate(steps):
        kernel, refs, attrs = _step(step, index, len(operands))
        args = [running if r == -1 else operands[r - 1] for r in refs]
        ufunc = _UFUNC_STEPS.get(kernel.fn)
        if ufunc is not None and not attrs and _fits_in_place(args, x.shape, running.dtype):
            if out is not None and out.dtype == running.dtype:
                target = out  # out overlaps no input, so it can hold the running value from here on
            else:
                target = running if owned else None
            running = ufunc(*args, out=target) if target is not None else ufunc(*args)
            owned = True
        else:
            result = kernel.fn(*args, **attrs)
            if isinstance(result, tuple):
                result = result[0]
            result = np.asarray(result)
            owned = not any(np.may_share_memory(result, a) for a in (x, *operands) if isinstance(a, np.ndarray))
            running = result
        if running.shape != x.shape:
            raise KernelError(f"ElementwiseChain: step {index} ({kernel.key}) gives shape {running.shape}; "
                              f"every step must keep X's shape {x.shape}")
    if out is None or running is out:
        return running
    if out.dtype != running.dtype:
        raise KernelError(f"ElementwiseChain: out is {out.dtype}, the result is {running.dtype}")
    np.copyto(out, running)
    return out


def _step(step, index: int, operand_count: int):
    """(kernel, operand refs, attrs) of one step, checked."""
    if not isinstance(step, (list, tuple)) or len(step) != 3:
        raise KernelError(f"ElementwiseChain: step {index} must be [kernel_key, operand_inputs, attrs], got {step!r}")
    key, refs, attrs = step
    try:
        kernel = CPU_OPS.by_key(key)
    except KeyError:
        raise KernelError(f"ElementwiseChain: step {index} names kernel '{key}', "
                          f"which the numpy registry lacks") from None
    refs = [int(r) for r in refs]
    if any(r != -1 and not 1 <= r <= operand_count for r in refs):
        raise KernelError(f"ElementwiseChain: step {index} ({key}) reads inputs {refs}; the layer has "
                          f"{operand_count} operand(s) after X (use -1 for the running value)")
    return kernel, refs, dict(attrs or {})


def _fits_in_place(args: Sequence[np.ndarray], shape: tuple, dtype: np.dtype) -> bool:
    """Whether a ufunc over args gives exactly what the registry kernel gives, in x's shape."""
    if dtype not in _FAST_FLOATS or any(not isinstance(a, np.ndarray) or a.dtype != dtype for a in args):
        return False
    try:
        return np.broadcast_shapes(*(a.shape for a in args)) == shape
    except ValueError:
        return False
