"""Give a Python thread its name in the operating system too, so `top -H`, `ps -L` and
/proc/<pid>/task/<tid>/comm tell a worker's reader from its decoders (Python keeps
threading.Thread names to itself before 3.14). Linux only; elsewhere, and on any failure, it
does nothing: a name is a convenience, never a reason to stop."""

from __future__ import annotations

import ctypes

from scoring.libc import linux_libc

PR_SET_NAME = 15  # prctl(2)
MAX_NAME_BYTES = 15  # the kernel keeps 16 bytes, the last a NUL


def os_thread_name(name: str) -> bytes:
    """The name as the kernel stores it: ASCII, at most 15 bytes (the end kept: "decode-2" tells more
    than "prefetch-")."""
    raw = name.encode("ascii", "replace")
    return raw[-MAX_NAME_BYTES:]


def name_this_thread(name: str) -> bool:
    """Set the calling thread's OS name; whether it was set."""
    libc = linux_libc()
    if libc is None:
        return False
    try:
        return libc.prctl(PR_SET_NAME, ctypes.c_char_p(os_thread_name(name)), 0, 0, 0) == 0
    except AttributeError:
        return False
