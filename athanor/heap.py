"""Handing glibc's free heap pages back to the system (malloc_trim), for any room.

For: `trim_heap()`, which runtime/memory.release_free_heap calls once a model is loaded and the model runner calls
after its KV pool grows (each layer's old cache, written and then freed, would otherwise stay resident in glibc's
heap for the life of the process). Not for a hot path: malloc_trim walks every arena. Without glibc (musl, macOS,
Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def trim_heap() -> bool:
    """Return the free pages of glibc's heaps to the system (malloc_trim(0)); True when glibc did release some.
    Memory still in use is untouched; later allocations simply fault fresh pages in."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False
