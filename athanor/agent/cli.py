"""`athanor agent`: build tools by name (+ MCP servers' tools), run the ReAct or native agent, print each step.

The lead wires `agent_command` into athanor/cli.py; this module stays free of typer so it is testable alone.
Not for: the agent loop itself (react.py) or tool implementations.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from athanor.agent.context import is_context_stop
from athanor.agent.react import AgentEvent, AgentResult, ReActAgent, result_from_events
from athanor.agent.tools import Tool
from athanor.llm.base import ChatModel

TOOL_NAMES = ("calculator", "python", "read_file", "list_dir", "http_get")


def build_tools(names: str | list[str], *, root: str | Path = ".", allowed_hosts: list[str] | None = None,
                unsafe_code: bool = False) -> list[Tool]:
    """'calculator,python' -> tools. read_file/list_dir are confined to `root`; http_get to `allowed_hosts`;
    python runs in the OS sandbox (or is refused), unconfined only with `unsafe_code`."""
    from athanor.agent.calculator import calculator
    from athanor.agent.files import http_get_tool, list_dir_tool, read_file_tool
    from athanor.agent.sandbox import python_tool

    factories: dict[str, Callable[[], Tool]] = {
        "calculator": lambda: calculator, "python": lambda: python_tool(unsafe=unsafe_code),
        "read_file": lambda: read_file_tool(root), "list_dir": lambda: list_dir_tool(root),
        "http_get": lambda: http_get_tool(allowed_hosts or []),
    }
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    unknown = [n for n in wanted if n not in factories]
    if unknown:
        raise ValueError(f"unknown tool(s) {', '.join(unknown)}; available: {', '.join(TOOL_NAMES)}")
    return [factories[n]() for n in dict.fromkeys(wanted)]


def format_event(e: AgentEvent, verbose: bool = False) -> str | None:
    """One printed line (or block) per event; tool results and thoughts only when verbose or short."""
    if e.kind == "thought":
        return f"[{e.step}] Thought: {e.text}" if verbose or len(e.text) < 200 else None
    if e.kind == "tool_call":
        return f"[{e.step}] Action: {e.tool} {e.text}"
    if e.kind == "tool_result":
        text = e.text if verbose or len(e.text) < 500 else e.text[:500] + " ..."
        return f"[{e.step}] Observation: {text}"
    if e.kind == "error":
        return f"[{e.step}] Error: {e.text.splitlines()[0] if not verbose else e.text}"
    if e.kind == "answer":
        return f"AI: {e.text}"
    return f"Agent {e.text} without an answer."


def agent_command(model: str | ChatModel, tools: str = "calculator", question: str | None = None,
                  session: str | None = None, max_iterations: int = 10, verbose: bool = False, *,
                  mcp: list[str] | None = None, native: bool = False, root: str = ".",
                  allowed_hosts: list[str] | None = None, out: TextIO | None = None, unsafe_code: bool = False) -> int:
    """Run one question (or an interactive loop when `question` is None). Returns the exit status:
    0 answered (or stopped because the conversation outgrew the context: the trace is the result), 2 stopped
    without an answer (max iterations, wall time).

    model: a spec (llm/base.py) or an already loaded ChatModel. tools: comma-separated built-in names ("" for
    none). mcp: MCP servers (command lines or http(s) URLs) whose tools are added. native: the tool-calling
    agent instead of ReAct. session: continue/persist this conversation in $ATHANOR_HOME/agent/sessions.sqlite.
    """
    from athanor.llm.base import load_chat_model

    out = out or sys.stdout
    chat_model = load_chat_model(model) if isinstance(model, str) else model
    with contextlib.ExitStack() as stack:
        all_tools = (build_tools(tools, root=root, allowed_hosts=allowed_hosts, unsafe_code=unsafe_code)
                     + _mcp_tools(mcp or [], stack))
        agent = _make_agent(chat_model, all_tools, session, max_iterations, native)
        return _run(agent, question, verbose, out)


def _mcp_tools(servers: list[str], stack: contextlib.ExitStack) -> list[Tool]:
    if not servers:
        return []
    from athanor.agent.mcp import MCPServerTools

    return [t for server in servers for t in stack.enter_context(MCPServerTools(server)).tools]


def _make_agent(model: ChatModel, tools: list[Tool], session: str | None, max_iterations: int, native: bool):
    from athanor.agent.memory import BufferMemory, SQLiteStore, WindowMemory
    from athanor.agent.native import ToolCallingAgent

    memory = WindowMemory(k=10, store=SQLiteStore(session)) if session else BufferMemory()
    kind = ToolCallingAgent if native else ReActAgent
    return kind(model, tools, memory=memory, max_iterations=max_iterations)


def _run(agent, question: str | None, verbose: bool, out: TextIO) -> int:
    if question is not None:
        result = _ask(agent, question, verbose, out)
        return 0 if result.answer is not None or is_context_stop(result.stopped_reason) else 2
    while True:
        try:
            line = input(">>> ").strip()
        except EOFError:
            return 0
        if line in ("/bye", "/exit", "exit"):
            return 0
        if line:
            _ask(agent, line, verbose, out)


def _ask(agent, question: str, verbose: bool, out: TextIO) -> AgentResult:
    events = []
    for e in agent.stream(question):
        events.append(e)
        line = format_event(e, verbose)
        if line is not None:
            print(line, file=out, flush=True)
    return result_from_events(events)
