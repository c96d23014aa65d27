"""Is the GPU's JPEG decode ceiling nvImageCodec's or the hardware's? nvJPEG's own batched decode
(ctypes, hardware backend: one call per batch, interleaved RGB out) alone and under engine load.

    CUDA_DEVICE_MAX_CONNECTIONS=32 python benchmarks/device/nvjpeg_batched_probe.py PLAN DATA_DIR \
        [BACKENDS [COUNTS [OUTPUTS]]]  -> JSON lines on stdout

BACKENDS: comma-separated names of BACKENDS (default "hardware,default"); COUNTS: decoder counts to
try (default "1,2,3"); OUTPUTS: names of OUTPUTS (default "rgbi"). "roi" decodes only the region
of each image that ResNet's resize and center crop read (crop_window.py here), through
nvjpegDecodeBatchedEx with a region per image, interleaved RGB; its first run also checks the
regions' pixels against the whole images'. "yuv" leaves the planes as the
JPEG holds them (Y, then Cb and Cr at their subsampled sizes), without nvJPEG's chroma upsampling
and colour conversion: `... PLAN DATA hardware 3 rgbi,yuv` says how much of the model's time under
decoding that GPU work costs (issue #5: the engine's batches ran 9.1 ms beside the decoders
against 8.0 ms alone). On an H100 it cost nothing measurable, and YUV decoded slower
(benchmarks/results/gpu/nvjpeg_batched_probe_h100_2026-11-22_s11.json).

DATA_DIR is a JPEG Parquet dataset (benchmarks/gpu_decode_rates.load reads it). Needs libnvjpeg
(the nvidia-nvjpeg wheel) on the library path. A probe for the device, not part of batchscore.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "device"))

from crop_window import source_windows  # noqa: E402
from scoring.decode import Preprocess  # noqa: E402
from scoring.nvjpeg_hardware import creation_flags  # noqa: E402

BACKENDS = {"default": 0, "hybrid": 1, "gpu_hybrid": 2, "hardware": 3}
OUTPUTS = {"yuv": 1, "rgbi": 5, "roi": 5}  # nvjpegOutputFormat_t NVJPEG_OUTPUT_YUV, NVJPEG_OUTPUT_RGBI


class Image(ctypes.Structure):  # nvjpegImage_t
    _fields_ = [("channel", ctypes.c_void_p * 4), ("pitch", ctypes.c_size_t * 4)]


def library():
    lib = ctypes.CDLL("libnvjpeg.so.13")
    lib.nvjpegCreateEx.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint,
                                   ctypes.POINTER(ctypes.c_void_p)]
    lib.nvjpegJpegStateCreate.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.nvjpegGetImageInfo.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                       ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                                       ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
    lib.nvjpegDecodeBatchedInitialize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                                  ctypes.c_int]
    lib.nvjpegDecodeBatched.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p),
                                        ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(Image), ctypes.c_void_p]
    lib.nvjpegGetHardwareDecoderInfo.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint),
                                                 ctypes.POINTER(ctypes.c_uint)]
    lib.nvjpegDecodeParamsCreate.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.nvjpegDecodeParamsSetOutputFormat.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.nvjpegDecodeParamsSetROI.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.nvjpegDecodeBatchedEx.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p),
                                          ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(Image),
                                          ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]
    return lib


def yuv_planes(at: int, planes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(address, pitch) of each plane of one image's slot at `at`: the planes one after another,
    each as wide as its component (planes: (width, height) of Y, Cb, Cr)."""
    out = []
    for width, height in planes:
        out.append((at, width))
        at += width * height
    return out


def check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"{what} failed: nvjpegStatus {status}")


