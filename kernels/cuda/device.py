"""Per-process GPU state: the cuDNN handle bound to a stream, and the device's identity."""

from __future__ import annotations

import dataclasses
import functools


@dataclasses.dataclass
class Device:
    stream: object  # cupy.cuda.Stream the layers launch on
    cudnn_handle: object

    @property
    def ptr(self) -> int:
        return self.stream.ptr


@functools.lru_cache(maxsize=None)
def _handle():
    import cudnn

    return cudnn.create_handle()


def make_device(stream) -> Device:
    import cudnn

    handle = _handle()
    cudnn.set_stream(handle=handle, stream=stream.ptr)
    return Device(stream, handle)


def describe_gpu() -> dict:
    """Name, compute capability and library versions: what a plan records and checks on load."""
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    info = {"kind": "cuda", "name": name, "arch": f"sm_{props['major']}{props['minor']}",
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(), "cupy": cupy.__version__}
    try:
        import cudnn

        info["cudnn"] = cudnn.backend_version()
    except ImportError:
        pass
    return info
