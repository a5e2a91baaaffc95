"""The Responses API's shapes (`POST /v1/responses`): the request, its input items turned into the chat messages
our templates take, and the output items / response object built from a finished reply.

For: `input` as a string or a list of items (messages with input_text / output_text parts, `function_call`,
`function_call_output`; reasoning items are skipped), `instructions`, function tools in the Responses shape
(`{"type": "function", "name", "parameters"}`) and `tool_choice`, `text.format` (json_schema / json_object),
usage with input_tokens / output_tokens. Not for generation or streaming (responses_api.py does that) nor for
built-in OpenAI tools (web_search, file_search, computer use: refused with a 400).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from athanor.serve.errors import ServeError
from athanor.serve.tool_calls import check_tools


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # "2" or true for a number: 400

    model: str
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    text: dict[str, Any] | None = None
    stream: bool = False
    previous_response_id: str | None = None
    store: bool | None = None
    reasoning: dict[str, Any] | None = None  # {"effort": ...}: "none" turns a thinking model's thinking off
    metadata: dict[str, str] | None = None
    user: str | None = None

    def chat_tools(self) -> list[dict] | None:
        """The function tools in chat-completions shape (checked as chat checks them); None when not used."""
        tools = [_chat_tool(i, t) for i, t in enumerate(self.tools or [])]
        if not check_tools(tools or None, self.chat_tool_choice()):
            return None
        return tools

    def chat_tool_choice(self) -> Any:
        choice = self.tool_choice
        if choice is None or isinstance(choice, str):
            return choice
        if choice.get("type") == "function" and isinstance(choice.get("name"), str):
            return {"type": "function", "function": {"name": choice["name"]}}
        raise ServeError("tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'name': ...}",
                         400, "tool_choice")

    def json_schema(self) -> dict | bool | None:
        """text.format as a constraint: None (free text), True (any JSON object) or the schema to match."""
        fmt = (self.text or {}).get("format") or {"type": "text"}
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "text":
            return None
        if kind == "json_object":
            return True
        if kind == "json_schema":
            if not isinstance(fmt.get("schema", {}), dict):
                raise ServeError("text.format json_schema needs a 'schema' object", 400, "text.format")
            return fmt.get("schema") or {"type": "object"}
        raise ServeError(f"text.format type must be 'text', 'json_object' or 'json_schema', got {kind!r}", 400,
                         "text.format")

    def sampling_options(self) -> dict[str, Any]:
        return {"max_tokens": self.max_output_tokens, "temperature": self.temperature, "top_p": self.top_p}


def _chat_tool(i: int, tool: Any) -> dict:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
        raise ServeError(f"tools[{i}]: tool type {kind!r} is not supported here (function tools only)", 400,
                         f"tools[{i}]")
    fn = {k: tool[k] for k in ("name", "description", "parameters") if tool.get(k) is not None}
    return {"type": "function", "function": fn}


# --- input items -> chat messages ---------------------------------------------------------------------------


def input_messages(items: str | list[dict] | None) -> list[dict]:
    """`input` -> chat messages: message items keep their role, function_call items become an assistant turn's
    tool_calls, function_call_output items become tool turns."""
    if items is None:
        return []
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    out: list[dict] = []
    names: dict[str, str] = {}  # call_id -> function name, for tool turns (some templates print it)
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(i, item))
        elif kind == "function_call":
            call = _function_call(i, item)
            names[call["id"]] = call["function"]["name"]
            last = out[-1] if out else None
            if last and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif last and last["role"] == "assistant":
                last["tool_calls"] = [call]
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = _str(item, "call_id", i)
            output = item.get("output")
            text = output if isinstance(output, str) else _parts_text(output, f"input[{i}].output")
            tool = {"role": "tool", "tool_call_id": call_id, "content": text}
            if call_id in names:
                tool["name"] = names[call_id]
            out.append(tool)
        elif kind == "reasoning":
            continue  # a reasoning model's earlier thoughts: not part of the prompt here
        else:
            raise ServeError(f"input[{i}]: item type {kind!r} is not supported (message, function_call, "
                             "function_call_output)", 400, f"input[{i}].type")
    return out


def _message(i: int, item: dict) -> dict:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise ServeError(f"input[{i}].role must be user, assistant, system or developer, got {role!r}", 400,
                         f"input[{i}].role")
    content = item.get("content")
    text = content if isinstance(content, str) else _parts_text(content, f"input[{i}].content")
    return {"role": "system" if role == "developer" else role, "content": text}


def _parts_text(parts: Any, where: str) -> str:
    if not isinstance(parts, list):
        raise ServeError(f"{where} must be a string or a list of content parts", 400, where)
    texts = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text", "text", "refusal") or not isinstance(
                part.get("text", part.get("refusal")), str):
            raise ServeError(f"{where}: content part type {kind!r} is not supported (input_text, output_text)",
                             400, where)
        texts.append(part.get("text", part.get("refusal")))
    return "".join(texts)


def _function_call(i: int, item: dict) -> dict:
    name, call_id = _str(item, "name", i), _str(item, "call_id", i)
    arguments = item.get("arguments", "{}")
    if not isinstance(arguments, str):
        raise ServeError(f"input[{i}].arguments must be a JSON string", 400, f"input[{i}].arguments")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _str(item: dict, key: str, i: int) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise ServeError(f"input[{i}].{key} must be a non-empty string", 400, f"input[{i}].{key}")
    return value


# --- output items and the response object -------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def message_item(text: str, status: str = "completed", item_id: str | None = None) -> dict:
    return {"id": item_id or new_id("msg"), "type": "message", "role": "assistant", "status": status,
            "content": [text_part(text)]}


def text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(call: dict, item_id: str | None = None) -> dict:
    """A parsed tool call (chat shape) -> a function_call output item."""
    return {"id": item_id or new_id("fc"), "type": "function_call", "status": "completed",
            "call_id": call["id"], "name": call["function"]["name"], "arguments": call["function"]["arguments"]}


def output_items(content: str, calls: list[dict], status: str) -> list[dict]:
    """A reply -> its output items: a message when there is text (or nothing else), then one item per call."""
    items = [message_item(content, status)] if content or not calls else []
    return items + [call_item(c) for c in calls]


def assistant_turn(output: list[dict]) -> dict:
    """The output items as the assistant message a follow-up (previous_response_id) continues from."""
    text = "".join(p["text"] for it in output if it["type"] == "message" for p in it["content"])
    calls = [{"id": it["call_id"], "type": "function", "function": {"name": it["name"], "arguments": it["arguments"]}}
             for it in output if it["type"] == "function_call"]
    turn: dict[str, Any] = {"role": "assistant", "content": text}
    thought = "".join(c["text"] for it in output if it["type"] == "reasoning" for c in it["content"])
    if thought:
        turn["reasoning_content"] = thought
    if calls:
        turn["tool_calls"] = calls
    return turn


def reasoning_item(text: str, item_id: str | None = None, status: str = "completed") -> dict:
    """A thinking model's block as a `reasoning` output item (its text as reasoning_text content, as vLLM does)."""
    return {"id": item_id or new_id("rs"), "type": "reasoning", "status": status, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}]}


def usage(prompt: int, output: int, cached: int = 0, reasoning: int = 0) -> dict:
    """`reasoning`: the thinking's tokens (reasoning.thinking_tokens), part of `output`."""
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + output}


def response_object(rid: str, body: ResponsesRequest, created: float, output: list[dict], status: str,
                    use: dict | None) -> dict:
    """The `response` object (what the non-streamed call returns and the stream's lifecycle events carry)."""
    fmt = (body.text or {}).get("format") or {"type": "text"}
    return {
        "id": rid, "object": "response", "created_at": created, "status": status, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.instructions, "max_output_tokens": body.max_output_tokens, "model": body.model,
        "output": output, "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": (body.reasoning or {}).get("effort"), "summary": None},
        "store": body.store is not False, "temperature": body.temperature, "text": {"format": fmt},
        "tool_choice": body.tool_choice or "auto", "tools": body.tools or [], "top_p": body.top_p,
        "truncation": "disabled", "usage": use, "user": body.user, "metadata": body.metadata or {},
        "completed_at": time.time() if status == "completed" else None,
    }


def arguments_json(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)
