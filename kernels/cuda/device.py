"""Per-context GPU state: a cuDNN handle bound to the context's stream, and the device's identity."""

from __future__ import annotations

import dataclasses
import weakref


@dataclasses.dataclass
class Device:
    stream: object  # cupy.cuda.Stream the layers launch on
    cudnn_handle: object

    @property
    def ptr(self) -> int:
        return self.stream.ptr


def make_device(stream) -> Device:
    """A handle of its own for every context: a cuDNN handle launches on the one stream it was last
    bound to, so a handle shared by two contexts (a build's tuner and the user's context, or two
    engines in one process) would put the first context's convolutions on the second's stream,
    unordered with the rest of its work. The handle is destroyed with the Device (once no layer
    bound to it is left), so a process that makes many contexts does not keep their handles."""
    from kernels.cuda import import_cudnn

    cudnn = import_cudnn()
    handle = cudnn.create_handle()
    cudnn.set_stream(handle=handle, stream=stream.ptr)
    device = Device(stream, handle)
    # Not at exit: the CUDA context may already be going, and the process's end frees the handle.
    weakref.finalize(device, cudnn.destroy_handle, handle).atexit = False
    return device


def describe_gpu() -> dict:
    """Name, compute capability and library versions: what a plan records and checks on load."""
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    info = {"kind": "cuda", "name": name, "arch": f"sm_{props['major']}{props['minor']}",
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(), "cupy": cupy.__version__}
    try:
        from kernels.cuda import import_cudnn

        info["cudnn"] = import_cudnn().backend_version()
    except ImportError:
        pass
    return info
