"""python: run model-written or workflow Python in the OS sandbox, and the `python` tool that wraps it.

Each run is a fresh interpreter in a bubblewrap jail (isolation.py): an unprivileged uid, new namespaces, a
read-only root holding only the interpreter and its stdlib, a private tmpfs working directory, no network, a
seccomp filter and kernel rlimits. The parent adds what only it can: a wall-clock limit (the whole jail is
killed when it passes) and reading the output back with a cap and a truthful note about what was cut.

Where the jail cannot be set up, `run_python` raises `CodeExecutionRefused` with one line naming what is
missing. It never falls back to running unconfined on its own: only `unsafe=True` (the `--unsafe-code`
options) does that, and then every such run logs a warning. Threat model and limits: docs/security.md.
Not for: building the jail itself (isolation.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from athanor.agent.isolation import WORKDIR, Limits, bwrap_command, jail_problem, outside_uid, seccomp_filter
from athanor.agent.tools import FunctionTool, ToolError
from athanor.errors import AthanorError

log = logging.getLogger("athanor.sandbox")
MAIN = WORKDIR + "/main.py"

# The jail's first code: cap processes (the kernel counts RLIMIT_NPROC per user namespace, so this is set
# inside; it cannot be raised again without CAP_SYS_RESOURCE), then run the user's file as __main__.
_BOOT = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_NPROC, ({nproc}, {nproc}))
sys.argv = [{main!r}]
sys.dont_write_bytecode = True
runpy.run_path({main!r}, run_name="__main__")
"""


class CodeExecutionRefused(AthanorError):
    """The OS sandbox is not available here, so code is not run (the message says what is missing)."""


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool = False
    stopped: str = ""  # why the kernel or the parent stopped the code, in words ("" when it ended by itself)
    stdout_bytes: int = 0  # how much the code wrote to stdout (stdout holds at most max_output_bytes of it)

    def as_observation(self) -> str:
        parts = [self.stdout.rstrip()]
        if self.stderr.strip():
            parts.append("stderr:\n" + self.stderr.rstrip())
        if self.timed_out:
            parts.append("killed: wall-time limit exceeded")
        elif self.stopped:
            parts.append(f"stopped: {self.stopped}")
        elif self.returncode:
            parts.append(f"exit status {self.returncode}")
        return "\n".join(p for p in parts if p) or "(no output; use print() to show results)"


def run_python(code: str, *, timeout_s: float = 10.0, memory_mb: int = 512, max_output_bytes: int = 20_000,
               max_file_bytes: int = 16 * 2**20, max_processes: int = 8, unsafe: bool = False) -> SandboxResult:
    """Run `code` as __main__ in a fresh jailed interpreter; see the module docstring.

    unsafe: where the jail is unavailable, run the code unconfined (own process and rlimits only) with a
    warning instead of refusing; where the jail works it is used all the same."""
    limits = _limits(timeout_s, memory_mb, max_file_bytes, max_processes)
    problem = jail_problem()
    if problem and unsafe:
        log.warning("running code UNCONFINED (--unsafe-code; the OS sandbox is unavailable: %s): it can read and "
                    "change everything this process can", problem)
        return _run(code, timeout_s, limits, max_output_bytes, jailed=False)
    if problem:
        raise CodeExecutionRefused(f"code execution refused: the OS sandbox is unavailable: {problem} "
                                   "(--unsafe-code runs code unconfined)")
    return run_jailed(code, timeout_s=timeout_s, limits=limits, max_output_bytes=max_output_bytes)


def run_jailed(code: str, *, timeout_s: float, limits: Limits | None = None,
               max_output_bytes: int = 20_000) -> SandboxResult:
    """Run `code` in the jail without checking first that the jail works (raises JailUnavailable)."""
    return _run(code, timeout_s, limits or Limits(cpu_seconds=int(timeout_s) + 1), max_output_bytes, jailed=True)


def _limits(timeout_s: float, memory_mb: int, max_file_bytes: int, max_processes: int) -> Limits:
    return Limits(cpu_seconds=int(timeout_s) + 1, memory_mb=memory_mb, max_file_bytes=max_file_bytes,
                  max_processes=max_processes)


