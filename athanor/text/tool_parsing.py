"""Find tool calls in a local model's raw text, in the formats open models are trained on.

Recognised:
- Hermes / Qwen2.5 / Qwen3: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (one or more blocks);
- Llama 3.x / plain JSON: the whole reply is `{"name": ..., "parameters"|"arguments": {...}}` or a list of them.
Only names of offered tools count, so a model quoting JSON in prose is not mistaken for a call.
Not for: Mistral's `[TOOL_CALLS]` or other formats (add them here), or servers (they parse their own).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass


@dataclass
class ToolCall:
    """One call a model made (llm/ re-exports it as part of the ChatModel protocol)."""

    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it (may be invalid: the caller checks)

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def parse_tool_calls(text: str, tool_names: set[str]) -> tuple[str, list[ToolCall]]:
    """(text with the call markup removed, calls). No recognised call -> (text, [])."""
    if "<tool_call>" in text:
        calls = [c for block in _BLOCK.findall(text) for c in _calls_from_json(block, tool_names)]
        if calls:
            return _BLOCK.sub("", text).strip(), _numbered(calls)
    stripped = _strip_fence(text.strip())
    if stripped.startswith(("{", "[")):
        calls = _calls_from_json(stripped, tool_names)
        if calls:
            return "", _numbered(calls)
    return text, []


def _calls_from_json(raw: str, tool_names: set[str]) -> list[tuple[str, str]]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if not isinstance(item, dict) or item.get("name") not in tool_names:
            return []  # all or nothing: a half-understood reply stays text
        args = item.get("arguments", item.get("parameters", {}))
        out.append((item["name"], args if isinstance(args, str) else json.dumps(args)))
    return out


def _numbered(calls: list[tuple[str, str]]) -> list[ToolCall]:
    return [ToolCall(f"call_{i}", name, args) for i, (name, args) in enumerate(calls)]


def _strip_fence(text: str) -> str:
    m = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    return m.group(1) if m else text
