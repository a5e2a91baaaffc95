"""The OS jail that sandboxed Python runs in: a bubblewrap command line, a seccomp filter, resource limits.

Every run gets a new process as an unprivileged user (a fresh uid when we are root), inside new user, PID,
network, mount, IPC, UTS and cgroup namespaces (`bwrap --unshare-all`). Its root file system is a read-only
view of the interpreter, its standard library and the shared libraries those need, plus a private tmpfs
working directory (`/work`), a private `/tmp` and `/dev/shm` (each a size-capped tmpfs), a fresh `/proc`
that shows only the jail's own processes and a minimal, read-only `/dev`. Nothing else of the host exists inside: no model store, no ATHANOR_HOME, no
`/etc`, no shell. A seccomp filter (built with libseccomp through `pyseccomp`) refuses the system calls that
widen a jail (mount, namespaces, ptrace, bpf, keyrings, io_uring, kernel modules, ...) and every socket family
but AF_UNIX. rlimits (CPU seconds, address space, file size, no core files) are set by `prlimit` before bwrap
starts; the process count is set inside the jail before user code runs (the kernel counts it per namespace).

When any part of this cannot be set up, `jail_problem()` says which, in one line, and callers refuse to run
code. docs/security.md has the threat model. Not for: running the code or reading its output (sandbox.py).
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SANDBOX_UID = 65534  # who the code is inside the jail ("nobody"); outside it is a fresh unprivileged uid
_UID_BASE, _UID_SPAN = 1_500_000_000, 1 << 20  # outside uids for jails when we are root: used by nothing else
WORKDIR = "/work"

# System calls the jailed code never needs and that an attacker uses to widen a jail or attack the kernel.
_DENIED = (
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "ptrace", "process_vm_readv", "process_vm_writev",
    "pidfd_getfd", "kcmp", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "iopl",
    "ioperm", "personality", "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "fanotify_init",
    "memfd_secret", "uselib", "vhangup", "mknod", "mknodat",
)
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
_AF_UNIX = 1


@dataclass(frozen=True)
class Limits:
    """What one run may use. Every field is enforced by the kernel, not by Python."""

    cpu_seconds: int = 11  # RLIMIT_CPU: SIGXCPU after this much CPU time, SIGKILL one second later
    memory_mb: int = 512  # RLIMIT_AS: address space; allocations past it fail with MemoryError
    max_file_bytes: int = 16 * 2**20  # RLIMIT_FSIZE: largest file (stdout/stderr included); past it: SIGXFSZ
    max_processes: int = 8  # RLIMIT_NPROC (threads count too) inside the jail's user namespace: EAGAIN past it
    workdir_bytes: int = 64 * 2**20  # size of each writable tmpfs: /work, /tmp, /dev/shm


class JailUnavailable(RuntimeError):
    """The OS sandbox cannot be set up here; the message says what is missing."""


@functools.lru_cache(maxsize=1)
def _interpreter() -> tuple[str, tuple[str, ...]]:
    """(python executable, read-only paths it needs), for a stdlib-only interpreter the jail's uid can read.

    ATHANOR_SANDBOX_PYTHON picks one; else the system's python3 (a pyenv/venv python under /root is not
    reachable by an unprivileged uid), else the interpreter running athanor."""
    candidates = [os.environ.get("ATHANOR_SANDBOX_PYTHON"), "/usr/bin/python3", "/usr/local/bin/python3",
                  os.path.realpath(os.sys.executable)]
    for exe in filter(None, candidates):
        if os.path.isfile(exe) and os.access(exe, os.X_OK):
            exe = os.path.realpath(exe)
            return exe, _runtime_paths(exe)
    raise JailUnavailable("no python3 interpreter found for the sandbox (set ATHANOR_SANDBOX_PYTHON)")


def _runtime_paths(exe: str) -> tuple[str, ...]:
    """The interpreter, its stdlib directories and the directories of every shared library they load."""
    probe = "import sysconfig as s; p = s.get_paths(); print(p['stdlib']); print(p['platstdlib'])"
    out = subprocess.run([exe, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=30, check=True)
    stdlib = [line for line in out.stdout.splitlines() if line]
    binaries = [exe, *[str(p) for d in stdlib for p in Path(d, "lib-dynload").glob("*.so")]]
    paths = {exe, *stdlib}
    for lib in _shared_libraries(binaries):
        paths.update({os.path.dirname(lib), os.path.dirname(os.path.realpath(lib))})
    return tuple(sorted(paths))


def _shared_libraries(binaries: list[str]) -> set[str]:
    """Paths of the shared libraries (and the loader) that `binaries` link to, as `ldd` resolves them."""
    ldd = shutil.which("ldd")
    if not ldd:
        raise JailUnavailable("ldd is missing, so the sandbox cannot tell which libraries python needs")
    found = set()
    for binary in binaries:
        out = subprocess.run([ldd, binary], capture_output=True, text=True, timeout=30, check=False).stdout
        for line in out.splitlines():
            path = line.split("=>")[-1].split("(")[0].strip()
            if path.startswith("/"):
                found.add(path)
    return found


@functools.lru_cache(maxsize=1)
def seccomp_filter() -> bytes:
    """The compiled BPF program bwrap loads (`--seccomp FD`); allow by default, refuse `_DENIED` with EPERM."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as e:  # OSError: libseccomp.so.2 is not installed
        raise JailUnavailable(f"seccomp is unavailable ({e}); install libseccomp2 and pyseccomp") from None
    f = sc.SyscallFilter(sc.ALLOW)
    for name in _DENIED:
        try:
            f.add_rule(sc.ERRNO(1), name)
        except (ValueError, OSError):  # a call this architecture does not have
            pass
    f.add_rule(sc.ERRNO(97), "socket", sc.Arg(0, sc.NE, _AF_UNIX))  # EAFNOSUPPORT: no network at all
    f.add_rule(sc.ERRNO(97), "socketpair", sc.Arg(0, sc.NE, _AF_UNIX))
    for flag in _NAMESPACE_FLAGS:  # one rule per flag: MASKED_EQ tests all bits of its mask at once
        f.add_rule(sc.ERRNO(1), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(38), "clone3")  # ENOSYS: its flags sit behind a pointer, so libc falls back to clone
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


