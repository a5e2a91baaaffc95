"""The python tool's sandbox: escape attempts are refused or killed within the limits."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

from athanor.agent.sandbox import _isolation_prefix, network_isolated, python_tool, run_python


def test_runs_code_in_a_temporary_working_directory():
    r = run_python("import os\nopen('out.txt', 'w').write('hi')\nprint(open('out.txt').read(), os.getcwd())")
    assert r.returncode == 0 and not r.timed_out
    text, cwd = r.stdout.split()
    assert text == "hi" and "athanor-py-" in cwd
    assert not __import__("os").path.exists(cwd)  # removed afterwards


def test_python_tool_returns_output_and_errors():
    py = python_tool(timeout_s=5)
    assert py.call({"code": "```python\nprint(17*23)\n```"}) == "391"
    out = py.call({"code": "1/0"})
    assert "ZeroDivisionError" in out and "exit status 1" in out
    assert "no output" in py.call({"code": "x = 1"})


def test_infinite_loop_is_killed_at_the_wall_time_limit():
    t0 = time.monotonic()
    r = run_python("while True:\n    pass", timeout_s=1.5)
    assert r.timed_out and "wall-time limit" in r.as_observation()
    assert time.monotonic() - t0 < 5


def test_sleeping_child_is_killed_too():
    t0 = time.monotonic()
    assert run_python("import time; time.sleep(60)", timeout_s=1).timed_out
    assert time.monotonic() - t0 < 5


def test_memory_hog_gets_memory_error():
    r = run_python("x = bytearray(3 * 1024**3)\nprint('allocated')", memory_mb=256)
    assert "MemoryError" in r.stderr and "allocated" not in r.stdout


def test_memory_hog_growing_slowly_is_stopped():
    r = run_python("chunks = []\nwhile True:\n    chunks.append(bytearray(10 * 1024**2))", memory_mb=256, timeout_s=20)
    assert "MemoryError" in r.stderr and not r.timed_out


@pytest.mark.parametrize("code", [
    "import os\nwhile True:\n    os.fork()",
    "import subprocess\nsubprocess.run(['sh', '-c', ':(){ :|:& };:'])",
    "import os\nos.system(':(){ :|:& };:')",
    "import multiprocessing\nmultiprocessing.Process(target=print).start()",
    "import os\nos.execv('/bin/sh', ['sh', '-c', 'echo escaped'])",
    "import ctypes\nctypes.CDLL(None).fork()",
])
def test_fork_bombs_and_process_spawning_are_refused(code):
    t0 = time.monotonic()
    r = run_python(code, timeout_s=5)
    assert r.returncode != 0 and not r.timed_out
    assert "PermissionError: sandbox:" in r.stderr or "not allowed" in r.stderr
    assert "escaped" not in r.stdout
    assert time.monotonic() - t0 < 5


@pytest.fixture()
def listener():
    """A TCP server on 127.0.0.1 that records whether anyone connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    hits = []

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                hits.append(1)
                conn.close()
            except OSError:
                pass

    stop = threading.Event()
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], hits
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize("code", [
    "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')",
    "import urllib.request\nprint(urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2).status)",
    "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\nprint('connected')",
])
def test_network_access_is_refused(listener, code):
    port, hits = listener
    r = run_python(code.format(port=port), timeout_s=5)
    assert r.returncode != 0 and "connected" not in r.stdout
    time.sleep(0.3)
    assert hits == []


def test_network_namespace_blocks_even_without_the_audit_hook(listener):
    """The kernel layer alone: plain python in the unshare'd namespaces cannot reach the host's loopback."""
    if not network_isolated():
        pytest.skip("unshare into a network namespace is not permitted here: only the audit hook protects")
    port, hits = listener
    code = f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\n" \
           "except OSError as e:\n    print('refused', e)"
    out = subprocess.run([*_isolation_prefix(), sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=20)
    assert out.stdout.startswith("refused")
    assert hits == []


def test_limits_cannot_be_raised_by_the_code():
    r = run_python("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\nprint('raised')")
    assert "raised" not in r.stdout and "resource.setrlimit is not allowed" in r.stderr


def test_writes_outside_the_working_directory_are_refused(tmp_path):
    target = tmp_path / "pwned.txt"
    r = run_python(f"open({str(target)!r}, 'w').write('x')")
    assert "writing outside the working directory" in r.stderr
    assert not target.exists()


@pytest.mark.parametrize("code", [
    "import os\nos.remove({victim!r})", "import os\nos.rename({victim!r}, 'stolen.txt')",
    "import shutil\nshutil.rmtree({parent!r})", "import os\nos.chmod({victim!r}, 0o777)",
    "import os\nos.symlink({victim!r}, 'link')\nopen('link', 'w').write('x')",
])
def test_changes_to_files_outside_are_refused(tmp_path, code):
    victim = tmp_path / "keep.txt"
    victim.write_text("keep")
    r = run_python(code.format(victim=str(victim), parent=str(tmp_path)))
    assert "PermissionError: sandbox:" in r.stderr
    assert victim.read_text() == "keep"


def test_parent_environment_secrets_are_not_inherited(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    r = run_python("import os\nprint(sorted(os.environ))\nprint(os.environ.get('OPENAI_API_KEY'))")
    assert "sk-secret-value" not in r.stdout


def test_output_flood_is_capped():
    r = run_python("while True:\n    print('x' * 1000)", timeout_s=5, max_output_bytes=5000, max_file_bytes=2**20)
    assert len(r.stdout) < 6000 and r.stdout.endswith("(output truncated)")
    assert not r.timed_out  # stopped by the file-size limit (SIGXFSZ), not the clock
