"""MCP round trip: a real MCP server (the SDK's server API) over stdio and over streamable HTTP, its tools
listed and called through MCPServerTools, and used by both agents like any other tool."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from athanor.agent.mcp import MCPConnectionError, MCPServerTools
from athanor.agent.native import ToolCallingAgent
from athanor.agent.react import ReActAgent
from athanor.agent.tools import Tool, ToolError
from athanor.llm.base import ChatResponse, ToolCall, Usage
from tests.agent.scripted import ScriptedChatModel

pytest.importorskip("mcp")
SERVER = str(Path(__file__).with_name("mcp_server.py"))


@pytest.fixture(scope="module")
def stdio_tools():
    with MCPServerTools([sys.executable, SERVER]) as conn:
        yield conn


@pytest.fixture(scope="module")
def http_url():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([sys.executable, SERVER, "http", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "MCP HTTP server did not start"
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(timeout=10)


def check_round_trip(conn: MCPServerTools):
    tools = {t.name: t for t in conn.tools}
    assert set(tools) == {"add", "shout", "fail"}
    assert all(isinstance(t, Tool) for t in tools.values())
    assert tools["add"].description == "Add two integers."
    assert tools["add"].parameters["required"] == ["a", "b"]
    assert tools["add"].call({"a": 2, "b": "40"}) == "42"  # "40" coerced by the schema check
    assert tools["shout"].call({"text": "hi"}) == "HI"
    with pytest.raises(ToolError, match="refused: no"):
        tools["fail"].call({"reason": "no"})
    with pytest.raises(ToolError, match="missing argument"):
        tools["add"].call({"a": 1})


def test_stdio_server_round_trip(stdio_tools):
    check_round_trip(stdio_tools)


def test_streamable_http_server_round_trip(http_url):
    with MCPServerTools(http_url) as conn:
        check_round_trip(conn)


def test_react_agent_uses_mcp_tools(stdio_tools):
    model = ScriptedChatModel(['Action: add\nAction Input: {"a": 17, "b": 25}', "AI: 42"])
    result = ReActAgent(model, stdio_tools.tools).run("17+25?")
    assert [e.text for e in result.events if e.kind == "tool_result"] == ["42"] and result.answer == "42"
    assert "add: Add two integers." in model.calls[0]["messages"][0]["content"]


def test_native_agent_uses_mcp_tools_in_parallel(stdio_tools):
    calls = ChatResponse("", [ToolCall("c0", "add", '{"a": 1, "b": 2}'), ToolCall("c1", "shout", '{"text": "x"}')],
                         "tool_calls", Usage())
    result = ToolCallingAgent(ScriptedChatModel([calls, "done"]), stdio_tools.tools).run("q")
    assert [e.text for e in result.events if e.kind == "tool_result"] == ["3", "X"]


@pytest.mark.parametrize("server", [[sys.executable, "-c", "import sys; sys.exit(3)"], ["/nonexistent/mcp-server"],
                                    "http://127.0.0.1:9/mcp"])
def test_unreachable_servers_fail_at_start_with_one_line(server):
    with pytest.raises(MCPConnectionError, match="cannot connect to MCP server") as e:
        MCPServerTools(server, timeout_s=10).start()
    assert "\n" not in str(e.value)


def test_bad_server_spec():
    with pytest.raises(ValueError):
        MCPServerTools("")
