"""Ollama prompt templates (Go text/template syntax): parse once, render chat messages the way Ollama does.

`parse` reads the subset of Go templates that Ollama's templates use (actions with `{{-`/`-}}` trim markers,
fields, variables, if/else if/else, range (with break/continue), with, pipelines and the functions eq ne lt le gt
ge and or not len index slice print printf println json) and rejects anything else with a one-line
`GoTemplateError` naming the construct and its `line:col`. `render_prompt` turns OpenAI-style messages into the
prompt text Ollama builds (template/template.go `Execute`): a template that mentions `.Messages` is rendered once
with Messages/System/Tools; an older `.System/.Prompt/.Response` template is rendered once per user turn with its
assistant reply as `.Response`, the last turn cut right after `{{ .Response }}`.

Not for: Jinja chat templates (athanor.text.tokenizer), named sub-templates (`{{define}}`/`{{template}}`), Ollama's
context-window truncation of old messages (the caller's context check applies), images.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from athanor.text.gotemplate_exec import Executor
from athanor.text.gotemplate_parse import (
    Action,
    Branch,
    Command,
    Field,
    GoTemplateError,
    Node,
    Pipe,
    Variable,
    parse_nodes,
)
from athanor.text.gotemplate_values import GoStruct, JsonList, JsonMap

__all__ = ["GoTemplate", "GoTemplateError", "is_go_template", "parse", "render_prompt"]

_GO_MARKER = re.compile(r"\{\{-?\s*(?:\.|\$|/\*|(?:if|range|with)\s|(?:else|end|break|continue)\b|"
                        r"(?:template|block|define)\s)"
                        # or a Go field argument (`{{ upper .Prompt }}`); Jinja writes attributes as `x.y`
                        r"|\{\{[^{}]*?(?<![\w)\]])\.[A-Z]")


def is_go_template(text: str) -> bool:
    """True when `text` reads as a Go template (Ollama's TEMPLATE) rather than a Jinja one (`{% ... %}`)."""
    return "{%" not in text and _GO_MARKER.search(text) is not None


class GoTemplate:
    """A parsed Go template. `vars`: the lower-cased field and variable names it mentions (Ollama's Vars)."""

    def __init__(self, source: str, nodes: list[Node]) -> None:
        self.source = source
        self.nodes = nodes
        self.vars = sorted({name.lower() for name in _identifiers(nodes)})
        # Ollama's Execute takes the messages path when the template mentions .Messages (or a reranker's .Document)
        self.uses_messages = "messages" in self.vars or "document" in self.vars

    def render(self, data: dict) -> str:
        """Execute over `data` (Go-style keys: System, Prompt, Response, Messages, Tools, ...)."""
        return _execute(self.source, self.nodes, data)

    def __repr__(self) -> str:
        return f"GoTemplate({self.source[:40]!r}{'...' if len(self.source) > 40 else ''})"


def _execute(source: str, nodes: list[Node], data: Any) -> str:
    try:
        return Executor(source, data).run(nodes)
    except GoTemplateError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as e:
        # a value shape the executor does not model (e.g. a Python object in `data`): still one line, no traceback
        detail = " ".join(f"{type(e).__name__}: {e}".split())
        raise GoTemplateError(f"Go template: cannot execute over this data: {detail}") from None


def parse(text: str) -> GoTemplate:
    """Parse a Go template; like Ollama, one that mentions neither .Messages nor .Response gets `{{ .Response }}`
    appended (so history turns show their replies)."""
    text = text.replace("\r\n", "\n")
    nodes = parse_nodes(text)
    vars_ = {name.lower() for name in _identifiers(nodes)}
    if "messages" not in vars_ and "response" not in vars_:
        end = len(text)
        nodes = nodes + [Action(end, Pipe(end, [], False, [Command(end, [Field(end, ["Response"])])]))]
    return GoTemplate(text, nodes)


def _identifiers(nodes: list[Node]) -> list[str]:
    """Ollama's Identifiers: field and variable names in actions and branch conditions (not in chains)."""
    names: list[str] = []

    def pipe(p: Pipe) -> None:
        for cmd in p.cmds:
            for a in cmd.args:
                if isinstance(a, (Field, Variable)):
                    names.extend(a.idents)
                elif isinstance(a, Pipe):
                    pipe(a)

    def walk(ns: list[Node]) -> None:
        for n in ns:
            if isinstance(n, Action):
                pipe(n.pipe)
            elif isinstance(n, Branch):
                pipe(n.pipe)
                walk(n.body)
                walk(n.else_body or [])

    walk(nodes)
    return names


def _cut_after_response(nodes: list[Node]) -> list[Node]:
    """Ollama's deleteNode: keep everything up to the first `.Response` field (inside actions, in source order),
    drop every node after it. Branch conditions are not searched, as in Ollama."""
    cut = False

    def drop(n: Any) -> bool:
        nonlocal cut
        if isinstance(n, Field) and "Response" in n.idents:
            cut = True
            return False
        return cut

    def walk_pipe(p: Pipe) -> Pipe | None:
        if drop(p):
            return None
        cmds = []
        for c in p.cmds:
            args = [a2 for a in c.args if (a2 := walk_arg(a)) is not None]
            if not args:
                return None
            cmds.append(dataclasses.replace(c, args=args))
        return dataclasses.replace(p, cmds=cmds)

    def walk_arg(a: Node) -> Node | None:
        if drop(a):
            return None
        return walk_pipe(a) if isinstance(a, Pipe) else a

    def walk_list(ns: list[Node]) -> list[Node]:
        out = []
        for n in ns:
            if drop(n):
                continue
            if isinstance(n, Action):
                p = walk_pipe(n.pipe)
                if p is not None:
                    out.append(dataclasses.replace(n, pipe=p))
            elif isinstance(n, Branch):
                body = walk_list(n.body)
                else_body = None if n.else_body is None or cut else walk_list(n.else_body)
                out.append(dataclasses.replace(n, body=body, else_body=else_body))
            else:
                out.append(n)
        return out

    return walk_list(nodes)


# ---- OpenAI-style messages and tools -> Ollama's api types ----------------------------------------------------------

def _struct(type_name: str, fields: list[tuple[str, str, bool, Any]], stringer: bool = False) -> GoStruct:
    return GoStruct(type_name, {g: v for g, _, _, v in fields}, [(g, j, o) for g, j, o, _ in fields], stringer)


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise GoTemplateError(f"message content must be a string, got {type(content).__name__}")


def _go_numbers(v: Any) -> Any:
    """JSON numbers as Go decodes them into `any`: float64 (so `{{ .n }}` of 1000000 prints 1e+06, as in Ollama)."""
    if isinstance(v, bool) or v is None or isinstance(v, str | float):
        return v
    if isinstance(v, int):
        return float(v)
    if isinstance(v, dict):
        return {str(k): _go_numbers(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_go_numbers(x) for x in v]
    raise GoTemplateError(f"tool data must be JSON values, got {type(v).__name__}")


def _arguments(args: Any) -> JsonMap:
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise GoTemplateError(f"tool call arguments are not valid JSON: {e.msg}") from None
    if not isinstance(args, dict):
        raise GoTemplateError(f"tool call arguments must be a JSON object, got {type(args).__name__}")
    return JsonMap(_go_numbers(args))


def _tool_call(call: dict) -> GoStruct:
    fn = call.get("function") or {}
    function = _struct("api.ToolCallFunction", [
        ("Index", "index", True, int(fn.get("index", call.get("index", 0)) or 0)),
        ("Name", "name", False, str(fn.get("name", ""))),
        ("Arguments", "arguments", False, _arguments(fn.get("arguments", {})))])
    return _struct("api.ToolCall", [("ID", "id", True, str(call.get("id") or "")),
                                    ("Function", "function", False, function)])


def _message(m: dict) -> GoStruct:
    role = str(m.get("role", "")).lower()
    calls = [_tool_call(c) for c in m.get("tool_calls") or []]
    tool_name = str(m.get("tool_name") or (m.get("name") if role == "tool" else "") or "")
    return _struct("api.Message", [
        ("Role", "role", False, role), ("Content", "content", False, _text(m.get("content"))),
        ("Thinking", "thinking", True, str(m.get("thinking") or m.get("reasoning_content") or "")),
        ("Images", "images", True, []), ("ToolCalls", "tool_calls", True, calls),
        ("ToolName", "tool_name", True, tool_name)])


def _property(p: dict) -> GoStruct:
    return _struct("api.ToolProperty", [
        ("Type", "type", False, _go_numbers(p.get("type", ""))), ("Items", "items", True, _go_numbers(p.get("items"))),
        ("Description", "description", False, str(p.get("description", ""))),
        ("Enum", "enum", True, _go_numbers(p.get("enum")))])


def _tool(t: dict) -> GoStruct:
    """An OpenAI tool -> Ollama's api.Tool (only the fields Ollama's struct keeps; others are dropped, as there)."""
    fn = t.get("function") or {}
    params = fn.get("parameters") or {}
    properties = {str(k): _property(v if isinstance(v, dict) else {}) for k, v in
                  (params.get("properties") or {}).items()}
    parameters = _struct("api.ToolFunctionParameters", [
        ("Type", "type", False, str(params.get("type", ""))), ("Defs", "$defs", True, _go_numbers(params.get("$defs"))),
        ("Items", "items", True, _go_numbers(params.get("items"))),
        ("Required", "required", False, _go_numbers(params.get("required"))),
        ("Properties", "properties", False, properties)])
    function = _struct("api.ToolFunction", [
        ("Name", "name", False, str(fn.get("name", ""))),
        ("Description", "description", False, str(fn.get("description", ""))),
        ("Parameters", "parameters", False, parameters)], stringer=True)
    return _struct("api.Tool", [("Type", "type", False, str(t.get("type", "function"))),
                                ("Function", "function", False, function)], stringer=True)


def _collate(messages: list[GoStruct]) -> tuple[str, list[GoStruct]]:
    """Ollama's collate: all system texts joined; consecutive same-role messages (not tool) merged."""
    system, out = [], []
    for m in messages:
        if m.fields["Role"] == "system":
            system.append(m.fields["Content"])
        if out and out[-1].fields["Role"] == m.fields["Role"] and m.fields["Role"] != "tool":
            out[-1].fields["Content"] += "\n\n" + m.fields["Content"]
        else:
            out.append(m)
    return "\n\n".join(system), out


def render_prompt(template: GoTemplate, messages: list[dict], tools: list[dict] | None = None,
                  think: bool | None = None, think_level: str = "") -> str:
    """OpenAI-style messages (and tools) -> the prompt text Ollama renders with this template. `think`: the
    request's think (None: not set), as Ollama's .Think / .IsThinkSet / .ThinkLevel."""
    system, msgs = _collate([_message(m) for m in messages])
    thinking = {"Think": bool(think), "IsThinkSet": think is not None, "ThinkLevel": think_level if think else ""}
    if template.uses_messages:
        tool_list = JsonList(_tool(t) for t in tools or [])
        tool_list.is_nil = not tools
        return template.render({"System": system, "Messages": msgs, "Tools": tool_list, "Response": "",
                                **thinking, "Query": "", "Document": "", "Instruction": ""})
    # Legacy template: one execution per completed user/assistant turn, then the open turn cut after .Response.
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}

    def flush() -> None:
        out.append(template.render(turn | thinking))
        turn.update(System="", Prompt="", Response="")

    for m in msgs:
        role, content = m.fields["Role"], m.fields["Content"]
        if role == "system":
            if turn["Prompt"] or turn["Response"]:
                flush()
            turn["System"] = content
        elif role == "user":
            if turn["Response"]:
                flush()
            turn["Prompt"] = content
        elif role == "assistant":
            turn["Response"] = content
    last = turn | thinking
    return "".join(out) + _execute(template.source, _cut_after_response(template.nodes), last)
