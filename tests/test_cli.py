"""The `athanor` command as a user runs it: real subprocesses, the real built-in model, a real pty for chat."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

ATHANOR = str(Path(sys.executable).with_name("athanor"))
QUESTION = "What is the capital of France?"


def athanor(*args, input: str | None = None, env_home: str | None = None, timeout: int = 180):
    env = dict(os.environ)
    if env_home:
        env["ATHANOR_HOME"] = env_home
    return subprocess.run([ATHANOR, *args], input=input, capture_output=True, text=True, timeout=timeout, env=env)


def assert_one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_help_is_instant_and_imports_no_torch():
    code = "import sys, athanor.cli; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    proc = athanor("--help")
    assert proc.returncode == 0 and "run" in proc.stdout and "create" in proc.stdout


def test_store_commands(tmp_path, smollm2_path):
    home = str(tmp_path / "home")
    listing = athanor("list", env_home=home)
    assert listing.returncode == 0 and "smollm2:latest" in listing.stdout
    show = athanor("show", "smollm2", env_home=home)
    for field in ("architecture        llama", "134.5M", "context length      8192", "Q4_1", "apache-2.0", "temperature"):
        assert field in show.stdout, show.stdout
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text('FROM smollm2\nPARAMETER temperature 0\nSYSTEM """You are a pirate."""\n')
    assert athanor("create", "pirate", "-f", str(modelfile), env_home=home).returncode == 0
    assert athanor("cp", "pirate", "pirate2", env_home=home).returncode == 0
    shown = athanor("show", "pirate2", "--modelfile", env_home=home).stdout
    assert "You are a pirate." in shown and "temperature 0" in shown and str(smollm2_path) in shown
    assert "pirate2:latest" in athanor("list", env_home=home).stdout
    assert athanor("rm", "pirate2", env_home=home).returncode == 0
    assert "pirate2" not in athanor("list", env_home=home).stdout


def test_bad_input_gets_one_line_errors(tmp_path, smollm2_path):
    home = str(tmp_path / "home")
    assert_one_line_error(athanor("show", "smolm2", env_home=home), "smollm2", "athanor create")
    assert_one_line_error(athanor("run", "no-such-model", "hi", env_home=home), "not found", "athanor create")
    bad = tmp_path / "Modelfile"
    bad.write_text("FROM smollm2\nPARAMETER temprature 0.5\n")
    assert_one_line_error(athanor("create", "x", "-f", str(bad), env_home=home), f"{bad}:2", "temperature")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(smollm2_path.read_bytes()[: 5_000_000])
    assert_one_line_error(athanor("run", str(truncated), "hi", env_home=home), "cut.gguf")
    assert_one_line_error(athanor("run", "smollm2", "-o", "temperature=-1", "hi", env_home=home), "temperature")
    long_prompt = "word " * 300
    assert_one_line_error(athanor("run", "smollm2", "-o", "num_ctx=128", long_prompt, env_home=home), "context holds 128")


@pytest.mark.slow
def test_run_one_shot_and_piped_answer_paris(tmp_path):
    home = str(tmp_path / "home")
    proc = athanor("run", "smollm2", "--verbose", "-o", "temperature=0", QUESTION, env_home=home)
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    for stat in ("load duration:", "prompt eval count:", "prompt eval rate:", "eval count:", "eval rate:"):
        assert stat in proc.stderr
    piped = athanor("run", "smollm2", "-o", "temperature=0", input=QUESTION + "\n", env_home=home)
    assert piped.returncode == 0 and "Paris" in piped.stdout
    raw = athanor("generate", "smollm2", "-o", "temperature=0", "-o", "num_predict=12", "The capital of France is", env_home=home)
    assert raw.returncode == 0 and raw.stdout.strip()


def _pty_session(args: list[str], lines: list[str], env_home: str, timeout: float = 180) -> str:
    """Drive the interactive chat through a real terminal, typing each line after the `>>> ` prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.environ["ATHANOR_HOME"] = env_home
        os.execv(ATHANOR, [ATHANOR, *args])
    out, pending, deadline = b"", list(lines), time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            if pending and out.rstrip().endswith(b">>>"):
                os.write(fd, (pending.pop(0) + "\n").encode())
                out += b"\n"
    finally:
        os.waitpid(pid, 0)
    return out.decode(errors="replace")


@pytest.mark.slow
def test_interactive_chat_commands(tmp_path):
    transcript = _pty_session(
        ["run", "smollm2"],
        ["/set parameter temperature 0", QUESTION, "/show", "/set parameter temperature banana", "/clear", "/bye"],
        str(tmp_path / "home"),
    )
    assert "Set parameter 'temperature' to '0'" in transcript
    assert "Paris" in transcript
    assert "context: 8192 tokens" in transcript
    assert "error: temperature" in transcript  # a bad value is refused, the session goes on
    assert "Cleared session context." in transcript
