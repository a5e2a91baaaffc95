"""Every escape class through the routes into the sandbox that are not HTTP: a workflow code node run by the
engine, `athanor workflow run` (the CLI, in its own process), and the agent's python tool chosen by a model
(`agent_command` against a scripted OpenAI-compatible server on 127.0.0.1). HTTP: tests/e2e/test_workflow_sandbox.py.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.agent.escapes import as_code_node, as_program, assert_refused, escape_script
from tests.workflow.conftest import chain, code, dify_app, end, run_doc, start

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def closed_port():
    """A loopback port with a listener that counts connections (none may arrive)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    yield server
    server.close()


def _no_connection(server: socket.socket) -> bool:
    try:
        server.accept()
    except BlockingIOError:
        return True
    return False


def _script(tmp_path: Path, server: socket.socket) -> str:
    port = server.getsockname()[1]
    return escape_script(marker=str(tmp_path / "pwned"), port=port, server_port=port, server_pid=os.getpid(),
                         secret=" ".join(sys.argv[:1]), home=os.environ["ATHANOR_HOME"])


def _app(source: str, **code_data) -> dict:
    return dify_app([start(), code("c", source, {"results": "object"}, **code_data), end(results=["c", "results"])],
                    chain("start", "c", "end"))


def test_code_node_through_the_engine(tmp_path, closed_port):
    result, _ = run_doc(_app(as_code_node(_script(tmp_path, closed_port))))
    assert result.status == "succeeded", result.error
    assert_refused(result.outputs["results"])
    assert not (tmp_path / "pwned").exists() and _no_connection(closed_port)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "athanor.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=120, check=False)


def test_code_node_through_the_cli(tmp_path, closed_port):
    app = tmp_path / "escape.yml"
    app.write_text(yaml.safe_dump(_app(as_code_node(_script(tmp_path, closed_port)))))
    out = _cli("workflow", "run", str(app))
    assert out.returncode == 0, out.stderr
    assert_refused(json.loads(out.stdout)["results"])
    assert not (tmp_path / "pwned").exists() and _no_connection(closed_port)


def test_cli_refuses_code_without_the_sandbox_and_unsafe_code_warns(tmp_path):
    app = tmp_path / "uid.yml"
    app.write_text(yaml.safe_dump(_app("def main() -> dict:\n    import os\n    return {'results': {'uid': os.getuid()}}\n")))
    no_bwrap = {"PATH": str(tmp_path)}  # neither bwrap nor prlimit on PATH
    refused = _cli("workflow", "run", str(app), env=no_bwrap)
    assert refused.returncode == 1
    assert ("code execution refused: the OS sandbox is unavailable: bubblewrap (bwrap) is not installed"
            in refused.stderr)
    unsafe = _cli("workflow", "run", str(app), "--unsafe-code", env=no_bwrap)
    assert unsafe.returncode == 0, unsafe.stderr
    assert json.loads(unsafe.stdout)["results"] == {"uid": os.getuid()}  # unconfined: it ran as us
    assert "running code UNCONFINED (--unsafe-code" in unsafe.stderr


def test_agent_python_tool_chosen_by_a_model(tmp_path, closed_port):
    from athanor.agent.cli import agent_command
    from tests.llm.openai_stub import serve_stub

    program = as_program(_script(tmp_path, closed_port))
    replies = [f"Action: python\nAction Input: {json.dumps({'code': program})}", "AI: done"]
    with serve_stub(lambda messages, body: replies.pop(0), model_id="scripted") as (url, _):
        out = io.StringIO()
        assert agent_command(f"openai:{url}#scripted", "python", "try to escape", out=out, verbose=True) == 0
    observation = next(ln for ln in out.getvalue().splitlines() if ln.startswith("[1] Observation: "))
    assert_refused(observation.removeprefix("[1] Observation: "))
    assert not (tmp_path / "pwned").exists() and _no_connection(closed_port)


def test_serve_unsafe_code_reaches_the_workflow_routes(monkeypatch):
    from typer.testing import CliRunner

    import athanor.serve.app
    from athanor.cli import app
    from athanor.serve.workflow_routes import _services

    monkeypatch.setenv("ATHANOR_UNSAFE_CODE", "0")  # restored afterwards
    monkeypatch.setattr(athanor.serve.app, "serve", lambda **kwargs: None)  # everything but binding a port
    assert _services().unsafe_code is False
    assert CliRunner().invoke(app, ["serve", "--unsafe-code"]).exit_code == 0
    services = _services()
    assert services.unsafe_code is True and services.allow_local_files is False