def outside_uid() -> int | None:
    """A fresh uid for one run when we are root (so RLIMIT_NPROC and file ownership bind), else None."""
    return _UID_BASE + secrets.randbelow(_UID_SPAN) if os.geteuid() == 0 else None


def bwrap_command(limits: Limits, seccomp_fd: int, files: dict[str, int]) -> list[str]:
    """The prlimit + bwrap command line; `files` maps jail paths to readable fds whose bytes appear there."""
    bwrap, prlimit = shutil.which("bwrap"), shutil.which("prlimit")
    if not bwrap:
        raise JailUnavailable("bubblewrap (bwrap) is not installed (apt-get install bubblewrap)")
    if not prlimit:
        raise JailUnavailable("prlimit (util-linux) is not installed, so resource limits cannot be set")
    exe, paths = _interpreter()
    cmd = [prlimit, f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}", f"--as={limits.memory_mb * 2**20}",
           f"--fsize={limits.max_file_bytes}", "--core=0", bwrap,
           "--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(SANDBOX_UID),
           "--gid", str(SANDBOX_UID), "--hostname", "sandbox", "--die-with-parent", "--new-session",
           "--clearenv", "--cap-drop", "ALL"]
    for path in paths:
        cmd += ["--ro-bind", path, path]
    hidden = [os.path.join(p, inner) for p in paths for inner in ("site-packages", "dist-packages")
              if os.path.isdir(os.path.join(p, inner))]  # stdlib only: packages installed beside it disappear
    for path in hidden:
        cmd += ["--size", "4096", "--tmpfs", path]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    for scratch in ("/dev/shm", "/tmp", WORKDIR):  # every writable place is a tmpfs of bounded size
        cmd += ["--size", str(limits.workdir_bytes), "--tmpfs", scratch]
    for inner, fd in files.items():
        cmd += ["--ro-bind-data", str(fd), inner]
    for path in ["/", "/dev", *hidden]:
        cmd += ["--remount-ro", path]
    cmd += ["--chdir", WORKDIR, "--seccomp", str(seccomp_fd)]
    for key, value in jail_env().items():
        cmd += ["--setenv", key, value]
    return [*cmd, "--", exe, "-I"]


def jail_env() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": WORKDIR, "TMPDIR": "/tmp", "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"}


_JAIL_WORKS: list[bool] = []  # set once a trial run succeeded; failures are checked again next time


def jail_problem() -> str | None:
    """None when a trial run inside the jail works; else one line saying what is missing."""
    from athanor.agent.sandbox import run_jailed

    if _JAIL_WORKS:
        return None
    try:
        result = run_jailed("import os; print(os.getuid())", timeout_s=30)
    except JailUnavailable as e:
        return str(e)
    if result.stdout.strip() != str(SANDBOX_UID):
        detail = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        return f"bubblewrap could not start the sandbox here ({detail[:200]})"
    _JAIL_WORKS.append(True)
    return None
