"""Tools a workflow's tool and agent nodes can call: athanor's agent tools under their own names, plus
`current_time` (Dify's builtin time tool, same parameters), plus whatever Services.tools adds (MCP tools).

Dify names a tool by provider and tool name (`provider_name: time, tool_name: current_time`); the tool name
is what we match, first in Services.tools (so a user can override), then the built-ins. A tool we do not
have is a validation problem, never a silent no-op.
Not for: the tools themselves (agent/) or running agents (nodes/agentic.py).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from athanor.agent.tools import FunctionTool, Tool, ToolError

BUILTIN_TOOLS = ("calculator", "python", "read_file", "list_dir", "http_get", "current_time")


def _current_time(format: str = "%Y-%m-%d %H:%M:%S", timezone: str = "UTC") -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        zone = ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown timezone {timezone!r}; use an IANA name like Asia/Shanghai") from None
    return datetime.datetime.now(zone).strftime(format or "%Y-%m-%d %H:%M:%S")


current_time = FunctionTool(
    name="current_time",
    description="The current date and time, formatted with strftime `format` in IANA `timezone` (default UTC).",
    parameters={"type": "object", "properties": {
        "format": {"type": "string", "description": "strftime format", "default": "%Y-%m-%d %H:%M:%S"},
        "timezone": {"type": "string", "description": "IANA timezone, e.g. Asia/Shanghai", "default": "UTC"}},
        "required": []},
    fn=_current_time,
)


def builtin_tool(name: str, services) -> Tool | None:
    """A built-in tool by name, configured from the run's Services (sandbox limits, file root, allowed hosts)."""
    if name == "calculator":
        from athanor.agent.calculator import calculator

        return calculator
    if name == "python":
        from athanor.agent.sandbox import python_tool

        return python_tool(services.code_timeout_s, services.code_memory_mb)
    if name in ("read_file", "list_dir", "http_get"):
        from athanor.agent import files

        if name == "http_get":
            return files.http_get_tool(sorted(services.http_allow_hosts))
        root = services.files_root or "."
        return files.read_file_tool(root) if name == "read_file" else files.list_dir_tool(root)
    return current_time if name == "current_time" else None


def resolve_tool(name: str, services) -> Tool | None:
    """Services.tools first (MCP and user tools), then the built-ins; None when neither has it."""
    extra = getattr(services, "tools", None) or {}
    return extra.get(name) or builtin_tool(name, services)


def unknown_tool_message(name: str, provider: str | None = None) -> str:
    where = f" (provider {provider})" if provider else ""
    return (f"tool {name!r}{where} is not available here; built-in tools: {', '.join(BUILTIN_TOOLS)} "
            "(MCP tools come from the run's tool options)")


@dataclass
class PresetTool:
    """A tool with some arguments fixed by the DSL (Dify's `settings` / non-auto parameters); the model fills the rest."""

    tool: Tool
    preset: dict

    @property
    def name(self) -> str:
        return self.tool.name

    @property
    def description(self) -> str:
        return self.tool.description

    @property
    def parameters(self) -> dict:
        props = {k: v for k, v in self.tool.parameters.get("properties", {}).items() if k not in self.preset}
        required = [k for k in self.tool.parameters.get("required", []) if k in props]
        return {"type": "object", "properties": props, "required": required}

    def call(self, arguments: dict) -> str:
        return self.tool.call({**self.preset, **(arguments or {})})


def known_arguments(tool: Tool, arguments: dict) -> tuple[dict, list[str]]:
    """(arguments the tool's schema names, names it does not) — Dify form settings our tool lacks are dropped."""
    props = tool.parameters.get("properties", {})
    return {k: v for k, v in arguments.items() if k in props}, sorted(k for k in arguments if k not in props)
