"""Tools an agent can call: the `Tool` protocol, the `@tool` decorator, and argument handling.

A tool has a name, a one-paragraph description, a JSON-schema `parameters` object and `call(arguments) -> str`.
`@tool` turns a typed Python function into one: the schema comes from the type hints, the description and
per-argument help from the docstring ("Args:" section, Google style). Tools report bad input by raising
`ToolError` (the agent shows its message to the model as the Observation).
Not for: the built-in tools themselves (calculator.py, sandbox.py, files.py) or how agents prompt for tools.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable


class ToolError(ValueError):
    """Bad tool input or a refused action; the message is shown to the model."""


@runtime_checkable
class Tool(Protocol):
    name: str
    description: str
    parameters: dict  # JSON schema of an object: {"type": "object", "properties": {...}, "required": [...]}

    def call(self, arguments: dict) -> str: ...


@dataclass
class FunctionTool:
    """A Tool backed by a Python function; arguments are checked against `parameters` before the call."""

    name: str
    description: str
    parameters: dict
    fn: Callable[..., Any]

    def call(self, arguments: dict) -> str:
        kwargs = check_arguments(self, arguments)
        result = self.fn(**kwargs)
        return result if isinstance(result, str) else json.dumps(result, default=str)


def tool(fn: Callable | None = None, *, name: str | None = None, description: str | None = None):
    """Decorator: `@tool` or `@tool(name=...)` on a typed function -> FunctionTool."""

    def wrap(f: Callable) -> FunctionTool:
        summary, arg_help = _parse_docstring(inspect.getdoc(f) or "")
        params = _schema_from_signature(f, arg_help)
        return FunctionTool(name or f.__name__, description or summary or f.__name__, params, f)

    return wrap(fn) if fn is not None else wrap


def openai_tool_spec(t: Tool) -> dict:
    """A tool in the shape of the OpenAI `tools` request field."""
    return {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}


def arguments_from_text(t: Tool, text: str) -> dict:
    """A model's action input -> arguments: a JSON object, or plain text for a tool with one string argument."""
    text = text.strip()
    if text.startswith("{"):
        try:  # the first JSON object; small models often keep writing after it
            value, _ = json.JSONDecoder().raw_decode(text)
        except json.JSONDecodeError as e:
            raise ToolError(f"Action Input looks like JSON but does not parse ({e.msg}); give a JSON object "
                            f"like {example_arguments(t)}") from None
        if isinstance(value, dict):
            return value
    props = t.parameters.get("properties", {})
    required = t.parameters.get("required", list(props))
    if len(required) == 1 and props.get(required[0], {}).get("type", "string") == "string":
        return {required[0]: _unquote(text)}
    raise ToolError(f"{t.name} takes a JSON object like {example_arguments(t)}")


def example_arguments(t: Tool) -> str:
    """A JSON object of the tool's arguments: each property's first `examples` entry, else a <type> placeholder."""
    props = t.parameters.get("properties", {})
    return json.dumps({k: (v.get("examples") or [f"<{v.get('type', 'value')}>"])[0] for k, v in props.items()})


def check_arguments(t: Tool, arguments: dict) -> dict:
    """Required present, no unknown names, simple types coerced ("5" -> 5 for an integer)."""
    if not isinstance(arguments, dict):
        raise ToolError(f"{t.name} takes a JSON object like {example_arguments(t)}")
    props = t.parameters.get("properties", {})
    unknown = sorted(set(arguments) - set(props))
    if unknown:
        raise ToolError(f"{t.name}: unknown argument(s) {', '.join(unknown)}; valid: {', '.join(props) or 'none'}")
    missing = [k for k in t.parameters.get("required", []) if k not in arguments]
    if missing:
        raise ToolError(f"{t.name}: missing argument(s) {', '.join(missing)}; expected {example_arguments(t)}")
    return {k: _coerce(t.name, k, v, props[k]) for k, v in arguments.items()}


# --------------------------------------------------------------------------------------------- schema building

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"}


def _json_type(hint: Any) -> dict:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _json_type(inner[0]) if len(inner) == 1 else {"anyOf": [_json_type(a) for a in inner]}
    if origin is Literal:
        return {"type": _JSON_TYPES.get(type(args[0]), "string"), "enum": list(args)}
    if origin in (list, tuple, set):
        return {"type": "array", "items": _json_type(args[0])} if args else {"type": "array"}
    if origin is dict:
        return {"type": "object"}
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    return {"type": "string"}


def _schema_from_signature(f: Callable, arg_help: dict[str, str]) -> dict:
    hints = typing.get_type_hints(f)
    props, required = {}, []
    for p in inspect.signature(f).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        prop = _json_type(hints.get(p.name, str))
        if p.name in arg_help:
            prop["description"] = arg_help[p.name]
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
        else:
            prop["default"] = p.default
        props[p.name] = prop
    return {"type": "object", "properties": props, "required": required}


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Google-style docstring -> (summary paragraph, {arg: help})."""
    summary = doc.split("\n\n")[0].replace("\n", " ").strip()
    arg_help: dict[str, str] = {}
    match = re.search(r"^(Args|Arguments|Parameters):\s*$(.*?)(?=^\S|\Z)", doc, re.MULTILINE | re.DOTALL)
    for line in (match.group(2).splitlines() if match else []):
        m = re.match(r"\s+(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)", line)
        if m:
            arg_help[m.group(1)] = m.group(2).strip()
    return summary, arg_help


def _coerce(tool_name: str, key: str, value: Any, prop: dict) -> Any:
    kind = prop.get("type")
    try:
        if kind == "integer" and isinstance(value, str):
            return int(value.strip())
        if kind == "number" and isinstance(value, str):
            return float(value.strip())
        if kind == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    except ValueError:
        raise ToolError(f"{tool_name}: argument {key} should be {kind}, got {value!r}") from None
    if "enum" in prop and value not in prop["enum"]:
        raise ToolError(f"{tool_name}: argument {key} must be one of {prop['enum']}, got {value!r}")
    return value


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        return text[1:-1]
    return text
