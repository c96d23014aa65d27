"""The GPU's hardware JPEG decoder (NVJPG, on A100 and H100 class GPUs) through nvJPEG's batched
API, called with ctypes: one call decodes a whole batch into interleaved RGB buffers of ours, on a
stream of ours, from numpy arrays of addresses and lengths: no Python per image.

Why not only nvImageCodec: on an H100 beside ResNet-50 replaying at batch 256, two nvImageCodec
decoders gave about 20,000 of our photo-sized JPEGs per second, while nvJPEG's batched hardware
decode, called this way, gave 28,000-35,000 with one to three decoders (44,000 once, with two)
(2026-11-22, benchmarks/results/gpu/nvjpeg_batched_probe_h100_2026-11-22.json; nvImageCodec's:
decode_queue_probe_h100_2026-11-22.json). End to end the worker went from 17,000 to 22,000 images/s
(25,000 once rows stayed in Arrow memory and were routed in numpy). It is created with
interpolated chroma upsampling (CREATE_FLAGS), which brings its rows as close to Pillow's as
nvImageCodec's. nvImageCodec stays for what the
hardware does not take (scoring/jpeg_header.hardware_decodable) and for whole batches it refuses.

The library is the nvidia-nvjpeg wheel's (a dependency of nvImageCodec's [nvjpeg] extra), else any
libnvjpeg the loader finds.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from engine.errors import BatchscoreError
from scoring import nvjpeg_streams

_BACKEND_HARDWARE = 3  # nvjpegBackend_t NVJPEG_BACKEND_HARDWARE
# nvjpegCreateEx flags (nvjpeg.h: NVJPEG_FLAGS_*), by name, for trials ($BATCHSCORE_NVJPEG_FLAGS).
FLAGS = {"none": 0, "no_pipeline": 1, "memory_pools": 1 << 1, "bitstream_strict": 1 << 2, "interpolation": 1 << 5}
# Chroma upsampling with interpolation (NVJPEG_FLAGS_UPSAMPLING_WITH_INTERPOLATION), as libjpeg's
# "fancy" upsampling: on an H100 it took the hardware path's rows from a mean of 0.042 and a largest
# 1.50 (normalised) away from Pillow's to 0.0053 and 0.034, nvImageCodec's own distance, at the
# same speed end to end (benchmarks/results/gpu/hardware_decode_diff_h100_2026-11-22_s6_*.json;
# 25,025 and 25,481 images/s against 23,578 and 24,879 without it, alternating in one call,
# benchmarks/results/scoring/*_s6_ab_*.json).
# No pipelining (NVJPEG_FLAGS_HW_DECODE_NO_PIPELINE): pipelined, nvJPEG copies, converts and waits
# on an event image by image on streams of its own, and beside the model those waits grow (a CUPTI
# trace, benchmarks/results/gpu/nvjpeg_scaling_probe_h100_2026-11-22_s7.json). Without it, three
# threads decoding beside ResNet-50 went from 9,400 to 24,600-30,400 images/s in that probe. End to
# end the gain is within the spread: 25,700-25,800 images/s (GPU busy 0.946-0.952) against
# 22,900-25,000 (0.853-0.918) in one call (benchmarks/results/scoring/*_s7_flags_*.json), and
# 24,100-24,900 (0.889-0.933) in the next (*_s7_ring_*.json).
CREATE_FLAGS = FLAGS["interpolation"] | FLAGS["no_pipeline"]
# Bytes nvJPEG adds to its device and pinned allocations (fewer reallocations as batches vary),
# 0: its default; $BATCHSCORE_NVJPEG_PADDING (bytes) overrides it, for trials.
DEVICE_PADDING = 0
_OUTPUT_RGBI = 5  # nvjpegOutputFormat_t NVJPEG_OUTPUT_RGBI: interleaved RGB in channel[0]
_STATUS = {1: "not initialized", 2: "invalid parameter", 3: "bad JPEG", 4: "JPEG not supported",
           5: "allocator failure", 6: "execution failed", 7: "architecture mismatch", 8: "internal error",
           9: "not supported by this implementation", 10: "incomplete bitstream"}
_NAMES = ("libnvjpeg.so.13", "libnvjpeg.so.12", "libnvjpeg.so")


class NvjpegUnavailable(BatchscoreError):
    """No hardware JPEG decoding here: libnvjpeg missing, or the GPU has no hardware decoder."""


class HardwareDecodeError(BatchscoreError):
    """The hardware decoder refused a batch (the caller decodes it another way)."""


class _Image(ctypes.Structure):  # nvjpegImage_t: the layout decode()'s uint64 rows follow
    _fields_ = [("channel", ctypes.c_void_p * 4), ("pitch", ctypes.c_size_t * 4)]


_IMAGE_WORDS = ctypes.sizeof(_Image) // 8  # 8 on 64-bit hosts: four pointers, then four size_t


def _status_text(status: int) -> str:
    return f"nvjpegStatus {status} ({_STATUS.get(status, 'unknown')})"


def _candidates() -> list[str]:
    """The wheel's library first (it need not be on the loader's path), then the loader's search."""
    found = []
    try:
        import nvidia

        for root in getattr(nvidia, "__path__", []):
            for sub in ("cu13/lib", "cu12/lib", "nvjpeg/lib"):
                for name in _NAMES[:2]:
                    path = Path(root) / sub / name
                    if path.is_file():
                        found.append(str(path))
    except ImportError:
        pass
    return found + list(_NAMES)


