"""Build and load athanor's small C kernel files (nn/qkernels.c, nn/cpu_ops.c) at first use.

Why: no build step and no wheel per platform. `load(source)` compiles the file with the system C compiler
(`cc`, or $CC) into a cache keyed by the source, the headers it includes with quotes, and the flags
(`$ATHANOR_KERNEL_CACHE`, else `$ATHANOR_HOME/cache/kernels`, ATHANOR_HOME defaulting to ~/.athanor), once per machine, and loads it with
ctypes (which releases the GIL during calls). The test suite points ATHANOR_KERNEL_CACHE at a temp dir.
Racing processes are fine: each builds into a temp file and renames it into place.

Not for: deciding whether a kernel is used (its module does), or anything but x86-64 with AVX2/FMA/F16C.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-ffp-contract=off", "-shared", "-fPIC"]
PORTABLE_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-shared", "-fPIC"]  # plain C paths (tests, non-x86)


def cache_dir() -> Path:
    if os.environ.get("ATHANOR_KERNEL_CACHE"):
        return Path(os.environ["ATHANOR_KERNEL_CACHE"])
    from athanor.home import athanor_home

    return athanor_home() / "cache" / "kernels"


def compiler() -> str | None:
    """The C compiler the kernels are built with ($CC, cc or gcc), or None."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def cpu_reason() -> str | None:
    """Why this CPU cannot run the kernels (one line), or None."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"athanor's CPU kernels need x86-64 with AVX2, this is {platform.machine()}"
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "cannot read CPU flags from /proc/cpuinfo"
    missing = [f for f in ("avx2", "fma", "f16c") if f not in flags.split()]
    return f"CPU lacks {', '.join(missing)}" if missing else None


_LOCAL_INCLUDE = re.compile(rb'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def _source_bytes(source_path: Path, seen: set[Path] | None = None) -> bytes:
    """The file's bytes followed by those of every header it includes with quotes (`#include "x.h"`, next to
    it), recursively: a changed shared header must change the cache key too."""
    seen = set() if seen is None else seen
    seen.add(source_path)
    source = source_path.read_bytes()
    out = [source]
    for name in _LOCAL_INCLUDE.findall(source):
        header = source_path.parent / name.decode()
        if header not in seen and header.is_file():
            out.append(_source_bytes(header, seen))
    return b"\0".join(out)


def _compile(cc: str, source_path: Path, flags: list[str]) -> Path:
    source = _source_bytes(source_path)
    key = hashlib.sha256(source + " ".join([cc, *flags]).encode()).hexdigest()[:16]
    target = cache_dir() / f"{source_path.stem}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *flags, str(source_path), "-o", tmp], check=False, capture_output=True,
                              text=True, timeout=300)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{cc} failed on {source_path.name}: {last}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


AVX512_VNNI_FLAGS = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"]


def has_cpu_flags(*names: str) -> bool:
    """This CPU lists every one of these /proc/cpuinfo flags (e.g. "avx512_vnni")."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return False
    return set(names) <= set(flags.split())


def load(source_path: Path, portable: bool = False, extra: tuple[str, ...] = ()) -> tuple[ctypes.CDLL | None, str | None]:
    """(library, None), or (None, one line saying why not). Callers cache the result.
    portable: build without AVX2/FMA/F16C (for sources with plain C fallbacks); no CPU check.
    extra: more flags on top of the AVX2 ones (e.g. AVX512_VNNI_FLAGS; the caller checks the CPU has them)."""
    reason = None if portable else cpu_reason()
    if reason:
        return None, reason
    cc = compiler()
    if not cc:
        return None, "no C compiler found (install gcc, or set CC)"
    try:
        return ctypes.CDLL(str(_compile(cc, source_path, PORTABLE_FLAGS if portable else FLAGS + list(extra)))), None
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return None, f"cannot build {source_path.name}: {e}"
