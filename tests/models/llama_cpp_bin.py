"""Where llama.cpp's command-line tools are, for the tests that compare with them (skipped when absent).

LLAMA_CPP_BIN (a directory) wins; else the build vendored in llama-cpp-python's source on the dev machine; else
PATH. Not in CI: the tests that need these skip there."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

_DEV_BUILD = Path("/work/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin")


def llama_tool(name: str) -> Path:
    """Path of llama.cpp's `name` (llama-quantize, llama-imatrix, ...), or skip the test."""
    for d in filter(None, (os.environ.get("LLAMA_CPP_BIN"), str(_DEV_BUILD))):
        if (Path(d) / name).is_file():
            return Path(d) / name
    found = shutil.which(name)
    if not found:
        pytest.skip(f"llama.cpp's {name} is not built here (set LLAMA_CPP_BIN)")
    return Path(found)


def run_tool(name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    tool = llama_tool(name)
    env = dict(os.environ, LD_LIBRARY_PATH=f"{tool.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    r = subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return r
