"""`athanor serve` as a real process: a real SIGTERM lets an in-flight stream finish before the process exits;
bad flags are one-line errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import make_store

ATHANOR = str(Path(sys.executable).with_name("athanor"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], env: dict) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([ATHANOR, "serve", "--port", str(port), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)  # polling the process's readiness with a deadline, not waiting a fixed time


def test_sigterm_drains_the_stream_then_exits(tmp_path, tiny_hf_dir):
    make_store(tmp_path, tiny_hf_dir)
    env = os.environ | {"ATHANOR_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc, url = _start(["--max-memory", "2GiB"], env)
    try:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 300,
                "stream": True, "ignore_eos": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            first = next(lines)
            proc.send_signal(signal.SIGTERM)  # mid-stream
            rest = list(lines)
        chunks = [json.loads(x[6:]) for x in [first, *rest] if x.startswith("data: {")]
        assert "data: [DONE]" in rest
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert sum(1 for c in chunks if c["choices"][0]["delta"].get("content") is not None) > 1
        assert proc.wait(timeout=30) == 0  # a clean drain is a clean exit (issue 14: it was -15)
        log = proc.stdout.read()
        assert "Traceback" not in log and "Finished server process" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_api_key_file_and_idle_sigterm_exit_0(tmp_path):
    """The key comes from a file (never on the command line, where /proc/PID/cmdline shows it); an idle server
    exits 0 on SIGTERM."""
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-from-file\n")
    env = {k: v for k, v in os.environ.items() if k != "ATHANOR_API_KEY"} | {"ATHANOR_HOME": str(tmp_path)}
    proc, url = _start(["--api-key-file", str(key_file)], env)
    try:
        assert "s3cret" not in Path(f"/proc/{proc.pid}/cmdline").read_text()
        assert httpx.get(f"{url}/api/tags").status_code == 401
        ok = httpx.get(f"{url}/api/tags", headers={"Authorization": "Bearer s3cret-from-file"})
        assert ok.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_missing_api_key_file_is_one_line(tmp_path):
    env = os.environ | {"ATHANOR_HOME": str(tmp_path)}
    r = subprocess.run([ATHANOR, "serve", "--api-key-file", str(tmp_path / "nope")], env=env, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode != 0 and "cannot read the API key file" in r.stderr and "Traceback" not in r.stderr


def test_bad_max_memory_is_one_line(tmp_path):
    env = os.environ | {"ATHANOR_HOME": str(tmp_path)}
    r = subprocess.run([ATHANOR, "serve", "--max-memory", "lots"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "memory size must look like" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
