"""`athanor workflow run FILE --mcp SERVER`: a real MCP server's tools (tests/agent/mcp_server.py over stdio)
called by Dify tool nodes (a refusing tool's message reaches its error strategy), the server closed when the run ends; a server that cannot start is a one-line error."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.workflow.conftest import chain, dify_app, end, node, start

SERVER = Path(__file__).parent.parent / "agent" / "mcp_server.py"


def _mcp_children() -> list[int]:
    """Live (not zombie) child processes of this test process running the MCP test server."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == os.getpid() and b"mcp_server.py" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def _app(tmp_path) -> Path:
    add = node("add", "tool", provider_type="mcp", provider_name="local-mcp", tool_name="add", tool_parameters={
        "a": {"type": "variable", "value": ["start", "x"]}, "b": {"type": "constant", "value": 2}})
    shout = node("shout", "tool", provider_type="mcp", provider_name="local-mcp", tool_name="shout",
                 tool_parameters={"text": {"type": "mixed", "value": "sum is {{#add.text#}}"}})
    fail = node("fail", "tool", provider_type="mcp", provider_name="local-mcp", tool_name="fail",
                tool_parameters={"reason": {"type": "constant", "value": "on purpose"}},
                error_strategy="default-value", default_value=[{"key": "text", "type": "string", "value": "-"}])
    doc = dify_app([start("x", types={"x": "number"}), add, shout, fail,
                    end(out=["shout", "text"], err=["fail", "error_message"])],
                   [*chain("start", "add", "shout", "end"), *chain("start", "fail", "end")])
    path = tmp_path / "mcp_app.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_run_with_mcp_tools_over_stdio_and_close_them(tmp_path):
    pytest.importorskip("mcp")
    from athanor.workflow.cli import workflow_app

    app = _app(tmp_path)
    before = _mcp_children()
    result = CliRunner().invoke(workflow_app, ["run", str(app), "--input", "x=40",
                                               "--mcp", f"{sys.executable} {SERVER}"])
    assert result.exit_code == 0, result.output
    outputs = json.loads(result.stdout)
    assert outputs["out"] == "SUM IS 42" and outputs["err"].endswith("refused: on purpose")
    assert "partial-succeeded" in result.stderr  # the failing MCP tool took its default value
    deadline = time.monotonic() + 10
    while _mcp_children() != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _mcp_children() == before  # the server process ended with the run

    without = CliRunner().invoke(workflow_app, ["run", str(app), "--input", "x=40"])
    assert without.exit_code == 1 and "MCP tool 'add'" in without.stderr and "--mcp" in without.stderr


def test_an_mcp_server_that_cannot_start_is_one_error(tmp_path):
    from athanor.agent.mcp import MCPConnectionError
    from athanor.workflow.cli import workflow_app

    result = CliRunner().invoke(workflow_app, ["run", str(_app(tmp_path)), "--input", "x=1",
                                               "--mcp", str(tmp_path / "no-such-server")])
    assert isinstance(result.exception, MCPConnectionError)
    assert "cannot connect to MCP server" in str(result.exception) and "\n" not in str(result.exception)


def test_a_marketplace_tool_bound_to_an_mcp_tool_runs_it(tmp_path):
    """`--bind-tool PROVIDER/TOOL=MCP_TOOL`: a plugin tool node (as Dify exports it) runs a real MCP server's tool."""
    pytest.importorskip("mcp")
    from athanor.workflow.cli import workflow_app

    plugin = node("up", "tool", provider_id="acme/text_tools/text_tools", provider_name="acme/text_tools/text_tools",
                  provider_type="builtin", plugin_unique_identifier="acme/text_tools:0.0.1@0f0e", tool_name="uppercase",
                  tool_configurations={}, tool_parameters={"text": {"type": "mixed", "value": "{{#start.x#}}"}})
    doc = dify_app([start("x"), plugin, end(out=["up", "text"])], chain("start", "up", "end"))
    path = tmp_path / "plugin_app.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    server = f"{sys.executable} {SERVER}"
    warned = CliRunner().invoke(workflow_app, ["validate", str(path)])
    assert warned.exit_code == 0 and "warning: up: tool acme/text_tools/text_tools/uppercase is not installed" \
        in warned.stdout
    checked = CliRunner().invoke(workflow_app, ["validate", str(path), "--mcp", server,
                                                "--bind-tool", "text_tools/uppercase=shout"])
    assert checked.exit_code == 0 and "warning" not in checked.stdout, checked.output
    wrong = CliRunner().invoke(workflow_app, ["validate", str(path), "--mcp", server,
                                              "--bind-tool", "text_tools/uppercase=whisper"])
    assert wrong.exit_code == 1 and "bound to 'whisper'" in wrong.stdout
    result = CliRunner().invoke(workflow_app, ["run", str(path), "-i", "x=quiet please", "--mcp", server,
                                               "--bind-tool", "text_tools/uppercase=shout"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"out": "QUIET PLEASE"}
    missing = CliRunner().invoke(workflow_app, ["run", str(path), "-i", "x=hi"])
    assert missing.exit_code == 1 and "tool acme/text_tools/text_tools/uppercase is not installed" in missing.stderr
