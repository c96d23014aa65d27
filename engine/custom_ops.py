"""User-defined layers: a numpy kernel, a shape rule and, optionally, a GPU kernel.

    def scaled_tanh(x, *, scale=1.0):
        return np.tanh(x) * np.float32(scale)

    register_custom_op("ScaledTanh", scaled_tanh, lambda shapes, attrs: [shapes[0]])
    y = net.custom("ScaledTanh", [x], {"scale": 2.0})

The kernel follows the numpy backend's convention (inputs positionally, attributes as keyword
arguments, one array or a tuple of arrays back) and is registered in `kernels.cpu.CPU_OPS` under
the domain CUSTOM_DOMAIN at version 1, so the builder and the runtime find it like any built-in
op. A process that loads a plan using a custom op must register it first (import the module that
calls `register_custom_op`), as with any plugin.

The shape rule maps the input shapes (tuples of ints, or strings such as "N" for the batch) and
the node's attributes to the list of output shapes; `Network.custom` uses it to give every output
a shape without running anything.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from kernels.cpu import CPU_OPS

CUSTOM_DOMAIN = "batchscore.custom"
CUSTOM_OPSET = 1

ShapeRule = Callable[[list[tuple], dict[str, Any]], Sequence[tuple] | tuple]


@dataclasses.dataclass(frozen=True)
class CustomOp:
    name: str
    kernel: Callable
    shape_rule: ShapeRule
    gpu_kernel: Any = None
    domain: str = CUSTOM_DOMAIN
    since: int = CUSTOM_OPSET


_CUSTOM_OPS: dict[str, CustomOp] = {}


def register_custom_op(name: str, numpy_kernel: Callable, shape_rule: ShapeRule, gpu_kernel: Any = None) -> CustomOp:
    """Register a user op; registering the same kernel and rule again is a no-op."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"custom op name must be an identifier such as 'ScaledTanh', got {name!r}")
    if not callable(numpy_kernel):
        raise ValueError(f"custom op '{name}': the numpy kernel must be callable, got {type(numpy_kernel).__name__}")
    if not callable(shape_rule):
        raise ValueError(f"custom op '{name}': the shape rule must be callable, got {type(shape_rule).__name__}")
    existing = _CUSTOM_OPS.get(name)
    if existing is not None:
        if existing.kernel is numpy_kernel and existing.shape_rule is shape_rule:
            if gpu_kernel is not None and existing.gpu_kernel is None:
                existing = dataclasses.replace(existing, gpu_kernel=gpu_kernel)
                _CUSTOM_OPS[name] = existing
            return existing
        raise ValueError(
            f"custom op '{name}' is already registered with a different kernel or shape rule; "
            f"the plan files built with it name it '{CUSTOM_DOMAIN}:{name}-{CUSTOM_OPSET}', so pick a new name"
        )
    if CPU_OPS.lookup(name, CUSTOM_OPSET, CUSTOM_DOMAIN) is not None:
        raise ValueError(f"'{CUSTOM_DOMAIN}:{name}' already has a kernel in the numpy registry")
    CPU_OPS.register(name, since=CUSTOM_OPSET, domain=CUSTOM_DOMAIN)(numpy_kernel)
    entry = CustomOp(name, numpy_kernel, shape_rule, gpu_kernel)
    _CUSTOM_OPS[name] = entry
    return entry


def custom_op(name: str) -> CustomOp:
    if name not in _CUSTOM_OPS:
        known = ", ".join(sorted(_CUSTOM_OPS)) or "none"
        raise KeyError(f"no custom op named '{name}' is registered (registered: {known}); call register_custom_op first")
    return _CUSTOM_OPS[name]


def custom_op_shape_rule(name: str) -> ShapeRule:
    return custom_op(name).shape_rule


def custom_op_gpu_kernel(name: str) -> Any:
    return custom_op(name).gpu_kernel


def custom_op_names() -> list[str]:
    return sorted(_CUSTOM_OPS)


def apply_shape_rule(name: str, input_shapes: list[tuple], attrs: dict[str, Any]) -> list[tuple]:
    """Run an op's shape rule and normalise its answer to a list of shape tuples.

    A rule may return one shape (a tuple of dims) or a list of shapes; anything else is an error
    that names the op, since a bad rule would otherwise surface far away.
    """
    rule = custom_op_shape_rule(name)
    try:
        result = rule([tuple(s) for s in input_shapes], dict(attrs))
    except Exception as exc:
        raise ValueError(f"custom op '{name}': the shape rule failed on input shapes {input_shapes}: {exc}") from exc
    if _is_shape(result) and (result or isinstance(result, tuple)):  # () is a scalar; [] is no answer
        return [tuple(result)]
    if isinstance(result, (list, tuple)) and result and all(_is_shape(s) for s in result):
        return [tuple(s) for s in result]
    raise ValueError(
        f"custom op '{name}': the shape rule returned {result!r}; it must return a shape (a tuple of "
        f"ints or dimension names) or a non-empty list of shapes"
    )


def _is_shape(obj: Any) -> bool:
    return isinstance(obj, (tuple, list)) and all(
        isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in obj
    )
