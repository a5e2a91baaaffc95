"""OpenAI `tools` / `tool_choice` on /v1/chat/completions: check them, put them in the prompt, find the calls.

For: validating tool specs and `tool_choice` (400s in OpenAI's words), preparing the messages for the model's
own template (`template_messages`), and `ToolCallStream`, which turns one choice's text into content plus
`tool_calls`, holding back streamed text that may be the start of a call so raw `<tool_call>` markup never
reaches a client as content. Calls are parsed by `athanor.text.tool_parsing` (Hermes/Qwen blocks, Llama-3 JSON).

`tool_choice` "required" or a named function is enforced by constrained decoding (`tool_guide`, athanor/text/grammar.py):
the reply is then always one or more valid calls in the model's own format, arguments matching the parameters.
Not for the response shapes (openai_api.py builds them from what this module returns).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from athanor.serve.errors import ServeError
from athanor.text.chat_format import adapt_to_template
from athanor.text.stop import partial_prefix_len
from athanor.text.tool_parsing import parse_tool_calls

CALL_MARKER = "<tool_call>"
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # OpenAI's rule for function names
_JSON_START = ("{", "[", "`")  # a reply that opens like this may be a whole-reply JSON call (Llama 3)


def check_tools(tools: list[dict] | None, tool_choice: Any) -> bool:
    """Validate `tools` and `tool_choice`; True when the tools go to the model (and its reply is parsed)."""
    names = [_check_tool(i, t) for i, t in enumerate(tools or [])]
    if len(set(names)) != len(names):
        raise ServeError("tools: function names must be unique", 400, "tools")
    if tool_choice in (None, "auto", "none"):
        return bool(tools) and tool_choice != "none"
    if tool_choice == "required":
        _need_tools(names, "required")
        return True
    if isinstance(tool_choice, dict):
        name = _named_choice(tool_choice)
        _need_tools(names, "a named function")
        if name not in names:
            raise ServeError(f"tool_choice names function {name!r}, which is not in tools", 400, "tool_choice")
        return True
    raise ServeError(f"tool_choice must be 'none', 'auto', 'required' or {{'type': 'function', 'function': "
                     f"{{'name': ...}}}}, got {tool_choice!r}", 400, "tool_choice")


def tool_guide(llm, tools: list[dict] | None, tool_choice: Any, parallel: bool = True):
    """The grammar that makes `tool_choice` hold: "required" -> one or more calls (one when `parallel` is False),
    a named function -> exactly one call to it; None for "auto" / "none" (the model chooses freely)."""
    from athanor.text.grammar import tool_call_style

    if not tools or tool_choice in (None, "auto", "none"):
        return None
    style = tool_call_style(llm.tokenizer.chat_template)
    if tool_choice == "required":
        return llm.grammars.tool_calls(tools, style, parallel=parallel)
    return llm.grammars.tool_calls(tools, style, only=_named_choice(tool_choice))


def tool_names(tools: list[dict]) -> set[str]:
    return {t["function"]["name"] for t in tools}


def template_messages(tokenizer, messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """Messages as chat templates expect them: call arguments as objects (OpenAI sends JSON strings; Qwen/Llama
    templates `tojson` them), and for a template that renders no tools or calls, both spelled out as text in the
    same format training uses (athanor.train.encode), so a model fine-tuned by athanor sees its trained prompt."""
    messages = [_arguments_as_objects(m) if m.get("tool_calls") else m for m in messages]
    messages, _ = adapt_to_template(tokenizer, messages, tools)
    return messages


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ParsedReply:
    content: str  # what is left to send as content (all of it for a non-streamed reply)
    tool_calls: list[dict]  # OpenAI shape: {"id", "type": "function", "function": {"name", "arguments"}}


class ToolCallStream:
    """One choice's text, fed in pieces: `feed` returns the content that is safe to send now; `finish` parses the
    whole reply. Held back: leading whitespace, everything from a `<tool_call>` marker on (or a partial marker at
    the end), and a reply that opens with JSON (a Llama-3 style call is the whole reply)."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.text = ""
        self.num_sent = 0  # characters of `text` already sent as content

    def feed(self, piece: str) -> str:
        self.text += piece
        start = self.text[self.num_sent:]
        if self.num_sent == 0 and (not start.strip() or start.lstrip().startswith(_JSON_START)):
            return ""
        marker = self.text.find(CALL_MARKER, self.num_sent)
        end = marker if marker >= 0 else len(self.text) - partial_prefix_len(self.text, (CALL_MARKER,))
        out = self.text[self.num_sent:end] if end > self.num_sent else ""
        self.num_sent += len(out)
        return out

    def finish(self, truncated: bool = False) -> ParsedReply:
        """The rest of the content and the calls (none found: the held text is content after all).
        `truncated` (the choice hit max_tokens): a call still open when the model was cut is dropped, markup and
        all, so only complete calls come back and no `<tool_call>` text reaches the content."""
        held = self.text[self.num_sent:]
        if truncated and (CALL_MARKER in held or _ends_in_marker(held)):
            return self._finish_truncated()
        _, calls = parse_tool_calls(self.text, self.names)
        rest = self.text[self.num_sent:]
        if not calls:
            return ParsedReply(rest, [])
        # Hermes blocks: the text around them is content; a whole-reply JSON call (held from its start) has none
        content = _outside_blocks(rest) if CALL_MARKER in rest else ""
        if self.num_sent == 0:
            content = content.lstrip()
        tool_calls = [{"id": new_call_id(), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                      for c in calls]
        return ParsedReply(content.rstrip(), tool_calls)


    def _finish_truncated(self) -> ParsedReply:
        rest = self.text[self.num_sent:]
        complete = re.findall(r"<tool_call>.*?</tool_call>", rest, flags=re.DOTALL)
        _, calls = parse_tool_calls("".join(complete), self.names) if complete else ("", [])
        content = re.sub(r"<tool_call>.*?(?:</tool_call>|$)", "", rest, flags=re.DOTALL)
        content = content[:len(content) - partial_prefix_len(content, (CALL_MARKER,))]
        tool_calls = [{"id": new_call_id(), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                      for c in calls]
        return ParsedReply(content.strip() if tool_calls else content.rstrip(), tool_calls)


def _ends_in_marker(text: str) -> bool:
    return partial_prefix_len(text, (CALL_MARKER,)) > 0


def _outside_blocks(text: str) -> str:
    return re.sub(r"<tool_call>.*?(?:</tool_call>|$)", "", text, flags=re.DOTALL)


def _check_tool(i: int, tool: Any) -> str:
    where = f"tools[{i}]"
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise ServeError(f"{where} must be {{'type': 'function', 'function': {{'name': ..., 'parameters': ...}}}}",
                         400, where)
    fn = tool["function"]
    name = fn.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ServeError(f"{where}.function.name must be 1-64 letters, digits, '_' or '-', got {name!r}", 400,
                         f"{where}.function.name")
    params = fn.get("parameters")
    if params is not None and not (isinstance(params, dict) and params.get("type") == "object"):
        # OpenAI's rule too: parameters is a JSON Schema of type "object" (omit it for a function without any)
        raise ServeError(f"{where}.function.parameters of {name!r} must be a JSON Schema with type 'object'",
                         400, f"{where}.function.parameters", "invalid_function_parameters")
    if fn.get("description") is not None and not isinstance(fn["description"], str):
        raise ServeError(f"{where}.function.description must be a string", 400, f"{where}.function.description")
    return name


def _named_choice(choice: dict) -> str:
    fn = choice.get("function")
    if choice.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise ServeError("tool_choice object must be {'type': 'function', 'function': {'name': ...}}", 400,
                         "tool_choice")
    return fn["name"]


def _need_tools(names: list[str], what: str) -> None:
    if not names:
        raise ServeError(f"tool_choice {what} needs tools", 400, "tool_choice")


def _arguments_as_objects(message: dict) -> dict:
    calls = []
    for c in message["tool_calls"]:
        fn = c.get("function") or {}
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass  # a template gets the string as it came
        calls.append({**c, "function": {**fn, "arguments": args}})
    return {**message, "tool_calls": calls}
