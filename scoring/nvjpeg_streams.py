"""nvJPEG's own CUDA streams at the decoders' priority, not the engine's.

Why: nvJPEG's hardware backend converts each decoded image with a small kernel (256 a batch) on
streams it creates for itself, one per hardware engine (seven on an H100), at CUDA's default
priority, which is the engine's. Beside the model those kernels queue behind the model's thread
blocks, a decode call waits for all of them, and the decoders fall behind. nvJPEG takes no streams
from its caller and has no priority setting.

How: libnvjpeg carries its own copy of the CUDA runtime, which finds the driver's functions with
dlsym() and then cuGetProcAddress(). Before nvJPEG's runtime starts, `raise_priority` points
libnvjpeg's dlsym import at a function of ours (scoring.import_slots: libnvjpeg's calls only, the
rest of the process is untouched). It hands back the real functions, except that cuGetProcAddress
comes back wrapped, and through it cuStreamCreate and cuStreamCreateWithPriority: every stream
nvJPEG makes from then on is made at the decoders' priority (scoring.stream_priority "decode",
the greatest by default).

Measured on an H100, ResNet-50 FP16 on 100,000 JPEGs end to end, alternating with nvJPEG's
default in each of four calls (session 23: two with a preloaded C shim doing the same, two with
this module; benchmarks/results/scoring/h100_2026-11-23_s23/NOTES.md): a hardware decode call of
256 images took 13.5-15.2 ms at the median against 17.6-18.5, and the decoder threads' time a run
fell by 10-17% on average. The share of the engine alone moved by +0.1 to +1.7 points at the
median, within the spread of the runs: what decides it now is elsewhere (the main loop's late
launches).

$BATCHSCORE_NVJPEG_STREAM_PRIORITY: unset, the decoders' priority; "default" leaves nvJPEG's
streams as nvJPEG makes them (for A/B runs); an integer, that priority (lower runs first).
Anything that does not fit (not Linux, no libnvjpeg, its runtime already started) leaves them as
they are, and `state()` says why.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

from scoring.import_slots import redirect
from scoring.stream_priority import stream_priority

log = logging.getLogger(__name__)

_DLSYM = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)
# cuGetProcAddress(symbol, pfn, cudaVersion, flags) and its _v2 (CUDA >= 12), which adds a status out
_GET_PROC_V1 = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                ctypes.c_uint64)
_GET_PROC_V2 = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                ctypes.c_uint64, ctypes.c_void_p)
_STREAM_CREATE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint)
_STREAM_CREATE_PRIORITY = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint, ctypes.c_int)
_V2_FROM_VERSION = 12000  # cuGetProcAddress asked for "cuGetProcAddress" at CUDA >= 12.0 gives _v2


def wanted_priority(environ=os.environ) -> int | None:
    """The priority for nvJPEG's streams, or None to leave them ($BATCHSCORE_NVJPEG_STREAM_PRIORITY)."""
    value = environ.get("BATCHSCORE_NVJPEG_STREAM_PRIORITY", "").strip()
    if not value:
        return stream_priority("decode")
    if value.lower() == "default":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"BATCHSCORE_NVJPEG_STREAM_PRIORITY must be an integer (lower runs first) or "
                         f"\"default\", got {value!r}") from None


