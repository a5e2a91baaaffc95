"""The OS sandbox against each escape class: every attempt runs in the real jail and must fail.

Each test states the attack, runs it, and checks both what the code saw and that the host is unchanged
(files, listeners, processes). docs/security.md lists the same classes with the limit that stops each.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from athanor.agent import isolation
from athanor.agent.isolation import SANDBOX_UID, Limits, jail_problem
from athanor.agent.sandbox import CodeExecutionRefused, python_tool, run_jailed, run_python
from athanor.agent.tools import ToolError


@pytest.fixture(autouse=True, scope="module")
def _jail_works():
    problem = jail_problem()
    assert problem is None, f"the OS sandbox must work where the suite runs (make install sets it up): {problem}"


def run(code: str, **kw):
    return run_python(textwrap.dedent(code), **kw)


def test_runs_as_nobody_in_a_private_working_directory():
    r = run("""
        import os, sys
        open('out.txt', 'w').write('hi')
        print(open('out.txt').read(), os.getcwd(), os.getuid(), os.getgid(), os.getgroups(), os.getpid() < 10)
        print(sorted(os.listdir('/')))
        print([p for p in sys.path if 'packages' in p and os.path.isdir(p) and os.listdir(p)])
    """)
    assert r.returncode == 0 and not r.timed_out, r.stderr
    first, root, packages = r.stdout.splitlines()
    assert first == f"hi /work {SANDBOX_UID} {SANDBOX_UID} [] True"
    assert set(eval(root)) <= {"work", "tmp", "proc", "dev", "usr", "lib", "lib64"}  # no /etc, /root, /home
    assert packages == "[]"  # no site-packages or dist-packages with anything in them


def test_python_tool_returns_output_and_errors():
    py = python_tool(timeout_s=5)
    assert py.call({"code": "```python\nprint(17*23)\n```"}) == "391"
    out = py.call({"code": "1/0"})
    assert "ZeroDivisionError" in out and "exit status 1" in out
    assert "no output" in py.call({"code": "x = 1"})


def test_only_the_standard_library_is_importable():
    r = run("import torch")
    assert "ModuleNotFoundError" in r.stderr
    r = run("import json, sqlite3, decimal, ctypes, re; print('stdlib ok')")
    assert r.stdout.strip() == "stdlib ok", r.stderr


# --- guard-state tampering: there is no in-process guard to switch off -------------------------------------


def test_tampering_with_interpreter_state_gains_nothing(tmp_path):
    marker = tmp_path / "pwned"
    r = run(f"""
        import sys, os, builtins, subprocess
        sys.modules.clear(); sys.audit = lambda *a: None  # what undid the old audit-hook guard
        builtins.__import__ = __import__
        results = []
        for attempt in (lambda: os.system('touch {marker}'),
                        lambda: subprocess.run(['/bin/sh', '-c', 'touch {marker}']).returncode,
                        lambda: os.execv('/bin/sh', ['sh', '-c', 'touch {marker}'])):
            try:
                results.append(attempt())
            except OSError as e:
                results.append(type(e).__name__)
        print(results, os.getuid())
    """)
    assert not marker.exists()
    assert r.stdout.strip().endswith(str(SANDBOX_UID)), r.stderr
    assert "FileNotFoundError" in r.stdout  # no shell exists inside


def test_ctypes_reaches_only_a_powerless_kernel_interface(tmp_path):
    marker = tmp_path / "pwned"
    r = run(f"""
        import ctypes, ctypes.util, os
        libc = ctypes.CDLL(None, use_errno=True)
        def call(name, *args):
            rc = getattr(libc, name)(*args)
            return (name, rc, os.strerror(ctypes.get_errno()) if rc == -1 else '')
        print(call('setuid', 0))
        print(call('mount', b'none', b'/work', b'tmpfs', 0, None))
        print(call('unshare', 0x10000000))  # CLONE_NEWUSER
        print(call('ptrace', 16, 1, None, None))  # PTRACE_ATTACH to the jail's init
        print(call('syscall', 41, 2, 1, 0))  # raw socket(AF_INET, SOCK_STREAM)
        print(call('open', {str(marker).encode()!r}, 0o101, 0o644))
    """)
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 6, r.stderr
    for line in lines:
        assert ", -1, '" in line, line  # every call failed
    assert "Address family not supported" in lines[4]
    assert not marker.exists()


_SYSCALLS = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for name, nr, args in {calls}:
    rc = libc.syscall(nr, *args)
    if rc == 0 and name == 'clone_newuser':
        os._exit(0)
    print(name, os.strerror(ctypes.get_errno()) if rc == -1 else 'ok')
"""
_HARMLESS = [("io_uring_setup", 425, (1, 0)), ("keyctl", 250, (0, 0)),  # EFAULT / EINVAL-like outside
             ("clone_newuser", 56, (0x10000000 | 17, 0, 0, 0, 0)), ("socket_inet", 41, (2, 1, 0))]


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="raw x86-64 system call numbers")
def test_the_seccomp_filter_is_what_refuses():
    """The same harmless calls outside (a plain child process) and inside: only the filter makes them fail so."""
    out = subprocess.run([sys.executable, "-c", _SYSCALLS.format(calls=_HARMLESS)], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    outside = dict(line.split(" ", 1) for line in out.splitlines())
    assert outside["socket_inet"] == "ok" and outside["clone_newuser"] == "ok"
    assert "Operation not permitted" not in (outside["io_uring_setup"], outside["keyctl"])
    ptrace = [("ptrace", 101, (0, 0, 0, 0))]  # PTRACE_TRACEME: only ever tried inside
    inside = dict(line.split(" ", 1) for line in run(_SYSCALLS.format(calls=_HARMLESS + ptrace)).stdout.splitlines())
    assert inside == {"ptrace": "Operation not permitted", "io_uring_setup": "Operation not permitted",
                      "keyctl": "Operation not permitted", "clone_newuser": "Operation not permitted",
                      "socket_inet": "Address family not supported by protocol"}


# --- the file system ---------------------------------------------------------------------------------------


def test_dir_fd_and_openat_writes_cannot_leave_the_jail(tmp_path):
    """Writes through directory fds ('/', '.', '..' chains) to host paths; every target lies in tmp_path, and the
    one system file is opened without O_CREAT/O_TRUNC, so a failing jail would still harm nothing outside."""
    victim = tmp_path / "keep.txt"
    victim.write_text("keep")
    targets = [(str(victim), "root", os.O_TRUNC), (str(victim)[1:], "root", os.O_TRUNC),
               ("../../.." + str(tmp_path / "new"), "work", os.O_CREAT), (str(tmp_path / "new")[1:], "root", os.O_CREAT),
               ("usr/lib/python3.11/os.py", "root", 0)]
    r = run(f"""
        import os
        fds = {{'root': os.open('/', os.O_RDONLY | os.O_DIRECTORY), 'work': os.open('.', os.O_RDONLY | os.O_DIRECTORY)}}
        outcomes = []
        for path, base, flags in {targets!r}:
            try:
                os.close(os.open(path, os.O_WRONLY | flags, dir_fd=fds[base]))
                outcomes.append('wrote ' + path)
            except OSError as e:
                outcomes.append(e.strerror)
        print(outcomes)
    """)
    outcomes = eval(r.stdout)
    assert outcomes[:4] == ["No such file or directory"] * 4, r.stdout + r.stderr
    assert outcomes[4] in ("Permission denied", "Read-only file system")  # owned by root outside, mounted read-only
    assert victim.read_text() == "keep" and not (tmp_path / "new").exists()


def test_proc_shows_no_host_process_and_host_secrets_are_absent(tmp_path):
    secret = "sk-athanor-secret-in-argv"
    victim = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", secret], stdin=subprocess.PIPE)
    try:
        r = run(f"""
            import os
            seen = []
            for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
                try:
                    seen.append(open(f'/proc/{{pid}}/cmdline', 'rb').read())
                except OSError:
                    pass
            print(len(seen), any(b{secret!r} in c for c in seen), os.path.exists('/proc/{victim.pid}/environ'))
            for path in ('/etc/shadow', '/etc/passwd', {os.environ['ATHANOR_HOME']!r}, '/root', {str(tmp_path)!r}):
                print(path, os.path.exists(path))
        """)
    finally:
        victim.communicate(b"")
    lines = r.stdout.strip().splitlines()
    count, leaked, _ = lines[0].split()
    assert int(count) <= 3 and leaked == "False", r.stdout  # the jail's own init and python only
    assert all(line.endswith(" False") for line in lines[1:]), r.stdout


def test_the_root_is_read_only_and_every_writable_place_is_size_capped():
    r = run("""
        import os, sys
        for path in (os.__file__, sys.executable, '/work/main.py'):  # opened for writing, never written
            try:
                open(path, 'r+b').close()
                print('opened', path)
            except OSError as e:
                print(e.strerror)
        for path in ('/dev/new-device-file', '/new-top-level'):
            try:
                open(path, 'x').close()
                print('created', path)
            except OSError as e:
                print(e.strerror)
        for scratch in ('/work', '/dev/shm', '/tmp'):  # 2 MB files: size caps, not the per-file limit
            try:
                for i in range(40):
                    open(f'{scratch}/fill{i}', 'wb').write(b'x' * (2 * 2**20))
                print(scratch, 'took 80 MB')
            except OSError as e:
                print(scratch, e.strerror)
    """)
    lines = r.stdout.splitlines()
    assert set(lines[:2]) <= {"Permission denied", "Read-only file system"}, r.stdout  # root's files, read-only mount
    assert lines[2:5] == ["Read-only file system"] * 3, r.stdout  # its own main.py, /dev, the root
    assert lines[5:] == [f"{d} No space left on device" for d in ("/work", "/dev/shm", "/tmp")], r.stdout


# --- network ------------------------------------------------------------------------------------------------


@pytest.fixture()
def listener():
    """A TCP server on the host's 127.0.0.1 that records whether anyone connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    hits, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                hits.append(1)
                conn.close()
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], hits
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize("code", [
    "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')",
    "import urllib.request\nprint(urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2).status)",
    "import socket\ns = socket.socket(socket.AF_INET6)\ns.connect(('::1', {port}))\nprint('connected')",
    "import socket\ns = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)\nprint('netlink')",
    "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0athanor-host-abstract')\nprint('connected')",
])
def test_no_network_at_all(listener, code):
    port, hits = listener
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind("\0athanor-host-abstract")  # an abstract unix socket is per network namespace
    abstract.listen()
    try:
        r = run_python(code.format(port=port), timeout_s=5)
    finally:
        abstract.close()
    assert r.returncode != 0 and "connected" not in r.stdout and "netlink" not in r.stdout
    assert "OSError" in r.stderr or "Error" in r.stderr
    assert hits == []  # the accept loop runs until teardown, so a late connection would still be counted


# --- resources ----------------------------------------------------------------------------------------------


def _jail_processes() -> list[int]:
    """Live host processes (zombies waiting for init to reap them are dead) running as a jail's outside uid."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if isolation._UID_BASE <= uid < isolation._UID_BASE + isolation._UID_SPAN and state != "Z":
            out.append(int(pid))
    return out


def _no_jail_processes_left() -> bool:
    deadline = time.monotonic() + 10
    while _jail_processes() and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the process table (SIGKILL is delivered asynchronously), not a server
    return _jail_processes() == []


@pytest.mark.parametrize("code", [
    "import os\nwhile True:\n    os.fork()",
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "import multiprocessing\nwhile True:\n    multiprocessing.Process(target=sum, args=([],)).start()",
])
def test_fork_bombs_are_capped_and_leave_nothing_behind(code):
    r = run_python(code, timeout_s=3)
    assert r.timed_out or "Resource temporarily unavailable" in r.stderr or r.returncode != 0
    assert _no_jail_processes_left()


def test_two_gigabyte_allocation_fails():
    r = run("x = bytearray(2 * 1024**3)\nprint('allocated')", memory_mb=256)
    assert "MemoryError" in r.stderr and "allocated" not in r.stdout


def test_infinite_loop_is_killed_at_the_wall_time_limit():
    r = run_python("while True:\n    pass", timeout_s=1.5)
    assert r.timed_out and "wall-time limit" in r.as_observation()
    assert _no_jail_processes_left()


def test_cpu_time_limit_stops_a_busy_loop_by_itself():
    r = run_jailed("while True:\n    pass", timeout_s=60, limits=Limits(cpu_seconds=1))
    assert not r.timed_out and "CPU-time limit of 1 s" in r.as_observation()


def test_ten_megabytes_of_output_are_capped_with_a_truthful_note():
    r = run("import sys\nsys.stdout.write('x' * (10 * 2**20))", max_output_bytes=20_000)
    assert r.stdout.startswith("x" * 20_000)
    assert r.stdout.endswith("(output truncated: 10,485,760 bytes written, the first 20,000 shown)")
    assert len(r.stdout) < 20_200


def test_endless_output_is_stopped_by_the_file_size_limit():
    r = run("while True:\n    print('x' * 1000)", timeout_s=30, max_output_bytes=5000, max_file_bytes=2**20)
    assert not r.timed_out and "output reached the 1,048,576-byte file-size limit" in r.as_observation()


def test_limits_cannot_be_raised_by_the_code():
    r = run("""
        import resource
        for name in ('RLIMIT_AS', 'RLIMIT_NPROC', 'RLIMIT_CPU', 'RLIMIT_FSIZE'):
            limit = getattr(resource, name)
            try:
                resource.setrlimit(limit, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                print('raised', name)
            except (ValueError, OSError) as e:
                print('refused', name)
    """)
    assert r.stdout.split().count("refused") == 4 and "raised" not in r.stdout, r.stdout + r.stderr


def test_parent_environment_secrets_are_not_inherited(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    r = run("import os\nprint(sorted(os.environ))\nprint(os.environ.get('OPENAI_API_KEY'))")
    assert "sk-secret-value" not in r.stdout and "ATHANOR_HOME" not in r.stdout


# --- no jail: refused, or unconfined only when asked ---------------------------------------------------------


def test_without_bubblewrap_code_is_refused_with_one_line(monkeypatch):
    monkeypatch.setattr(isolation, "_JAIL_WORKS", [])
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(CodeExecutionRefused) as e:
        run_python("print('ran')")
    message = str(e.value)
    assert "\n" not in message and "bubblewrap (bwrap) is not installed" in message and "--unsafe-code" in message
    with pytest.raises(ToolError, match="code execution refused"):
        python_tool().call({"code": "print('ran')"})


def test_unsafe_code_runs_unconfined_with_a_warning_each_time(monkeypatch, caplog):
    monkeypatch.setattr(isolation, "_JAIL_WORKS", [])
    monkeypatch.setenv("PATH", "/nonexistent")
    with caplog.at_level(logging.WARNING, logger="athanor.sandbox"):
        for _ in range(2):
            assert run_python("import os; print(os.getuid())", unsafe=True).stdout.strip() == str(os.getuid())
    assert sum("UNCONFINED" in rec.getMessage() for rec in caplog.records) == 2


# --- every class at once, as the other routes into the jail run it ----------------------------------------------


@pytest.fixture()
def host_secret_process():
    """A host process with a secret on its command line (what `--api-key` on a server's argv looks like)."""
    secret = "sk-athanor-argv-secret"
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", secret], stdin=subprocess.PIPE)
    yield secret
    proc.communicate(b"")


def test_every_escape_class_fails_in_one_program(tmp_path, listener, host_secret_process):
    from tests.agent.escapes import as_program, assert_refused, escape_script

    port, hits = listener
    script = escape_script(marker=str(tmp_path / "pwned"), port=port, server_port=port, server_pid=os.getpid(),
                           secret=host_secret_process, home=os.environ["ATHANOR_HOME"])
    r = run_python(as_program(script), timeout_s=20)
    assert r.returncode == 0, r.stderr
    assert_refused(r.stdout.strip().splitlines()[-1])
    assert not (tmp_path / "pwned").exists() and hits == []
