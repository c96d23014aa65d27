"""A trial for #5, off unless asked: the GPU decoders and the model on disjoint sets of SMs.

Beside the decoders, the model's batches on an H100 run about 14% longer than alone. The decoders'
kernels (nvJPEG's and our resize) take SMs from the model's thread blocks, and the model's blocks
delay theirs. CUDA green contexts give each side SMs of its own. Whether the model then loses less
to the SMs it gives up than it loses now to sharing them is what the trial measures.

    BATCHSCORE_SM_SPLIT=/tmp/libgreen_split.so:16   # the library built from benchmarks/device/green_split.c,
                                                    # and the SMs for the decoders

With it set, GpuRunner's two streams and each GpuDecoder's stream come from split_stream();
without it, split_stream() returns None and nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import threading

ENV = "BATCHSCORE_SM_SPLIT"
MAX_DECODE_STREAMS = 16

_lock = threading.Lock()
_split: dict | None = None  # {"decode": [ptrs], "engine": [ptr, ptr], "sms": (decode, engine), "next": n}


def _setting() -> tuple[str, int] | None:
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    library, _, sms = value.rpartition(":")
    if not library or not sms.isdigit() or int(sms) < 1:
        raise ValueError(f"{ENV} must be LIBRARY:DECODE_SMS, e.g. /tmp/libgreen_split.so:16; got {value!r}")
    return library, int(sms)


def _make(cp, library: str, decode_sms: int) -> dict:
    from scoring.stream_priority import stream_priority

    cp.cuda.Device().use()  # the library asks the current context for the priority range
    lib = ctypes.CDLL(library)
    decode = (ctypes.c_ulonglong * MAX_DECODE_STREAMS)()
    engine = (ctypes.c_ulonglong * 2)()
    counts = (ctypes.c_uint * 2)()
    err = ctypes.create_string_buffer(512)
    status = lib.bs_green_split(cp.cuda.Device().id, decode_sms, MAX_DECODE_STREAMS,
                                stream_priority("decode"), stream_priority("engine"),
                                decode, engine, counts, err, len(err))
    if status != 0:
        raise RuntimeError(f"{ENV}: {err.value.decode(errors='replace')} (CUresult {status})")
    return {"decode": list(decode), "engine": list(engine), "sms": (counts[0], counts[1]), "next": 0}


def split_stream(role: str):
    """A cupy ExternalStream on the decoders' SMs (role "decode": a new one each call) or the model's
    (roles "engine" and "copy"), or None where $BATCHSCORE_SM_SPLIT is not set."""
    global _split
    setting = _setting()
    if setting is None:
        return None
    import cupy as cp

    with _lock:
        if _split is None:
            _split = _make(cp, *setting)
        if role == "decode":
            if _split["next"] >= MAX_DECODE_STREAMS:
                raise RuntimeError(f"{ENV}: more than {MAX_DECODE_STREAMS} decoder streams asked for")
            ptr = _split["decode"][_split["next"]]
            _split["next"] += 1
        else:
            ptr = _split["engine"][0 if role == "engine" else 1]
    return cp.cuda.ExternalStream(ptr)


def sm_counts() -> tuple[int, int] | None:
    """(decoders' SMs, model's SMs) once a split was made."""
    return _split["sms"] if _split is not None else None
