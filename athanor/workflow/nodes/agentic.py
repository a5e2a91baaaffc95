"""tool and agent: Dify's nodes that call tools (workflow/tool_registry.py resolves names to athanor tools).

tool: `tool_parameters` {name: {type: variable | constant | mixed, value}} (plus constant
`tool_configurations`) become the arguments of one call; outputs text, files ([]) and json (the result parsed,
when it is JSON). A failing tool fails the node.
agent: Dify's agent node (agent_parameters model / tools / instruction / query / maximum_iterations, each
{type, value}); agent_strategy_name function_calling runs athanor's ToolCallingAgent, ReAct its ReActAgent.
Each agent step is emitted as an `agent_log` event, the final answer is streamed to [node_id, "text"].
An agent that stops without an answer (step or time limit) fails the node with the reason.
Not for: the agent loops (agent/native.py, agent/react.py).
"""

from __future__ import annotations

import json

from athanor.agent.tools import ToolError
from athanor.errors import AthanorError
from athanor.workflow import prompting
from athanor.workflow.nodes.base import Node, NodeResult, NodeWarning, RunContext, WorkflowNodeError, register
from athanor.workflow.tool_registry import (
    PresetTool,
    binding,
    known_arguments,
    not_installed_message,
    resolve_tool,
    tool_label,
)

STRATEGIES = {"function_calling": "function_calling", "functioncalling": "function_calling", "react": "react"}
DEFAULT_MAX_ITERATIONS = 3  # Dify's default for the agent node


def _value(ctx: RunContext, param):
    """One {type, value} parameter -> its value: a selector looked up, a template rendered, a constant as is."""
    if not isinstance(param, dict) or "type" not in param:
        return param
    kind, value = param.get("type"), param.get("value")
    if kind == "variable":
        return ctx.pool.get(list(value or []))
    if isinstance(value, str) and "{{#" in value:
        return prompting.render(ctx, value)
    return value


def _json_or_none(text: str):
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, (dict, list)) else None


def _tool_problem(name, provider, provider_type, services=None) -> list[str]:
    """Why a named tool would not resolve in a run with `services` ([] when it would).

    Bindings, Services.tools (user and MCP tools) and the built-ins are known. A tool the DSL marks as MCP
    (or a binding to a name we do not have) is taken on trust while the run has no extra tools (the servers
    are connected at run time, `--mcp`); once it has some, the name must be among them. A tool that is not
    here at all (a marketplace plugin, most often) is a warning: it fails only its node, at run time."""
    from athanor.workflow.tool_registry import BUILTIN_TOOLS

    if not name:
        return ["no tool_name"]
    extra = getattr(services, "tools", None) or {}
    target = binding(name, provider, services)
    if target is not None:
        if target in extra or target in BUILTIN_TOOLS or not extra:
            return []
        return [(f"tool {tool_label(name, provider)} is bound to {target!r}, which is neither a built-in tool "
                 f"nor offered by the connected MCP servers (they offer: {', '.join(sorted(extra))})")]
    if name in extra or name in BUILTIN_TOOLS or (provider_type == "mcp" and not extra):
        return []
    if provider_type == "mcp":
        return [(f"MCP tool {name!r} (provider {provider}) is not offered by the connected MCP servers "
                 f"(they offer: {', '.join(sorted(extra))})")]
    return [NodeWarning(not_installed_message(name, provider))]


@register
class ToolNode(Node):
    type = "tool"

    def tool_problems(self, services=None) -> list[str]:
        """Whether the tool resolves in a run with these Services (workflow/validate.py calls this)."""
        d = self.data
        return _tool_problem(d.get("tool_name"), d.get("provider_id") or d.get("provider_name"),
                             d.get("provider_type"), services)

    def run(self, ctx: RunContext) -> NodeResult:
        d = self.data
        name, provider = d.get("tool_name") or "", d.get("provider_id") or d.get("provider_name")
        tool = resolve_tool(name, ctx.services, provider)
        if tool is None:
            raise WorkflowNodeError(not_installed_message(name, provider, d.get("provider_type")))
        arguments = {k: _value(ctx, v) for k, v in (d.get("tool_configurations") or {}).items()}
        arguments |= {k: _value(ctx, v) for k, v in (d.get("tool_parameters") or {}).items()}
        arguments = {k: v for k, v in arguments.items() if v is not None}
        arguments, ignored = known_arguments(tool, arguments)
        try:
            text = tool.call(arguments)
        except ToolError as e:
            raise WorkflowNodeError(f"tool {name}: {e}") from None
        except Exception as e:  # noqa: BLE001 - any tool failure is the node's failure, shown in one line
            raise WorkflowNodeError(f"tool {name} failed: {e}") from None
        parsed = _json_or_none(text)
        details = {"tool": tool.name, "ignored_arguments": ignored} if ignored else {"tool": tool.name}
        return NodeResult({"text": text, "files": [], "json": [parsed] if parsed is not None else []},
                          inputs=arguments, process_data=details)


