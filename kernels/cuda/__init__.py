"""The CUDA backend: CuPy kernels, cuDNN (through its frontend's graph API) for convolutions, cuBLAS
(through CuPy) for GEMMs. Nothing here is imported unless a GPU plan is built or loaded.

GPU kernels are *factories*: `make(spec, inputs, outputs, device) -> run()` binds a layer to its
device buffers once (the activation arena does not move), so `run()` only launches work on the
current stream, which is what CUDA-graph capture needs. A layer whose kind has no GPU kernel runs
its numpy kernel on the host (copied out and back), so every plan runs, if slowly; the build says
which layers do that.
"""

from __future__ import annotations

import os
import sys

from kernels.registry import OpRegistry

GPU_OPS = OpRegistry("cuda")

# Hardware work queues per CUDA context (32 is CUDA's most). A stream that shares the model's queue
# waits there behind whole CUDA-graph replays: on an H100, two GPU JPEG decoders beside ResNet-50
# FP16 replaying at batch 256 decoded 5,000 images/s with the default 8 and 19,500-21,100 with 32
# (benchmarks/results/gpu/decode_queue_probe_h100_2026-11-22.json). Queues are shared once there
# are more streams than queues, so scoring.gpu_decode also caps nvImageCodec's threads (streams).
HARDWARE_QUEUES = "32"


def prefer_more_hardware_queues() -> None:
    """Ask for HARDWARE_QUEUES per context unless the user chose a number. It is read when this
    process creates its CUDA context, so call it before anything touches the GPU."""
    os.environ.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", HARDWARE_QUEUES)


def import_cudnn():
    """The cuDNN frontend, kept from importing torch. The frontend asks whether each buffer it is
    given is a torch tensor, and imports torch to find out when torch is installed: on the H100
    machine that cost 8.3 s of a worker's 11 s start-up (profiled 2026-11-22), and the runtime
    must not import torch. Our buffers are CuPy arrays and raw pointers, so unless this process
    already imported torch, the frontend is told torch is absent (a program that also hands torch
    tensors to the cuDNN frontend itself should import torch before batchscore's GPU code runs)."""
    import cudnn
    import cudnn.datatypes

    if "torch" not in sys.modules and getattr(cudnn.datatypes, "torch_available", None) is None:
        cudnn.datatypes.torch_available = False
    return cudnn


def cuda_unavailable() -> str | None:
    """None when CuPy is installed and sees a CUDA GPU; else why not."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'batchscore[gpu]')"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA GPU is visible"
    except Exception as exc:  # no driver, or CUDA_VISIBLE_DEVICES hides every GPU
        return f"no usable CUDA GPU ({exc})"
    return None


def gpu_unavailable() -> str | None:
    """None when a CUDA GPU, CuPy and the cuDNN frontend can be used; else what is missing."""
    why = cuda_unavailable()
    if why is not None:
        return why
    try:
        import_cudnn()
    except ImportError:
        return "the cuDNN frontend is not installed (pip install nvidia-cudnn-frontend)"
    return None


def load_kernels() -> OpRegistry:
    from kernels.cuda import conv, elementwise, pool  # noqa: F401  (register on import)

    return GPU_OPS