class _Hooks:
    """The functions libnvjpeg gets from us, and what they have done. One per process: the
    callbacks must outlive every stream nvJPEG may still create."""

    def __init__(self, real_dlsym: int, priority: int):
        self.priority = priority
        self.real_dlsym = _DLSYM(real_dlsym)
        self.real_v1 = self.real_v2 = self.create_with_priority = None
        self.streams: list[int] = []  # the streams made at `priority` (handles), for tests and reports
        self.failures = 0
        self.lookups = 0  # dlsym calls libnvjpeg made through us: none means its runtime had started
        self.lock = threading.Lock()
        # the C entry points, kept alive here
        self.dlsym = _DLSYM(self._dlsym)
        self.get_proc_v1 = _GET_PROC_V1(self._get_proc_v1)
        self.get_proc_v2 = _GET_PROC_V2(self._get_proc_v2)
        self.stream_create = _STREAM_CREATE(self._stream_create)
        self.stream_create_priority = _STREAM_CREATE_PRIORITY(self._stream_create_priority)

    @staticmethod
    def address(function) -> int:
        return ctypes.cast(function, ctypes.c_void_p).value

    # The entry points below run inside libnvjpeg's calls: an exception there would surface as a
    # missing driver function, so any failure hands back what the driver gave.
    def _dlsym(self, handle, name):
        self.lookups += 1
        found = self.real_dlsym(handle, name)
        if not found:
            return found
        try:
            return self._looked_up(handle, name, found)
        except Exception:
            log.debug("nvJPEG stream hooks: dlsym(%r) passed through", name, exc_info=True)
            return found

    def _looked_up(self, handle, name: bytes, found: int) -> int:
        if self.create_with_priority is None:
            creator = self.real_dlsym(handle, b"cuStreamCreateWithPriority")
            if creator:
                self.create_with_priority = _STREAM_CREATE_PRIORITY(creator)
        return self._swap(name, found, 0)  # by dlsym, "cuGetProcAddress" is the first (v1) ABI

    def _get_proc_v1(self, symbol, pfn, version, flags):
        return self._got(symbol, pfn, version, self.real_v1(symbol, pfn, version, flags))

    def _get_proc_v2(self, symbol, pfn, version, flags, found):
        return self._got(symbol, pfn, version, self.real_v2(symbol, pfn, version, flags, found))

    def _got(self, symbol, pfn, version: int, status: int) -> int:
        try:
            if status == 0 and pfn[0]:
                pfn[0] = self._swap(symbol, pfn[0], version)
        except Exception:
            log.debug("nvJPEG stream hooks: cuGetProcAddress(%r) passed through", symbol, exc_info=True)
        return status

    def _swap(self, symbol: bytes, function: int, version: int) -> int:
        """Our function in place of the driver's where we wrap it."""
        if symbol in (b"cuStreamCreate", b"cuStreamCreateWithPriority") and self.create_with_priority is not None:
            return self.address(self.stream_create if symbol == b"cuStreamCreate" else self.stream_create_priority)
        if symbol == b"cuGetProcAddress":
            if version >= _V2_FROM_VERSION:
                self.real_v2 = _GET_PROC_V2(function)
                return self.address(self.get_proc_v2)
            self.real_v1 = _GET_PROC_V1(function)
            return self.address(self.get_proc_v1)
        if symbol == b"cuGetProcAddress_v2":
            self.real_v2 = _GET_PROC_V2(function)
            return self.address(self.get_proc_v2)
        return function

    def _stream_create(self, stream, flags):
        return self._made(stream, self.create_with_priority(stream, flags, self.priority))

    def _stream_create_priority(self, stream, flags, _priority):
        return self._made(stream, self.create_with_priority(stream, flags, self.priority))

    def _made(self, stream, status: int) -> int:
        with self.lock:
            if status == 0:
                self.streams.append(stream[0] or 0)
            else:
                self.failures += 1
        return status


_lock = threading.Lock()
_hooks: _Hooks | None = None
_why_not: str | None = "not tried"


def raise_priority(library: ctypes.CDLL) -> str | None:
    """Have libnvjpeg (loaded as `library`) make its streams at `wanted_priority()`,
    before its first call. None when done (or done before), else why not; never raises."""
    global _hooks, _why_not
    with _lock:
        if _hooks is not None:
            return None
        try:
            priority = wanted_priority()
        except ValueError as exc:
            _why_not = str(exc)
            return _why_not
        if priority is None:
            _why_not = "left as nvJPEG makes them: BATCHSCORE_NVJPEG_STREAM_PRIORITY=default"
            return _why_not
        try:
            libc = ctypes.CDLL(None)
            hooks = _Hooks(ctypes.cast(libc.dlsym, ctypes.c_void_p).value, priority)
            redirect(library._handle, "dlsym", hooks.address(hooks.dlsym))
        except Exception as exc:  # an unexpected library layout too: the streams stay as they are
            _why_not = f"left as nvJPEG makes them: {exc}"
            log.info("nvJPEG's streams keep their default priority: %s", exc)
            return _why_not
        _hooks, _why_not = hooks, None
        return None


def state() -> str:
    """What became of nvJPEG's streams in this process, for reports: "priority P (N streams)",
    or why they were left alone."""
    if _hooks is None:
        return _why_not or "not tried"
    with _hooks.lock:
        made, failed = len(_hooks.streams), _hooks.failures
    if made == 0 and failed == 0:
        return (f"priority {_hooks.priority} (no stream made since, {_hooks.lookups} lookups; nvJPEG's runtime "
                f"may have started before)")
    text = f"priority {_hooks.priority} ({made} streams)"
    return text + (f", {failed} failed" if failed else "")


def streams_made() -> list[int]:
    """The handles of the streams nvJPEG made through the hooks (empty where they are not in place)."""
    if _hooks is None:
        return []
    with _hooks.lock:
        return list(_hooks.streams)
