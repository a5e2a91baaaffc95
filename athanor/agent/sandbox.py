"""python: run model-written Python in a subprocess sandbox, and the tool that wraps it.

What it protects against (tested in tests/agent/test_sandbox.py):
- runaway time: a wall-time limit; the child runs in its own session/process group (and, where `unshare`
  works, its own PID namespace), all of which is killed on timeout; RLIMIT_CPU as a second stop;
- memory hogs: RLIMIT_AS (address space) -> MemoryError in the child;
- fork bombs: os.fork / subprocess / os.system / exec / posix_spawn / ctypes are refused by an audit hook, and
  RLIMIT_NPROC caps processes (the kernel ignores it for root: the hook and the PID namespace are the stop there);
- network: with `unshare` (Linux user + network namespaces) the child has no interface but a loopback of its
  own; in every case the audit hook refuses creating sockets, so unix sockets on the filesystem too;
- huge output: stdout/stderr go to files capped by RLIMIT_FSIZE and are truncated when read back;
- stray writes: opening a file for writing, and remove/rename/mkdir/chmod/symlink/..., outside the temporary
  working directory are refused by the hook;
- undoing the limits: they are set by the child's boot code before user code runs, and setrlimit/prlimit
  are refused afterwards (as root, the kernel alone would allow raising them).
The parent's environment is not passed on (API keys stay out); the interpreter runs with -I (no user site,
no PYTHON* variables). Cost of the hook: ctypes is refused, so numpy (which imports it) does not load.

What it does NOT protect against: Python audit hooks are not a security boundary (PEP 578): code that
reaches native code some other way (a C extension in site-packages, a CPython bug) can get past them.
Without `unshare`, network blocking is only that hook. The child runs as the same user, so it can READ any
file that user can read (no filesystem namespace or seccomp). For hostile code use a container or VM sandbox (gVisor, Firecracker) behind the
same Tool interface.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from athanor.agent.tools import FunctionTool, ToolError

# The child's first code: set resource limits, install the audit hook, then run the user's file as __main__.
# (Limits are set here rather than in a preexec_fn, which is unsafe when the parent process has threads.)
_BOOT = r'''
import json, os, resource, sys
for _name, _value in json.loads(sys.argv[3]).items():
    resource.setrlimit(getattr(resource, _name), (_value, _value))
_WORKDIR = os.path.realpath(sys.argv[2])
_BLOCKED = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
            "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "ctypes.dlopen",
            "ctypes.dlsym", "ctypes.cdata", "pty.spawn", "webbrowser.open", "resource.setrlimit",
            "resource.prlimit"}
_BLOCKED_IMPORTS = {"_posixsubprocess", "_ctypes", "ctypes", "_multiprocessing"}
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                "os.symlink", "os.link", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"}
def _outside(path):
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False
    path = os.path.realpath(os.fsdecode(path))
    return path != _WORKDIR and not path.startswith(_WORKDIR + os.sep)
def _hook(event, args):
    if event in _PATH_EVENTS:
        paths = args[:2] if event in ("os.rename", "os.symlink", "os.link", "shutil.copyfile", "shutil.move") else args[:1]
        if any(_outside(p) for p in paths):
            raise PermissionError(f"sandbox: {event} outside the working directory is not allowed")
    if event in _BLOCKED:
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "import" and args[0] in _BLOCKED_IMPORTS:
        raise PermissionError(f"sandbox: import {args[0]} is not allowed")
    if event == "open" and isinstance(args[0], (str, bytes)):
        mode, flags = args[1] or "", args[2] or 0
        if any(c in mode for c in "wax+") or flags & _WRITE:
            if _outside(args[0]):
                raise PermissionError(f"sandbox: writing outside the working directory is not allowed: {args[0]}")
sys.dont_write_bytecode = True
sys.addaudithook(_hook)
del sys.argv[:1], sys.argv[1:]
_code = compile(open(sys.argv[0]).read(), "main.py", "exec")
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
'''


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool = False

    def as_observation(self) -> str:
        parts = [self.stdout.rstrip()]
        if self.stderr.strip():
            parts.append("stderr:\n" + self.stderr.rstrip())
        if self.timed_out:
            parts.append("killed: wall-time limit exceeded")
        elif self.returncode:
            parts.append(f"exit status {self.returncode}")
        return "\n".join(p for p in parts if p) or "(no output; use print() to show results)"


def run_python(code: str, *, timeout_s: float = 10.0, memory_mb: int = 512, max_output_bytes: int = 20_000,
               max_file_bytes: int = 16 * 2**20, max_processes: int = 64) -> SandboxResult:
    """Run `code` in a fresh interpreter inside a temporary working directory; see the module docstring."""
    root = Path(tempfile.mkdtemp(prefix="athanor-py-"))
    try:
        workdir = root / "work"
        workdir.mkdir()
        (root / "boot.py").write_text(_BOOT)
        (workdir / "main.py").write_text(code)
        limits = json.dumps(_limits(memory_mb, timeout_s, max_file_bytes, max_processes))
        cmd = [*_isolation_prefix(), sys.executable, "-I", str(root / "boot.py"), str(workdir / "main.py"),
               str(workdir), limits]
        with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err:
            proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env=_child_env(workdir), start_new_session=True)
            timed_out = _wait(proc, timeout_s)
        read = functools.partial(_read_capped, limit=max_output_bytes)
        return SandboxResult(read(root / "stdout"), read(root / "stderr"), proc.returncode, timed_out)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait(proc: subprocess.Popen, timeout_s: float) -> bool:
    try:
        proc.wait(timeout=timeout_s)
        return False
    except subprocess.TimeoutExpired:
        return True
    finally:
        try:  # the whole group: anything the child started dies with it
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()


def _limits(memory_mb: int, timeout_s: float, max_file_bytes: int, max_processes: int) -> dict[str, int]:
    """setrlimit values (soft = hard) the child applies to itself before any user code runs."""
    return {"RLIMIT_AS": memory_mb * 2**20, "RLIMIT_CPU": int(timeout_s) + 1, "RLIMIT_FSIZE": max_file_bytes,
            "RLIMIT_CORE": 0, "RLIMIT_NPROC": max_processes}


def _child_env(workdir: Path) -> dict:
    return {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1"}


@functools.lru_cache(maxsize=1)
def _isolation_prefix() -> tuple[str, ...]:
    """`unshare` into new user, network and PID namespaces when this kernel allows it (checked once)."""
    exe = shutil.which("unshare")
    cmd = (exe, "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child") if exe else ()
    if not cmd:
        return ()
    try:
        ok = subprocess.run([*cmd, "true"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return cmd if ok else ()


def network_isolated() -> bool:
    """True when the child gets its own network namespace (not just the audit hook)."""
    return bool(_isolation_prefix())


def _read_capped(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n... (output truncated)" if len(data) > limit else "")


def python_tool(timeout_s: float = 10.0, memory_mb: int = 512) -> FunctionTool:
    """The `python` tool: runs a script, returns what it printed (and errors)."""

    def run(code: str) -> str:
        if not code.strip():
            raise ToolError("empty code; give a Python script that print()s its result")
        return run_python(_strip_fences(code), timeout_s=timeout_s, memory_mb=memory_mb).as_observation()

    desc = (f"Run a Python 3 script in a sandbox (no network, {timeout_s:g} s, {memory_mb} MB) and return what "
            "it prints. Use print() to show results.")
    params = {"type": "object", "properties": {"code": {"type": "string", "description": "Python source"}},
              "required": ["code"]}
    return FunctionTool("python", desc, params, run)


def _strip_fences(code: str) -> str:
    lines = code.strip().splitlines()
    if lines and lines[0].startswith("```"):
        lines = lines[1:-1] if lines[-1].strip() == "```" else lines[1:]
    return "\n".join(lines)