def _run(code: str, timeout_s: float, limits: Limits, max_output_bytes: int, *, jailed: bool) -> SandboxResult:
    root = Path(tempfile.mkdtemp(prefix="athanor-py-"))
    try:
        (root / "main.py").write_text(code)
        with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err, \
                open(root / "main.py", "rb") as main:
            proc = _start(root, main, out, err, limits, jailed)
            timed_out = _wait(proc, timeout_s)
        stdout, out_note = _read_capped(root / "stdout", max_output_bytes)
        stderr, _ = _read_capped(root / "stderr", max_output_bytes)
        stopped = _why_stopped(proc.returncode, limits, timed_out, jailed)
        if not stopped and (root / "stdout").stat().st_size >= limits.max_file_bytes:
            stopped = f"output reached the {limits.max_file_bytes:,}-byte file-size limit"
        return SandboxResult(stdout + out_note, stderr, proc.returncode, timed_out, stopped,
                             (root / "stdout").stat().st_size)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _start(root: Path, main, out, err, limits: Limits, jailed: bool) -> subprocess.Popen:
    if not jailed:
        workdir = root / "work"
        workdir.mkdir()
        shutil.copy(root / "main.py", workdir / "main.py")
        boot = _BOOT.format(nproc=limits.max_processes, main=str(workdir / "main.py"))
        cmd = [*_prlimit(limits), sys.executable, "-I", "-c", boot]
        return subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env={"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8"},
                                start_new_session=True)
    bpf = root / "seccomp.bpf"
    bpf.write_bytes(seccomp_filter())
    with open(bpf, "rb") as seccomp:
        cmd = bwrap_command(limits, seccomp.fileno(), {MAIN: main.fileno()})
        cmd += ["-c", _BOOT.format(nproc=limits.max_processes, main=MAIN)]
        uid = outside_uid()
        user = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
        return subprocess.Popen(cmd, cwd="/", stdin=subprocess.DEVNULL, stdout=out, stderr=err, env={},
                                pass_fds=(seccomp.fileno(), main.fileno()), start_new_session=True, **user)


def _prlimit(limits: Limits) -> list[str]:
    exe = shutil.which("prlimit")
    return [exe, f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}", f"--as={limits.memory_mb * 2**20}",
            f"--fsize={limits.max_file_bytes}", "--core=0"] if exe else []


def _wait(proc: subprocess.Popen, timeout_s: float) -> bool:
    try:
        proc.wait(timeout=timeout_s)
        return False
    except subprocess.TimeoutExpired:
        return True
    finally:  # the whole group; inside the jail, bwrap's --die-with-parent and the PID namespace do the rest
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()


def _why_stopped(returncode: int | None, limits: Limits, timed_out: bool, jailed: bool) -> str:
    """The kernel's stop in words, from the exit status (bwrap reports a signal as 128 + number)."""
    if timed_out or returncode is None:
        return ""
    sig = -returncode if returncode < 0 else returncode - 128 if jailed and returncode > 128 else 0
    if sig == signal.SIGXFSZ:
        return f"output or a file passed the {limits.max_file_bytes:,}-byte file-size limit"
    if sig == signal.SIGXCPU:
        return f"CPU-time limit of {limits.cpu_seconds} s exceeded"
    if sig == signal.SIGKILL:
        return f"killed (SIGKILL: the CPU-time hard limit of {limits.cpu_seconds + 1} s, or out of memory)"
    try:
        return f"signal {signal.Signals(sig).name}" if sig else ""
    except ValueError:  # a real-time signal has no name
        return f"signal {sig}"


def _read_capped(path: Path, limit: int) -> tuple[str, str]:
    """(the first `limit` bytes as text, a note saying how much was cut or "")."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        data = f.read(limit)
    text = data.decode("utf-8", errors="replace")
    if size <= limit:
        return text, ""
    return text, f"\n... (output truncated: {size:,} bytes written, the first {limit:,} shown)"


def python_tool(timeout_s: float = 10.0, memory_mb: int = 512, unsafe: bool = False) -> FunctionTool:
    """The `python` tool: runs a script, returns what it printed (and errors)."""

    def run(code: str) -> str:
        if not code.strip():
            raise ToolError("empty code; give a Python script that print()s its result")
        try:
            result = run_python(_strip_fences(code), timeout_s=timeout_s, memory_mb=memory_mb, unsafe=unsafe)
        except CodeExecutionRefused as e:
            raise ToolError(str(e)) from None
        return result.as_observation()

    desc = (f"Run a Python 3 script in a sandbox (standard library only, no network, no files kept, "
            f"{timeout_s:g} s, {memory_mb} MB) and return what it prints. Use print() to show results.")
    params = {"type": "object", "properties": {"code": {"type": "string", "description": "Python source"}},
              "required": ["code"]}
    return FunctionTool("python", desc, params, run)


def _strip_fences(code: str) -> str:
    lines = code.strip().splitlines()
    if lines and lines[0].startswith("```"):
        lines = lines[1:-1] if lines[-1].strip() == "```" else lines[1:]
    return "\n".join(lines)