class BatchedDecoder:
    """One nvJPEG handle + state + stream; decodes a list of JPEG bytes into preallocated RGB buffers."""

    def __init__(self, lib, backend: str, batch: int, data: list[bytes], output: str = "rgbi"):
        import cupy as cp

        self.lib = lib
        self.output = output
        self.handle, self.state = ctypes.c_void_p(), ctypes.c_void_p()
        # the hardware backend with the flags the worker's decoder uses (no pipelining, interpolated
        # chroma; $BATCHSCORE_NVJPEG_FLAGS for trials), so the probe compares like with like
        self.flags = creation_flags() if backend == "hardware" else 0
        check(lib.nvjpegCreateEx(BACKENDS[backend], None, None, self.flags, ctypes.byref(self.handle)),
              "nvjpegCreateEx")
        check(lib.nvjpegJpegStateCreate(self.handle, ctypes.byref(self.state)), "nvjpegJpegStateCreate")
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.batch = batch
        self.initialized_for = None
        # the largest image decides the per-slot buffer
        comps, sub = ctypes.c_int(), ctypes.c_int()
        w4, h4 = (ctypes.c_int * 4)(), (ctypes.c_int * 4)()
        self.sizes, self.planes = {}, {}
        for d in data:
            check(lib.nvjpegGetImageInfo(self.handle, d, len(d), ctypes.byref(comps), ctypes.byref(sub), w4, h4),
                  "nvjpegGetImageInfo")
            self.sizes[id(d)] = (w4[0], h4[0])
            # each component's (width, height): chroma may be subsampled (4:2:0: half each way)
            self.planes[id(d)] = [(w4[c], h4[c]) if c < comps.value else (0, 0) for c in range(3)]
        if output == "roi":  # the region the crop of ResNet's preprocessing reads (crop_window.py here)
            self.windows, self.params = {}, {}
            for d in data:
                w, h = self.sizes[id(d)]
                x0, y0, ww, wh = (int(v[0]) for v in source_windows([w], [h], Preprocess()))
                self.windows[id(d)] = (x0, y0, ww, wh)
                if (x0, y0, ww, wh) not in self.params:
                    params = ctypes.c_void_p()
                    check(lib.nvjpegDecodeParamsCreate(self.handle, ctypes.byref(params)), "nvjpegDecodeParamsCreate")
                    check(lib.nvjpegDecodeParamsSetOutputFormat(params, OUTPUTS["roi"]), "SetOutputFormat")
                    check(lib.nvjpegDecodeParamsSetROI(params, x0, y0, ww, wh), "nvjpegDecodeParamsSetROI")
                    self.params[(x0, y0, ww, wh)] = params
        if output == "yuv":
            self.slot_bytes = max(sum(w * h for w, h in planes) for planes in self.planes.values())
        else:
            self.slot_bytes = max(w * h for w, h in self.sizes.values()) * 3
        self.out = cp.empty(batch * self.slot_bytes, dtype=cp.uint8)

    def hardware_info(self):
        engines, cores = ctypes.c_uint(), ctypes.c_uint()
        status = self.lib.nvjpegGetHardwareDecoderInfo(self.handle, ctypes.byref(engines), ctypes.byref(cores))
        return {"status": status, "engines": engines.value, "cores_per_engine": cores.value}

    def __call__(self, chunk: list[bytes]) -> None:
        n = len(chunk)
        if self.initialized_for != n:
            check(self.lib.nvjpegDecodeBatchedInitialize(self.handle, self.state, n, 1, OUTPUTS[self.output]),
                  "nvjpegDecodeBatchedInitialize")
            self.initialized_for = n
        pointers = (ctypes.c_char_p * n)(*chunk)
        lengths = (ctypes.c_size_t * n)(*[len(d) for d in chunk])
        images = (Image * n)()
        base = self.out.data.ptr
        for i, d in enumerate(chunk):
            at = base + i * self.slot_bytes
            if self.output == "yuv":
                for c, (pointer, pitch) in enumerate(yuv_planes(at, self.planes[id(d)])):
                    images[i].channel[c], images[i].pitch[c] = pointer, pitch
            elif self.output == "roi":
                images[i].channel[0], images[i].pitch[0] = at, self.windows[id(d)][2] * 3
            else:
                images[i].channel[0], images[i].pitch[0] = at, self.sizes[id(d)][0] * 3
        if self.output == "roi":
            params = (ctypes.c_void_p * n)(*[self.params[self.windows[id(d)]].value for d in chunk])
            check(self.lib.nvjpegDecodeBatchedEx(self.handle, self.state, pointers, lengths, images, params,
                                                 self.stream.ptr), "nvjpegDecodeBatchedEx")
        else:
            check(self.lib.nvjpegDecodeBatched(self.handle, self.state, pointers, lengths, images, self.stream.ptr),
                  "nvjpegDecodeBatched")
        self.stream.synchronize()


def roi_check(lib, data: list[bytes], batch: int) -> dict:
    """The hardware decoder's regions against the same pixels of its whole images: identical where
    the kernels read (inside the margin), and at the regions' edges; and the share of pixels decoded."""
    import cupy as cp
    import numpy as np

    from crop_window import MARGIN

    whole, region = BatchedDecoder(lib, "hardware", batch, data), BatchedDecoder(lib, "hardware", batch, data, "roi")
    chunk = data[:batch]
    whole(chunk)
    region(chunk)
    full, part = cp.asnumpy(whole.out), cp.asnumpy(region.out)
    inner, edge, pixels, decoded = 0, 0, 0, 0
    for i, d in enumerate(chunk):
        w, h = whole.sizes[id(d)]
        x0, y0, ww, wh = region.windows[id(d)]
        a = full[i * whole.slot_bytes: i * whole.slot_bytes + w * h * 3].reshape(h, w, 3)[y0:y0 + wh, x0:x0 + ww]
        b = part[i * region.slot_bytes: i * region.slot_bytes + ww * wh * 3].reshape(wh, ww, 3)
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        core = diff[MARGIN:wh - MARGIN, MARGIN:ww - MARGIN]
        inner = max(inner, int(core.max()) if core.size else 0)
        edge = max(edge, int(diff.max()))
        pixels += w * h
        decoded += ww * wh
    return {"roi_vs_whole_max_abs_inside_margin": inner, "roi_vs_whole_max_abs": edge,
            "roi_share_of_pixels": round(decoded / pixels, 3)}


