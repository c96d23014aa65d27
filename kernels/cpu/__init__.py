"""The numpy backend: one vectorised kernel per ONNX op version range.

These kernels are the test oracle for every GPU tactic, do constant folding in the builder, and
are the default backend on machines without a GPU. Importing this package registers them all.
"""

from kernels.cpu._registry import CPU_OPS
from kernels.cpu import (  # noqa: F401  (imported for their registrations)
    conv,
    elementwise,
    fused,
    gemm,
    norm,
    pool,
    reduce,
    resize,
    rnn,
    tensor,
)

__all__ = ["CPU_OPS"]
