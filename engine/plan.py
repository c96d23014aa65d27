"""The plan file: a JSON header plus raw tensors, no pickle.

Layout (little-endian):

    offset 0   magic        8 bytes  b"BSPLAN\\r\\n"
           8   version      u32      FORMAT_VERSION of the writer
          12   reserved     u32      0
          16   header_len   u64      bytes of UTF-8 JSON
          24   data_len     u64      bytes of tensor data
          32   sha256       32 bytes over everything after the first 64 bytes
          64   header       JSON, then zero padding to a multiple of 64
               data         each tensor at a 64-byte aligned offset listed in the header

The header says what the plan is (model, inputs and outputs with shapes and dtypes, layers, the
device it was built for, the builder's version); `read_plan` checks magic, version, sizes and the
checksum, and says in the error which file and which check failed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import PlanFormatError
from kernels.dtypes import resolve

MAGIC = b"BSPLAN\r\n"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIIQQ32s")
_ALIGN = 64


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


@dataclasses.dataclass
class Plan:
    """A built model: the header (JSON-able dict) and the named tensors it refers to."""

    header: dict[str, Any]
    tensors: dict[str, np.ndarray]

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        blob = _encode(self.header, self.tensors)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, path)  # readers never see a half-written plan
        return path

    def to_bytes(self) -> bytes:
        return _encode(self.header, self.tensors)

    @property
    def inputs(self) -> list[dict]:
        return self.header["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self.header["outputs"]

    @property
    def layers(self) -> list[dict]:
        return self.header["layers"]


def _encode(header: dict[str, Any], tensors: dict[str, np.ndarray]) -> bytes:
    index = []
    offset = 0
    arrays = []
    for name, array in tensors.items():
        array = np.asarray(array, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        if array.dtype.kind in "OUSM" or array.dtype.fields:  # only pickle could store these
            raise PlanFormatError(f"tensor '{name}' has dtype {array.dtype}, which a plan cannot store")
        index.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape),
                      "offset": offset, "nbytes": array.nbytes})
        arrays.append((offset, array))
        offset = _aligned(offset + array.nbytes)
    full_header = dict(header, tensors=index)
    header_bytes = json.dumps(full_header, separators=(",", ":"), sort_keys=False).encode("utf-8")
    data = bytearray(offset)
    for start, array in arrays:
        data[start:start + array.nbytes] = array.reshape(-1).view(np.uint8).tobytes()
    header_block = header_bytes + b"\0" * (_aligned(_PREFIX.size + len(header_bytes)) - _PREFIX.size - len(header_bytes))
    digest = hashlib.sha256(header_block)
    digest.update(data)
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(header_bytes), len(data), digest.digest())
    return prefix + header_block + bytes(data)


def read_plan(path: str | os.PathLike) -> Plan:
    path = Path(path)
    if not path.exists():
        raise PlanFormatError(f"{path}: no such plan file")
    if path.is_dir():
        raise PlanFormatError(f"{path}: is a directory, not a plan file")
    return decode_plan(path.read_bytes(), str(path))


def decode_plan(blob: bytes, source: str = "<bytes>") -> Plan:
    if len(blob) < _PREFIX.size:
        raise PlanFormatError(f"{source}: only {len(blob)} bytes, too short to be a batchscore plan")
    magic, version, _, header_len, data_len, digest = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        hint = " (it looks like an ONNX model: build it first with `batchscore build`)" if blob[:1] == b"\x08" else ""
        raise PlanFormatError(f"{source}: not a batchscore plan (the file starts with {magic!r}){hint}")
    if version > FORMAT_VERSION:
        raise PlanFormatError(
            f"{source}: plan format version {version} is newer than this batchscore reads "
            f"(up to {FORMAT_VERSION}); upgrade batchscore or rebuild the plan with this version"
        )
    header_end = _PREFIX.size + header_len
    data_start = _aligned(header_end)
    expected = data_start + data_len
    if len(blob) != expected:
        state = "truncated" if len(blob) < expected else "has trailing bytes"
        raise PlanFormatError(f"{source}: the plan is {state}: {len(blob)} bytes, the header says {expected}")
    header_bytes = blob[_PREFIX.size:header_end]
    data = memoryview(blob)[data_start:expected]
    check = hashlib.sha256(memoryview(blob)[_PREFIX.size:])  # header, its padding and the data
    
    if check.digest() != digest:
        raise PlanFormatError(f"{source}: the plan is corrupted: its checksum does not match its contents")
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except ValueError as exc:  # only reachable if the writer itself was broken
        raise PlanFormatError(f"{source}: the plan header is not valid JSON: {exc}") from None
    tensors = {}
    for entry in header.pop("tensors", []):
        array = np.frombuffer(data, dtype=resolve(entry["dtype"]), count=_count(entry), offset=entry["offset"])
        tensors[entry["name"]] = array.reshape(tuple(entry["shape"]))
    return Plan(header, tensors)


def _count(entry: dict) -> int:
    return int(np.prod(entry["shape"], dtype=np.int64))