_LIBRARY: ctypes.CDLL | None = None


def load_library() -> ctypes.CDLL:
    """libnvjpeg with the signatures used here (loaded once), its own CUDA streams set to be made
    at the decoders' priority (scoring.nvjpeg_streams)."""
    global _LIBRARY
    if _LIBRARY is not None:
        return _LIBRARY
    errors = []
    for candidate in _candidates():
        try:
            lib = ctypes.CDLL(candidate)
            break
        except OSError as exc:
            errors.append(f"{candidate}: {exc}")
    else:
        raise NvjpegUnavailable("libnvjpeg cannot be loaded (pip install 'batchscore[gpu]'): " + "; ".join(errors[-2:]))
    # before nvJPEG's first call, while its CUDA runtime has not looked up the driver's functions
    nvjpeg_streams.raise_priority(lib)
    handle_p, void_p = ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p
    lib.nvjpegCreateEx.argtypes = [ctypes.c_int, void_p, void_p, ctypes.c_uint, handle_p]
    lib.nvjpegJpegStateCreate.argtypes = [void_p, handle_p]
    lib.nvjpegJpegStateDestroy.argtypes = [void_p]
    lib.nvjpegDestroy.argtypes = [void_p]
    lib.nvjpegSetDeviceMemoryPadding.argtypes = [ctypes.c_size_t, void_p]
    lib.nvjpegSetPinnedMemoryPadding.argtypes = [ctypes.c_size_t, void_p]
    lib.nvjpegGetHardwareDecoderInfo.argtypes = [void_p, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint)]
    lib.nvjpegDecodeBatchedInitialize.argtypes = [void_p, void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    # data, lengths and images are numpy arrays' memory, passed as addresses
    lib.nvjpegDecodeBatched.argtypes = [void_p, void_p, void_p, void_p, void_p, void_p]
    _LIBRARY = lib
    return lib


class HardwareJpegDecoder:
    """One nvJPEG hardware-backend handle and decode state, on the current CUDA device.

    `decode(pointers, lengths, outputs, pitches, stream_ptr)` decodes a batch of JPEGs into device
    buffers. The work is queued on the stream; the caller synchronizes. One batch at a time (the
    caller's lock)."""

    def __init__(self, flags: int | None = None, padding: int | None = None):
        self._lib = load_library()
        self._handle, self._state = ctypes.c_void_p(), ctypes.c_void_p()
        self.flags = creation_flags() if flags is None else int(flags)
        status = self._lib.nvjpegCreateEx(_BACKEND_HARDWARE, None, None, self.flags, ctypes.byref(self._handle))
        if status != 0:
            raise NvjpegUnavailable(f"this GPU has no hardware JPEG decoder that nvJPEG can use with flags "
                                    f"{self.flags} (nvjpegCreateEx: {_status_text(status)})")
        status = self._lib.nvjpegJpegStateCreate(self._handle, ctypes.byref(self._state))
        if status != 0:
            self._lib.nvjpegDestroy(self._handle)
            raise NvjpegUnavailable(f"nvjpegJpegStateCreate failed: {_status_text(status)}")
        padding = device_padding() if padding is None else int(padding)
        if padding:
            self._lib.nvjpegSetDeviceMemoryPadding(padding, self._handle)
            self._lib.nvjpegSetPinnedMemoryPadding(padding, self._handle)
        self._batch_size = None

    def engines(self) -> tuple[int, int]:
        """(hardware decode engines, cores per engine), as nvJPEG reports them."""
        engines, cores = ctypes.c_uint(), ctypes.c_uint()
        self._lib.nvjpegGetHardwareDecoderInfo(self._handle, ctypes.byref(engines), ctypes.byref(cores))
        return engines.value, cores.value

    def decode(self, pointers: np.ndarray, lengths: np.ndarray, outputs: np.ndarray, pitches: np.ndarray,
               stream_ptr: int) -> None:
        """Decode n JPEGs: the bytes at pointers[i] (lengths[i] of them, host memory), each
        `hardware_decodable`, into device memory at outputs[i], rows pitches[i] bytes apart (an
        area >= height x pitch, pitch >= 3 x width). uint64 arrays; no Python per image."""
        n = len(pointers)
        if n == 0:
            return
        if not (len(lengths) == len(outputs) == len(pitches) == n):
            raise ValueError(f"decode: {n} pointers but {len(lengths)} lengths, {len(outputs)} outputs "
                             f"and {len(pitches)} pitches")
        if n != self._batch_size:  # the batched state is sized per batch size
            status = self._lib.nvjpegDecodeBatchedInitialize(self._handle, self._state, n, 1, _OUTPUT_RGBI)
            if status != 0:
                self._batch_size = None
                raise HardwareDecodeError(f"nvjpegDecodeBatchedInitialize({n}) failed: {_status_text(status)}")
            self._batch_size = n
        data = np.ascontiguousarray(pointers, np.uint64)
        sizes = np.ascontiguousarray(lengths, np.uint64)  # size_t
        images = np.zeros((n, _IMAGE_WORDS), np.uint64)  # nvjpegImage_t: channel[4], then pitch[4]
        images[:, 0] = outputs
        images[:, 4] = pitches
        status = self._lib.nvjpegDecodeBatched(self._handle, self._state, data.ctypes.data, sizes.ctypes.data,
                                               images.ctypes.data, stream_ptr)
        if status != 0:
            self._batch_size = None  # nvJPEG asks for a re-initialization after a failed batch
            raise HardwareDecodeError(f"hardware JPEG decode of {n} images failed: {_status_text(status)}")

    def close(self) -> None:
        if self._state:
            self._lib.nvjpegJpegStateDestroy(self._state)
            self._state = ctypes.c_void_p()
        if self._handle:
            self._lib.nvjpegDestroy(self._handle)
            self._handle = ctypes.c_void_p()


def creation_flags() -> int:
    """CREATE_FLAGS, or $BATCHSCORE_NVJPEG_FLAGS where set: names of FLAGS joined by "+" ("none":
    nvJPEG's defaults, without interpolated upsampling), for trials."""
    names = os.environ.get("BATCHSCORE_NVJPEG_FLAGS", "").strip()
    if not names:
        return CREATE_FLAGS
    flags = 0
    for name in names.split("+"):
        if name.strip() not in FLAGS:
            raise ValueError(f"BATCHSCORE_NVJPEG_FLAGS: unknown flag {name.strip()!r}; "
                                    f"use names of {', '.join(FLAGS)} joined by '+'")
        flags |= FLAGS[name.strip()]
    return flags


def device_padding() -> int:
    """DEVICE_PADDING, or $BATCHSCORE_NVJPEG_PADDING (bytes) where set, for trials."""
    value = os.environ.get("BATCHSCORE_NVJPEG_PADDING", "").strip()
    if not value:
        return DEVICE_PADDING
    if not value.isdigit():
        raise ValueError(f"BATCHSCORE_NVJPEG_PADDING must be a whole number of bytes, got {value!r}")
    return int(value)


def hardware_decoding_wanted() -> bool:
    """$BATCHSCORE_NVJPEG_HARDWARE=0 turns the direct hardware path off (to compare, or to work
    around a driver that misbehaves); anything else leaves it on where the GPU has the hardware."""
    return os.environ.get("BATCHSCORE_NVJPEG_HARDWARE", "1").strip().lower() not in ("0", "false", "no", "off")
