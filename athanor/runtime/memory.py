"""The process's resident memory, as Linux reports it, and handing freed heap memory back to the system.

For: `process_memory()` (VmRSS, VmHWM peak, RssAnon: the process's own pages, RssFile: pages of mapped files
such as torch's shared libraries and a GGUF's weights), which the memory tests read, and
`release_free_heap()`, which `LLM` calls once a model is loaded: building a 262k-token tokenizer frees tens
of MiB of Python and Rust temporaries that glibc would otherwise keep in its heap for the life of the process.
Not for: sizing the KV cache (engine/), or anything on a hot path (malloc_trim walks the whole heap).
"""

from __future__ import annotations

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


def release_free_heap() -> bool:
    """Return the free pages of glibc's heaps to the system (athanor/heap.py), after freeing what only reference
    cycles held; True when glibc did release some. Memory still in use is untouched."""
    from athanor.heap import trim_heap

    gc.collect()  # garbage held only by reference cycles is freed first
    return trim_heap()
