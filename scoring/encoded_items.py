"""A batch's encoded images where Arrow read them: one byte buffer and each row's byte range, with
no Python object per row until one is asked for.

    items = EncodedItems.from_arrow(column)     # a binary / large_binary Array or ChunkedArray
    len(items), items[i]                        # bytes, or None for a null cell (made on demand)
    items.data, items.starts, items.ends        # the buffer (uint8, no copy) and each row's range
    items.pointers()                            # each row's first byte's address, for native calls

Why: a GPU worker gives nvJPEG a batch of JPEGs as addresses and lengths, and reads their headers
with numpy over the same buffer (scoring.jpeg_header_batch), so the rows it decodes on the GPU never
become bytes objects, which cost time on the reader thread under the GIL that the decoder threads
need too. Everything else (Pillow,
nvImageCodec, decode processes) reads rows as bytes, made when asked: ``items[i]`` or ``list(items)``.

The object keeps the Arrow array alive, and with it the buffer that `pointers()` points into.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


class EncodedItems(Sequence):
    """Rows i = data[starts[i]:ends[i]] (bytes), or None where valid[i] is False."""

    def __init__(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray, valid: np.ndarray, owner=None):
        self.data = data
        self.starts = np.asarray(starts, np.int64)
        self.ends = np.asarray(ends, np.int64)
        self.valid = np.asarray(valid, bool)
        n = len(self.starts)
        if len(self.ends) != n or len(self.valid) != n:
            raise ValueError(f"starts, ends and valid differ in length: {n}, {len(self.ends)}, {len(self.valid)}")
        if n and (self.starts.min() < 0 or (self.ends < self.starts).any() or self.ends.max() > len(data)):
            raise ValueError(f"row ranges fall outside the {len(data)}-byte buffer")
        self._owner = owner  # what owns `data`'s memory (an Arrow array), kept alive with it

    @classmethod
    def from_arrow(cls, array) -> EncodedItems:
        """The rows of a binary or large_binary Array or ChunkedArray, without copying their bytes
        (a ChunkedArray of several chunks is combined first, which copies)."""
        if isinstance(array, pa.ChunkedArray):
            array = array.chunk(0) if array.num_chunks == 1 else array.combine_chunks()
        kind = array.type
        if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
            raise TypeError(f"EncodedItems needs a binary or large_binary array, got {kind}")
        n = len(array)
        if n == 0:
            return cls(np.empty(0, np.uint8), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, bool))
        _, offsets_buffer, data_buffer = array.buffers()
        offset_type = np.int64 if pa.types.is_large_binary(kind) else np.int32
        offsets = np.frombuffer(offsets_buffer, offset_type, count=n + 1,
                                offset=array.offset * np.dtype(offset_type).itemsize).astype(np.int64)
        data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.empty(0, np.uint8)
        valid = (array.is_valid().to_numpy(zero_copy_only=False) if array.null_count
                 else np.ones(n, bool))
        return cls(data, offsets[:-1], offsets[1:], valid, owner=array)

    @classmethod
    def from_list(cls, blobs: list) -> EncodedItems:
        """Bytes-like objects or None, packed into one new buffer (tests, and callers with lists)."""
        lengths = np.array([0 if b is None else len(b) for b in blobs], np.int64)
        ends = np.cumsum(lengths)
        data = np.frombuffer(b"".join(bytes(b) for b in blobs if b is not None), np.uint8)
        return cls(data, ends - lengths, ends, [b is not None for b in blobs])

    def joined(self, other: EncodedItems) -> EncodedItems:
        """These rows, then `other`'s, in one new buffer (their own buffers may be Arrow's of two
        files): only the rows' bytes are copied."""
        parts, starts, ends, at = [], [], [], 0
        for items in (self, other):
            lengths = items.lengths()
            parts.append(items._packed_bytes())
            ends.append(at + np.cumsum(lengths))
            starts.append(ends[-1] - lengths)
            at += int(lengths.sum())
        return EncodedItems(np.concatenate(parts), np.concatenate(starts), np.concatenate(ends),
                            np.concatenate([self.valid, other.valid]))

    def _packed_bytes(self) -> np.ndarray:
        """The rows' bytes one after another: one slice where they already are (Arrow's rows)."""
        if len(self) == 0:
            return np.empty(0, np.uint8)
        if (self.starts[1:] == self.ends[:-1]).all():
            return self.data[self.starts[0]: self.ends[-1]]
        return np.concatenate([self.data[a:b] for a, b in zip(self.starts.tolist(), self.ends.tolist())])

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return EncodedItems(self.data, self.starts[index], self.ends[index], self.valid[index], self._owner)
        if not self.valid[index]:
            return None
        return self.data[self.starts[index]: self.ends[index]].tobytes()

    def __iter__(self):
        data = self.data
        for start, end, valid in zip(self.starts.tolist(), self.ends.tolist(), self.valid.tolist()):
            yield data[start:end].tobytes() if valid else None

    def lengths(self) -> np.ndarray:
        return self.ends - self.starts

    def pointers(self) -> np.ndarray:
        """uint64 address of each row's first byte (valid while this object lives)."""
        return (self.starts + self.data.ctypes.data).astype(np.uint64)

    def __reduce__(self):
        # Pickled (to a decode process) as the rows' bytes alone, not the whole Arrow buffer.
        return EncodedItems.from_list, (list(self),)
