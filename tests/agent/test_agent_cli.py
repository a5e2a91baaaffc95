"""agent_command: steps printed as they happen, exit status, sessions, interactive mode (against a real stub
OpenAI server on 127.0.0.1 with scripted replies, so the model spec path is exercised too)."""

from __future__ import annotations

import io

import pytest

from athanor.agent.cli import TOOL_NAMES, agent_command, build_tools
from tests.llm.openai_stub import serve_stub

CALC = "Thought: Do I need to use a tool? Yes\nAction: calculator\nAction Input: 17*23"
DONE = "Thought: Do I need to use a tool? No\nAI: It is 391."


@pytest.fixture()
def scripted_server():
    replies: list[str] = []

    def reply(messages, body):
        return replies.pop(0) if replies else "I do not know the format."

    with serve_stub(reply, model_id="scripted") as (url, requests):
        yield f"openai:{url}#scripted", replies, requests


def test_prints_each_step_and_the_answer(scripted_server):
    spec, replies, _ = scripted_server
    replies += [CALC, DONE]
    out = io.StringIO()
    assert agent_command(spec, "calculator", "What is 17*23?", out=out) == 0
    assert out.getvalue().splitlines() == [
        "[1] Thought: Do I need to use a tool? Yes", '[1] Action: calculator {"expression": "17*23"}',
        "[1] Observation: 391", "[2] Thought: Do I need to use a tool? No", "AI: It is 391."]


def test_stopped_run_says_so_and_exits_2(scripted_server):
    spec, _, _ = scripted_server
    out = io.StringIO()
    assert agent_command(spec, "calculator", "q", max_iterations=2, out=out) == 2
    lines = out.getvalue().splitlines()
    assert lines[-1] == "Agent stopped after 2 steps without an answer."
    assert not any(line.startswith("AI:") for line in lines)
    assert lines.count("[1] Error: Could not find 'Action:' or 'AI:' in your reply.") == 1


def test_session_continues_across_commands(scripted_server):
    spec, replies, requests = scripted_server
    replies += ["AI: Hi Ada.", "AI: Ada."]
    agent_command(spec, "calculator", "My name is Ada.", session="s1", out=io.StringIO())
    agent_command(spec, "calculator", "What is my name?", session="s1", out=io.StringIO())
    history = [m["content"] for m in requests[-1]["body"]["messages"][1:]]
    assert history == ["My name is Ada.", "Hi Ada.", "What is my name?"]


def test_interactive_mode_reads_until_bye(scripted_server, monkeypatch):
    spec, replies, _ = scripted_server
    replies += ["AI: one", "AI: two"]
    lines = iter(["first", "", "second", "/bye", "never"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    out = io.StringIO()
    assert agent_command(spec, "calculator", None, out=out) == 0
    assert out.getvalue().splitlines() == ["AI: one", "AI: two"]


def test_build_tools_by_name(tmp_path):
    tools = build_tools("calculator, python,read_file,list_dir,http_get,calculator", root=tmp_path,
                        allowed_hosts=["example.com"])
    assert [t.name for t in tools] == list(TOOL_NAMES)
    with pytest.raises(ValueError, match="unknown tool.*nope.*available: calculator"):
        build_tools("calculator,nope")


def test_mcp_tools_and_the_native_agent_from_the_command(scripted_server):
    import sys
    from pathlib import Path

    spec, replies, requests = scripted_server
    mcp_server = f"{sys.executable} {Path(__file__).with_name('mcp_server.py')}"
    replies += ['Action: add\nAction Input: {"a": 40, "b": 2}', "AI: 42"]
    out = io.StringIO()
    assert agent_command(spec, "", "40+2?", mcp=[mcp_server], out=out) == 0
    assert "[1] Observation: 42" in out.getvalue().splitlines()
    # native: the stub answers a request with tools by calling the first tool (calculator) twice in parallel
    out = io.StringIO()
    assert agent_command(spec, "calculator", "17*23 and 2+2?", native=True, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[:2] == ['[1] Action: calculator {"expression": "17*23"}', '[1] Action: calculator {"expression": "2+2"}']
    assert lines[2:4] == ["[1] Observation: 391", "[1] Observation: 4"]
    assert requests[-1]["body"]["tools"][0]["function"]["name"] == "calculator"
