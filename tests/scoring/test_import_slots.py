"""scoring.import_slots on a real library of this process: Python's _ctypes extension, which looks up
C functions with dlsym() through its GOT (ctypes.CDLL(None).getpid does that lookup)."""

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

from scoring.import_slots import ImportSlotError, import_slots, loaded_library, redirect, restore

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF and /proc/self/maps: Linux only")

DLSYM = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)


def _ctypes_library() -> ctypes.CDLL:
    import _ctypes

    if not Path(getattr(_ctypes, "__file__", "")).is_file():
        pytest.skip("this Python has _ctypes built in, not as a shared library")
    return ctypes.CDLL(_ctypes.__file__)


def _readelf_slots(path: str, symbol: str) -> list[int] | None:
    """What binutils' readelf says, where it is installed: the relocations naming `symbol`."""
    try:
        out = subprocess.run(["readelf", "-rW", path], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return sorted({int(line.split()[0], 16) for line in out.splitlines()
                   if len(line.split()) > 4 and line.split()[4].split("@")[0] == symbol
                   and ("JUMP_SLO" in line or "GLOB_DAT" in line)})


def test_the_slots_are_the_relocations_of_the_symbol():
    library = _ctypes_library()
    _, path = loaded_library(library._handle)
    slots = import_slots(path, "dlsym")
    assert slots, "_ctypes reaches dlsym through its GOT"
    assert import_slots(path, "no_such_function_anywhere") == []
    expected = _readelf_slots(path, "dlsym")
    if expected is not None:
        assert slots == expected


def test_the_loader_reports_where_the_library_is():
    library = _ctypes_library()
    base, path = loaded_library(library._handle)
    assert Path(path).resolve() == Path(library._name).resolve()
    assert base > 0 and base % 4096 == 0
    with open("/proc/self/maps") as maps:  # the library's first mapping starts at its load address
        starts = [int(line.split("-")[0], 16) for line in maps if line.rstrip().endswith(path)]
    assert min(starts) == base


def test_a_redirected_import_calls_the_new_function_until_restored():
    library = _ctypes_library()
    libc = ctypes.CDLL(None)
    real = DLSYM(ctypes.cast(libc.dlsym, ctypes.c_void_p).value)
    asked = []

    def spy(handle, name):
        asked.append(name)
        return real(handle, name)

    hook = DLSYM(spy)
    previous = redirect(library._handle, "dlsym", ctypes.cast(hook, ctypes.c_void_p).value)
    try:
        pid = ctypes.CDLL(None).getpid()  # _ctypes looks getpid up: through the spy
    finally:
        restore(library._handle, "dlsym", previous)
    assert b"getpid" in asked and pid > 0
    asked.clear()
    ctypes.CDLL(None).getppid  # noqa: B018 - the lookup is the point
    assert asked == []


def test_what_is_not_an_elf_library_is_refused(tmp_path):
    fake = tmp_path / "libfake.so"
    fake.write_bytes(b"not an ELF file, just bytes" * 4)
    with pytest.raises(ImportSlotError, match="not an ELF file"):
        import_slots(fake, "dlsym")
    elf32 = tmp_path / "lib32.so"
    elf32.write_bytes(b"\x7fELF\x01\x01" + bytes(100))
    with pytest.raises(ImportSlotError, match="64-bit little-endian"):
        import_slots(elf32, "dlsym")


def test_a_library_that_does_not_import_the_symbol_is_refused():
    library = _ctypes_library()
    with pytest.raises(ImportSlotError, match="does not import no_such_function"):
        redirect(library._handle, "no_such_function", 1)


def test_a_slot_on_a_read_only_page_is_written_and_the_page_made_read_only_again():
    # GOT slots under RELRO are read-only once the loader is done; an anonymous read-only page stands in
    import mmap

    from scoring.import_slots import _writable, _write_pointer
    from scoring.libc import linux_libc

    libc = linux_libc()
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    page = libc.mmap(None, mmap.PAGESIZE, mmap.PROT_READ, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    assert page not in (None, ctypes.c_void_p(-1).value)
    try:
        assert not _writable(page + 64)
        _write_pointer(page + 64, 0x1234)
        assert ctypes.c_void_p.from_address(page + 64).value == 0x1234
        assert not _writable(page + 64)
    finally:
        libc.munmap(page, mmap.PAGESIZE)
