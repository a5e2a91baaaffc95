"""The process's resident memory, as Linux reports it, and handing freed heap memory back to the system.

For: `process_memory()` (VmRSS, VmHWM peak, RssAnon: the process's own pages, RssFile: pages of mapped files
such as torch's shared libraries and a GGUF's weights), which the memory tests read, and
`release_free_heap()`, which `LLM` calls once a model is loaded: building a 262k-token tokenizer frees tens
of MiB of Python and Rust temporaries that glibc would otherwise keep in its heap for the life of the process.
Not for: sizing the KV cache (engine/), or anything on a hot path (malloc_trim walks the whole heap).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc

_KEYS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


def process_memory() -> dict[str, int]:
    """{VmRSS, VmHWM, RssAnon, RssFile, RssShmem} of this process in bytes; {} where /proc is not Linux's."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in _KEYS:
                    out[key] = int(rest.split()[0]) * 1024  # reported in kB
    except OSError:
        return {}
    return out


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


def release_free_heap() -> bool:
    """Return the free pages of glibc's heaps to the system (malloc_trim(0)); True when glibc did release some.
    Memory still in use is untouched; later allocations simply fault fresh pages in."""
    gc.collect()  # garbage held only by reference cycles is freed first
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False
