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


def test_sigterm_drains_the_stream_then_exits(tmp_path, tiny_hf_dir):
    make_store(tmp_path, tiny_hf_dir)
    port = _free_port()
    env = os.environ | {"ATHANOR_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([ATHANOR, "serve", "--port", str(port), "--max-memory", "2GiB"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
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
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status says SIGTERM
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        log = proc.stdout.read()
        assert "Traceback" not in log and "Finished server process" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_max_memory_is_one_line(tmp_path):
    env = os.environ | {"ATHANOR_HOME": str(tmp_path)}
    r = subprocess.run([ATHANOR, "serve", "--max-memory", "lots"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "memory size must look like" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
