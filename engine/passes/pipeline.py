"""The order the build runs the passes in, and why.

Clean-up first (identities, constants, dead layers), so the folding passes see plain chains; BN and
scale folding before vertical fusion, so `Conv -> BN -> Relu` arrives as `Conv(bias) -> Relu`;
horizontal fusion after vertical, so siblings carry their activations; concat elision last, once
every producer is final; then a last sweep for whatever the rewrites left unused.
"""

from __future__ import annotations

import importlib

from engine.passes import GraphPass

_ORDER = [
    ("engine.passes.identity", "remove_identities"),
    ("engine.passes.constant_folding", "fold_constants"),
    ("engine.passes.dead_layers", "eliminate_dead_layers"),
    ("engine.passes.bn_folding", "fold_batch_norm"),
    ("engine.passes.scale_folding", "fold_scales"),
    ("engine.passes.conv_fusion", "fuse_conv_activation"),
    ("engine.passes.gemm_fusion", "fuse_gemm_activation"),
    ("engine.passes.elementwise_fusion", "fuse_elementwise_chains"),
    ("engine.passes.horizontal_fusion", "fuse_siblings"),
    ("engine.passes.concat_elision", "elide_concats"),
    ("engine.passes.dead_layers", "eliminate_dead_layers"),
]


# Where a target changes a pass: on a GPU, siblings merge only when they share an activation.
_GPU_VARIANTS = {"fuse_siblings": "fuse_siblings_same_activation"}


def default_pipeline(device: str = "cpu") -> list[GraphPass]:
    passes = []
    for module, name in _ORDER:
        if device == "cuda":
            name = _GPU_VARIANTS.get(name, name)
        passes.append(getattr(importlib.import_module(module), name))
    return passes
