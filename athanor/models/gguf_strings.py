"""A GGUF string array (a vocabulary, a merges list) kept as one UTF-8 buffer and offsets instead of a list of str.

Why: Gemma 3's 262k tokens as Python strings took ~28 MiB while the header was parsed, and left ~4 MiB of
fragmented heap behind once freed; the SentencePiece codec (text/spm.py) takes the buffer as it is.
For: `read_string_array(buf, pos, n)`, which models/gguf.py calls for arrays of at least LAZY_MIN strings, and
`StringArray`, a read-only sequence of str (items decoded on access) that the tokenizer builders index and iterate.
Not for: small arrays (plain lists), or anything but reading.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator, Sequence

import numpy as np

LAZY_MIN = 256  # arrays with fewer strings stay lists
_SIZE = struct.Struct("<Q")


class StringArray(Sequence[str]):
    """n strings as `blob[offsets[i]:offsets[i + 1]]` (UTF-8, checked when built)."""

    def __init__(self, blob: bytes, offsets: np.ndarray) -> None:
        self.blob, self.offsets = blob, offsets  # offsets: (n + 1,) int64
        self._view = memoryview(offsets)  # indexing it gives Python ints fast

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):  # an int or a slice, as list's
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("string index out of range")
        return self.blob[self._view[i] : self._view[i + 1]].decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        blob, view = self.blob, self._view
        for i in range(len(self)):
            yield blob[view[i] : view[i + 1]].decode("utf-8")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StringArray):
            return self.blob == other.blob and np.array_equal(self.offsets, other.offsets)
        return isinstance(other, Sequence) and not isinstance(other, str) and list(self) == list(other)

    __hash__ = None  # mutable-looking sequence semantics, as list

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in self[:3])
        return f"StringArray([{head}{', ...' if len(self) > 3 else ''}], n={len(self)})"


def read_string_array(buf, pos: int, n: int) -> tuple[StringArray, int]:
    """The n length-prefixed strings at buf[pos:] and the position after them. ValueError (the caller words it)
    for an array that runs past the end of the buffer or a string that is not UTF-8."""
    sizes, end = array("q"), len(buf)
    for _ in range(n):  # 1. sizes and the end, no objects kept
        (size,) = _SIZE.unpack_from(buf, pos)
        sizes.append(size)
        pos += 8 + size
        if pos > end:
            raise ValueError("a string array runs past the end of the file")
    lengths = np.frombuffer(sizes, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    blob = bytearray(int(offsets[-1]))
    src = pos - int(offsets[-1]) - 8 * n  # 2. copy the bytes, skipping each 8-byte size
    with memoryview(buf) as mv:
        at = 0
        for size in sizes:
            blob[at : at + size] = mv[src + 8 : src + 8 + size]
            at, src = at + size, src + 8 + size
    data = bytes(blob)
    del blob
    _check_utf8(data, offsets, lengths)
    return StringArray(data, offsets), pos


def _check_utf8(data: bytes, offsets: np.ndarray, lengths: np.ndarray) -> None:
    """Every string valid UTF-8: the whole buffer is, and no string starts inside a character (then each one's
    both ends are character boundaries)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"a string array holds invalid UTF-8 ({e.reason})") from None
    starts = offsets[:-1][lengths > 0]
    if starts.size and (np.frombuffer(data, dtype=np.uint8)[starts] & 0xC0 == 0x80).any():
        raise ValueError("a string array holds invalid UTF-8 (a string starts inside a character)")
