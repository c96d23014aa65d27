"""Send a loaded shared library's calls to one imported function somewhere else, from Python.

    slots = import_slots("/path/libfoo.so", "dlsym")          # GOT offsets of libfoo's dlsym import
    library = ctypes.CDLL("/path/libfoo.so")
    previous = redirect(library._handle, "dlsym", new_address)
    ...
    restore(library._handle, "dlsym", previous)

A library calls a function of another library through a slot of its global offset table (GOT),
which the dynamic loader fills with the function's address. Writing another address into that slot
redirects the library's calls, and only that library's: the rest of the process keeps calling the
real function. This is how scoring.nvjpeg_streams reaches the CUDA streams that nvJPEG creates for
itself. The slots are found from the library file's own relocation entries (ELF64, little-endian,
x86-64 or AArch64); anything else raises ImportSlotError, and the caller goes on without.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
import sys
from pathlib import Path

from engine.errors import BatchscoreError
from scoring.libc import linux_libc

# Relocation types that fill a GOT slot with a symbol's address: (jump slot, global data).
_GOT_RELOCATIONS = {62: (7, 6), 183: (1026, 1025)}  # e_machine: x86-64, AArch64
_SHT_RELA, _SHT_DYNSYM = 4, 11
_RTLD_DI_LINKMAP = 2
_PROT_READ, _PROT_WRITE = 1, 2


class ImportSlotError(BatchscoreError):
    """The library's imports cannot be found or redirected here."""


def _section_headers(data: bytes, path: str) -> tuple[int, list[tuple]]:
    """(e_machine, section headers as (type, offset, size, link, entsize)) of an ELF64 LE file."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise ImportSlotError(f"{path} is not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ImportSlotError(f"{path} is not a 64-bit little-endian ELF file")
    machine = struct.unpack_from("<H", data, 0x12)[0]
    if machine not in _GOT_RELOCATIONS:
        raise ImportSlotError(f"{path}: machine {machine} is neither x86-64 nor AArch64")
    offset, = struct.unpack_from("<Q", data, 0x28)
    entry_size, count = struct.unpack_from("<HH", data, 0x3A)
    if offset == 0 or count == 0 or entry_size < 64 or offset + count * entry_size > len(data):
        raise ImportSlotError(f"{path} has no section headers")
    headers = []
    for i in range(count):
        _, kind, _, _, at, size, link, _, _, entsize = struct.unpack_from("<IIQQQQIIQQ", data, offset + i * entry_size)
        headers.append((kind, at, size, link, entsize))
    return machine, headers


def import_slots(path: str | Path, symbol: str) -> list[int]:
    """Offsets (from the library's load address) of the GOT slots through which the library at
    `path` reaches `symbol`: the targets of its jump-slot and global-data relocations of it."""
    path = str(path)
    wanted = symbol.encode()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        machine, headers = _section_headers(data, path)
        kinds = _GOT_RELOCATIONS[machine]
        slots = []
        for kind, at, size, link, entsize in headers:
            if kind != _SHT_RELA or link >= len(headers) or headers[link][0] != _SHT_DYNSYM:
                continue
            _, symbols_at, _, strings_link, symbol_size = headers[link]
            strings_at = headers[strings_link][1]
            for entry in range(at, at + size, entsize or 24):
                r_offset, r_info = struct.unpack_from("<QQ", data, entry)
                if r_info & 0xFFFFFFFF not in kinds:
                    continue
                name_at = strings_at + struct.unpack_from("<I", data, symbols_at + (r_info >> 32) * (symbol_size or 24))[0]
                end = data.find(b"\0", name_at)
                if data[name_at:end] == wanted:
                    slots.append(r_offset)
    return sorted(set(slots))


def loaded_library(handle: int) -> tuple[int, str]:
    """(load address, file path) of the library of a dlopen handle (ctypes.CDLL(...)._handle), as
    the dynamic loader has them."""
    libc = ctypes.CDLL(None)
    try:
        dlinfo = libc.dlinfo
    except AttributeError:  # glibc < 2.34 keeps it in libdl
        dlinfo = ctypes.CDLL("libdl.so.2").dlinfo
    dlinfo.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    link_map = ctypes.c_void_p()
    if dlinfo(ctypes.c_void_p(handle), _RTLD_DI_LINKMAP, ctypes.byref(link_map)) != 0 or not link_map.value:
        raise ImportSlotError("dlinfo(RTLD_DI_LINKMAP) failed")
    # struct link_map starts with l_addr, then l_name
    base = ctypes.c_size_t.from_address(link_map.value).value
    name = ctypes.c_char_p.from_address(link_map.value + ctypes.sizeof(ctypes.c_size_t)).value
    if not name:
        raise ImportSlotError("the dynamic loader gives no file for this library")
    return base, name.decode()


def _writable(address: int) -> bool:
    """Whether the page holding `address` is writable now (/proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            low, high = (int(x, 16) for x in span.split("-"))
            if low <= address < high:
                return perms[1] == "w"
    raise ImportSlotError(f"address {address:#x} is not mapped")


def _write_pointer(address: int, value: int) -> None:
    """Store a pointer at `address`, lifting a read-only page's protection for the write."""
    if _writable(address):
        ctypes.c_void_p.from_address(address).value = value
        return
    libc = linux_libc()
    if libc is None:
        raise ImportSlotError("the C library cannot be loaded to lift a page's protection")
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    start = address & ~(page - 1)
    if libc.mprotect(start, page, _PROT_READ | _PROT_WRITE) != 0:
        raise ImportSlotError(f"mprotect of the page at {start:#x} failed (errno {ctypes.get_errno()})")
    try:
        ctypes.c_void_p.from_address(address).value = value
    finally:
        libc.mprotect(start, page, _PROT_READ)


def redirect(handle: int, symbol: str, address: int) -> list[int]:
    """Point every GOT slot for `symbol` of the library of dlopen `handle` at `address`; returns
    what the slots held (for `restore`). ImportSlotError where the library has none."""
    if not sys.platform.startswith("linux"):
        raise ImportSlotError(f"redirecting imports needs Linux, not {sys.platform}")
    base, path = loaded_library(handle)
    slots = import_slots(path, symbol)
    if not slots:
        raise ImportSlotError(f"{path} does not import {symbol} through its GOT")
    previous = [ctypes.c_void_p.from_address(base + slot).value or 0 for slot in slots]
    for slot in slots:
        _write_pointer(base + slot, address)
    return previous


def restore(handle: int, symbol: str, previous: list[int]) -> None:
    """Put back what `redirect` found in the slots."""
    base, path = loaded_library(handle)
    for slot, value in zip(import_slots(path, symbol), previous):
        _write_pointer(base + slot, value)