def y_plane_check(decoder: BatchedDecoder, data: list[bytes], batch: int) -> dict:
    """The first image's Y plane against libjpeg's own Y (Pillow decoding to YCbCr, no colour
    conversion): a check that the planes land where this probe says."""
    import io

    import cupy as cp
    import numpy as np
    from PIL import Image as PILImage

    decoder(data[:batch])
    (w, h), *_ = decoder.planes[id(data[0])]
    got = cp.asnumpy(decoder.out[: w * h]).reshape(h, w).astype(np.int16)
    image = PILImage.open(io.BytesIO(data[0]))
    image.draft("YCbCr", image.size)
    want = np.asarray(image.convert("YCbCr"))[:, :, 0].astype(np.int16)
    return {"y_plane_vs_libjpeg_mean_abs": float(np.abs(got - want).mean()), "max_abs": int(np.abs(got - want).max()),
            "chroma_planes": decoder.planes[id(data[0])][1:]}


def main() -> int:
    plan, data_dir = sys.argv[1], Path(sys.argv[2])
    backends = sys.argv[3].split(",") if len(sys.argv) > 3 else ["hardware", "default"]
    counts = [int(c) for c in sys.argv[4].split(",")] if len(sys.argv) > 4 else [1, 2, 3]
    outputs = sys.argv[5].split(",") if len(sys.argv) > 5 else ["rgbi"]
    unknown = [o for o in outputs if o not in OUTPUTS]
    if unknown:
        raise SystemExit(f"unknown output format(s) {unknown}; choose from {sorted(OUTPUTS)}")
    from decode_load_probe import Load
    from gpu_decode_rates import BATCH, load, parallel_rate

    data = load(data_dir)[:3072]
    lib = library()
    info_printed, planes_checked = False, False
    for backend, output, count in [(b, o, c) for b in backends for o in outputs for c in counts]:
        try:
            decoders = [BatchedDecoder(lib, backend, BATCH, data, output) for _ in range(count)]
        except Exception as exc:
            print(json.dumps({"backend": backend, "output": output, "decoders": count, "error": str(exc)}),
                  flush=True)
            continue
        if not info_printed and output == "rgbi":
            import io

            import cupy as cp
            import numpy as np
            from PIL import Image as PILImage

            first = decoders[0]
            first(data[:BATCH])
            w, h = first.sizes[id(data[0])]
            got = cp.asnumpy(first.out[: w * h * 3]).reshape(h, w, 3).astype(np.int16)
            want = np.asarray(PILImage.open(io.BytesIO(data[0])).convert("RGB")).astype(np.int16)
            print(json.dumps({"check_vs_pillow_mean_abs": float(np.abs(got - want).mean()),
                              "max_abs": int(np.abs(got - want).max())}), flush=True)
            print(json.dumps({"hardware_decoder": decoders[0].hardware_info(),
                              "connections": os.environ.get("CUDA_DEVICE_MAX_CONNECTIONS", "8 (default)")}),
                  flush=True)
            info_printed = True
        if output == "roi" and count == counts[0]:
            print(json.dumps(roi_check(lib, data, BATCH)), flush=True)
        if not planes_checked and output == "yuv":
            print(json.dumps(y_plane_check(decoders[0], data, BATCH)), flush=True)
            planes_checked = True
        try:
            alone = parallel_rate(data, decoders)
            busy = Load(plan, 256)
            _, engine_alone = busy.measure(lambda: time.sleep(1.0))
            loaded, meanwhile = busy.measure(lambda: parallel_rate(data, decoders))
            busy.close()
        except Exception as exc:
            print(json.dumps({"backend": backend, "output": output, "decoders": count, "error": str(exc)}),
                  flush=True)
            continue
        print(json.dumps({"backend": backend, "output": output, "decoders": count, "flags": decoders[0].flags,
                          "decode_alone": round(alone),
                          "decode_under_load": round(loaded), "engine_alone": round(engine_alone),
                          "engine_meanwhile": round(meanwhile)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