@register
class AgentNode(Node):
    type = "agent"

    def _param(self, name: str) -> dict:
        return (self.data.get("agent_parameters") or {}).get(name) or {}

    def _tool_entries(self) -> list[dict]:
        return [t for t in self._param("tools").get("value") or [] if isinstance(t, dict) and t.get("enabled", True)]

    def check(self, app) -> list[str]:
        problems = []
        refusal = self._strategy_refusal()
        if refusal:
            problems.append(refusal)
        problems += prompting.model_shape_problems(prompting.node_model(self.data))
        if not self._param("query"):
            problems.append("agent has no query")
        return problems

    def _strategy_refusal(self) -> str | None:
        """Why this agent's strategy cannot run here (None when it can): strategies other than Dify's own
        function_calling / ReAct come from marketplace plugins, named in the message."""
        name = str(self.data.get("agent_strategy_name") or "")
        if name.lower() in STRATEGIES:
            return None
        plugin = str(self.data.get("agent_strategy_provider_name") or "").strip()
        if plugin:
            return (f"agent strategy {name!r} comes from the Dify plugin {plugin!r}, which does not run here "
                    "(built-in strategies: function_calling, ReAct)")
        return f"agent strategy {name!r} is not supported (function_calling or ReAct)"

    def tool_problems(self, services=None) -> list[str]:
        """Whether every enabled tool resolves in a run with these Services (workflow/validate.py calls this)."""
        return [p for t in self._tool_entries()
                for p in _tool_problem(t.get("tool_name"), t.get("provider_name"), t.get("type"), services)]

    def run(self, ctx: RunContext) -> NodeResult:
        from athanor.agent.memory import BufferMemory

        strategy = STRATEGIES.get(str(self.data.get("agent_strategy_name") or "").lower())
        if strategy is None:
            raise WorkflowNodeError(self._strategy_refusal())
        model_cfg = prompting.node_model(self.data) or {}
        query = str(_value(ctx, self._param("query")) or "")
        instruction = str(_value(ctx, self._param("instruction")) or "").strip()
        max_iterations = int(_value(ctx, self._param("maximum_iterations")) or DEFAULT_MAX_ITERATIONS)
        tools = [self._tool(ctx, t) for t in self._tool_entries()]
        memory = BufferMemory()
        for message in prompting.history(ctx, self.data.get("memory")):
            memory.add(message)
        model, events = ctx.services.chat_model(model_cfg), []
        try:
            agent = self._agent(strategy, model, tools, memory, instruction, max_iterations,
                                prompting.model_options(model_cfg), ctx)
            for event in agent.stream(query):
                events.append(event)
                ctx.emit("agent_log", {"node_id": self.id, "label": event.kind, "step": event.step,
                                       "data": {"text": event.text, "tool": event.tool, "arguments": event.arguments}})
                ctx.check_deadline()
        except WorkflowNodeError:
            raise
        except (AthanorError, ValueError, ToolError) as e:  # bad options, context too long, duplicate tools
            raise WorkflowNodeError(f"agent: {e}") from None
        final = events[-1]
        if final.kind != "answer":
            raise WorkflowNodeError(f"agent {final.text} without an answer")
        ctx.stream([self.id, "text"], final.text)
        log = [{"kind": e.kind, "step": e.step, "text": e.text, "tool": e.tool} for e in events]
        return NodeResult({"text": final.text, "files": [], "json": []}, inputs={"query": query},
                          process_data={"strategy": strategy, "tools": [t.name for t in tools], "steps": final.step,
                                        "agent_log": log})

    def _tool(self, ctx: RunContext, entry: dict):
        name, provider = entry.get("tool_name") or "", entry.get("provider_name")
        tool = resolve_tool(name, ctx.services, provider)
        if tool is None:
            raise WorkflowNodeError(not_installed_message(name, provider, entry.get("type")))
        fixed = {k: v.get("value") if isinstance(v, dict) else v for k, v in (entry.get("settings") or {}).items()}
        fixed |= {k: v.get("value") for k, v in (entry.get("parameters") or {}).items()
                  if isinstance(v, dict) and not v.get("auto") and v.get("value") is not None}
        fixed, _ = known_arguments(tool, {k: v for k, v in fixed.items() if v is not None})
        return PresetTool(tool, fixed) if fixed else tool

    def _agent(self, strategy, model, tools, memory, instruction, max_iterations, options, ctx):
        from athanor.agent.native import DEFAULT_SYSTEM, ToolCallingAgent
        from athanor.agent.react import DEFAULT_PREFIX, ReActAgent

        seconds = ctx.services.max_seconds
        if strategy == "react":
            return ReActAgent(model, tools, memory=memory, max_iterations=max_iterations, max_seconds=seconds,
                              prefix=instruction or DEFAULT_PREFIX, options=options)
        return ToolCallingAgent(model, tools, memory=memory, max_iterations=max_iterations, max_seconds=seconds,
                                system=instruction or DEFAULT_SYSTEM, options=options)
