"""The C library through ctypes, on Linux only, for the few calls Python's os module lacks (the
thread name prctl sets, sched_getcpu). Loaded once; None elsewhere or where it cannot be loaded:
callers treat those calls as conveniences and go on without them."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_libc: ctypes.CDLL | None = None


def linux_libc() -> ctypes.CDLL | None:
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            return None
    return _libc
