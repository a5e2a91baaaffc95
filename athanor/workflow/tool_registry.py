"""Tools a workflow's tool and agent nodes can call: athanor's agent tools under their own names, plus
Dify's keyless built-ins under Dify's names (`current_time` here; eval_expression, json_*, webscraper in
dify_tools.py), plus whatever Services.tools adds (MCP tools).

Dify names a tool by provider and tool name (`provider_id: langgenius/tavily/tavily, tool_name:
tavily_search`). A binding (Services.tool_bindings, from a bindings file or `--bind-tool`) maps
"provider/name" or "name" to one of our tools (a built-in or an MCP tool) and wins; otherwise the tool name
is matched in Services.tools (so a user can override), then in the built-ins. A tool we do not have is a
validation warning (marketplace plugins are common in exports) and fails its node at run time with
"tool PROVIDER/NAME is not installed", so the node's error strategy decides; never a silent no-op.
Not for: the tools themselves (agent/) or running agents (nodes/agentic.py).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from athanor.agent.tools import FunctionTool, Tool, ToolError
from athanor.workflow import dify_tools

BUILTIN_TOOLS = ("calculator", "python", "read_file", "list_dir", "http_get", "current_time", *dify_tools.NAMES)


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

        return python_tool(services.code_timeout_s, services.code_memory_mb, services.unsafe_code)
    if name in ("read_file", "list_dir", "http_get"):
        from athanor.agent import files

        if name == "http_get":
            return files.http_get_tool(sorted(services.http_allow_hosts))
        root = services.files_root or "."
        return files.read_file_tool(root) if name == "read_file" else files.list_dir_tool(root)
    if name == "webscraper":
        return dify_tools.webscraper_tool(sorted(getattr(services, "http_allow_hosts", None) or []))
    if name in dify_tools.STATIC:
        return dify_tools.STATIC[name]
    return current_time if name == "current_time" else None


def tool_keys(name: str, provider: str | None = None) -> list[str]:
    """Binding keys for a Dify tool, most specific first (as model keys are: services.provider_keys)."""
    from athanor.workflow.services import provider_keys

    return provider_keys(name, provider)


def binding(name: str, provider: str | None, services) -> str | None:
    """The tool name a binding maps this Dify tool to (None: no binding)."""
    bindings = getattr(services, "tool_bindings", None) or {}
    return next((bindings[k] for k in tool_keys(name, provider) if k in bindings), None)


def _lookup(name: str, services) -> Tool | None:
    extra = getattr(services, "tools", None) or {}
    return extra.get(name) or builtin_tool(name, services)


def resolve_tool(name: str, services, provider: str | None = None) -> Tool | None:
    """A binding first, then Services.tools (MCP and user tools), then the built-ins; None when none has it.
    A bound tool keeps the DSL's name (the model and the node's outputs see the name the app uses)."""
    target = binding(name, provider, services)
    if target is not None:
        tool = _lookup(target, services)
        return _Renamed(tool, name) if tool is not None and tool.name != name else tool
    return _lookup(name, services)


def tool_label(name: str, provider: str | None = None) -> str:
    provider = str(provider or "").strip("/")
    return f"{provider}/{name}" if provider else name


def not_installed_message(name: str, provider: str | None = None, provider_type: str | None = None) -> str:
    """The run-time failure of a tool that is neither bound nor here."""
    if provider_type == "mcp":
        return (f"MCP tool {name!r} (provider {provider}) is not available: connect its server with --mcp "
                "(the HTTP routes offer no MCP servers)")
    return (f"tool {tool_label(name, provider)} is not installed (bind it to a built-in or MCP tool: "
            "--bind-tool DIFY_TOOL=OUR_TOOL or a bindings file)")


def unknown_tool_message(name: str, provider: str | None = None) -> str:
    where = f" (provider {provider})" if provider else ""
    return (f"tool {name!r}{where} is not available here; built-in tools: {', '.join(BUILTIN_TOOLS)} "
            "(MCP tools come from the run's tool options)")


@dataclass
class _Renamed:
    """A tool under the name the DSL gives it (a binding's target keeps its schema and behaviour)."""

    tool: Tool
    name: str

    @property
    def description(self) -> str:
        return self.tool.description

    @property
    def parameters(self) -> dict:
        return self.tool.parameters

    def call(self, arguments: dict) -> str:
        return self.tool.call(arguments)


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
