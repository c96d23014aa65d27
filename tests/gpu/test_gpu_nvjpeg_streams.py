"""scoring.nvjpeg_streams with the real nvJPEG and driver: the streams nvJPEG makes for the hardware
decoder come out at the decoders' priority, and the pixels are the same either way. Each case runs
in a process of its own, as a worker does: nvJPEG's CUDA runtime must not have started before."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]

DECODE = """
import ctypes, io, json, sys
import numpy as np, cupy as cp
from PIL import Image
from scoring import nvjpeg_streams
from scoring.decode import Preprocess
from scoring.gpu_decode import GpuDecoder, gpu_decode_unavailable


def jpeg_items(n):
    # baseline 4:2:0 JPEGs of smooth colour with some grain, as the hardware decoder takes them
    rng = np.random.default_rng(7)
    items = []
    for i in range(n):
        h, w = 300 + 7 * i, 400 - 5 * i
        y, x = np.mgrid[0:h, 0:w]
        pixels = np.stack([x * 255 // w, y * 255 // h, (x + y + 40 * i) % 256], -1) + rng.integers(0, 24, (h, w, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        items.append(buffer.getvalue())
    return items


why = gpu_decode_unavailable()
if why:
    print(json.dumps({"skip": why})); raise SystemExit
p = Preprocess()
items = jpeg_items(24)
libcuda = ctypes.CDLL("libcuda.so.1")
with GpuDecoder(p) as dec:
    out = cp.empty((len(items),) + p.output_shape, p.np_dtype)
    errors = dec.decode_into(items, out)
    hardware = dec.hardware_images
    priorities = []  # while the decoder, and so nvJPEG's streams, live
    for stream in nvjpeg_streams.streams_made():
        value = ctypes.c_int()
        assert libcuda.cuStreamGetPriority(ctypes.c_void_p(stream), ctypes.byref(value)) == 0, stream
        priorities.append(value.value)
least, greatest = ctypes.c_int(), ctypes.c_int()
assert libcuda.cuCtxGetStreamPriorityRange(ctypes.byref(least), ctypes.byref(greatest)) == 0
greatest = greatest.value
np.save(sys.argv[1], cp.asnumpy(out))
print(json.dumps({"errors": errors, "hardware": hardware, "state": nvjpeg_streams.state(),
                  "priorities": priorities, "greatest": greatest}))
"""


def _decode(tmp_path, name: str, **env) -> dict:
    out = tmp_path / f"{name}.npy"
    result = subprocess.run([sys.executable, "-c", DECODE, str(out)], capture_output=True, text=True, timeout=300,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **env})
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout.splitlines()[-1])
    if "skip" in data:
        pytest.skip(data["skip"])
    data["pixels"] = out
    return data


def test_nvjpegs_own_streams_take_the_decoders_priority_and_the_pixels_do_not_change(tmp_path):
    import numpy as np

    raised = _decode(tmp_path, "raised")
    if not raised["hardware"]:
        pytest.skip(f"no row went to a hardware JPEG decoder here ({raised['state']})")
    assert raised["errors"] == [None] * 24
    assert raised["priorities"], raised["state"]  # nvJPEG made streams, through the hooks
    assert set(raised["priorities"]) == {raised["greatest"]}
    assert raised["state"] == f"priority -1000 ({len(raised['priorities'])} streams)"

    left = _decode(tmp_path, "left", BATCHSCORE_NVJPEG_STREAM_PRIORITY="default")
    assert left["priorities"] == [] and left["state"].endswith("BATCHSCORE_NVJPEG_STREAM_PRIORITY=default")
    assert left["hardware"] == raised["hardware"]
    assert np.array_equal(np.load(raised["pixels"]), np.load(left["pixels"]))
