"""What a GPU kernel factory is told about its layer (kernels/ knows no IR: only plain values)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class LayerSpec:
    name: str
    kind: str
    attrs: dict[str, Any]
    consts: dict[int, np.ndarray]  # input index -> host weight array, for inputs that are weights
    tactic: str | None = None  # chosen at build time by the tuner; None: the kernel's default
    allow_tf32: bool = False
    # Buffers the runtime already bound for this layer beyond its outputs: "split_buffer", the one
    # buffer a horizontally fused conv writes, whose channel slices are (some of) its outputs.
    buffers: dict[str, Any] = dataclasses.field(default_factory=dict)


class Unsupported(Exception):
    """The factory cannot run this layer (shape, attribute or dtype): the runtime falls back to the
    host kernel for it and the build reports which layers do so."""
