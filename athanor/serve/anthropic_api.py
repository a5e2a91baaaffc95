"""`POST /v1/messages`: the Anthropic Messages API (as vLLM and Ollama offer it), on the same engine and templates.

For: Anthropic SDK clients (`anthropic.Anthropic(base_url=...)`): `system` (string or text blocks), messages with
text / tool_use / tool_result blocks, `tools` (name, description, input_schema), `max_tokens`, `stop_sequences`,
`temperature` / `top_p` / `top_k`, and streaming as Anthropic's named SSE events (message_start,
content_block_start/delta/stop, message_delta, message_stop). Tool calls are found as on /v1/chat/completions
(tools.py) and come back as `tool_use` blocks; a call cut by max_tokens is dropped (stop_reason "max_tokens").
Errors use Anthropic's shape `{"type": "error", "error": {"type", "message"}}`.
Not for: images, documents, thinking blocks, prompt caching or token counting (refused or ignored as noted).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from athanor.serve.errors import ServeError, to_serve_error
from athanor.serve.generation import Generation, StreamResponse, check_request, start_all, stream_body
from athanor.serve.tool_calls import ToolCallStream, check_tools, template_messages, tool_names
from athanor.serve.trace_calls import close_call, fail_call, open_call, watch

router = APIRouter()
_STOP = {"stop": "end_turn", "length": "max_tokens"}


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int = Field(ge=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None


@router.post("/v1/messages")
async def messages(request: Request):
    try:
        body = MessagesRequest.model_validate(await request.json())
        return await _messages(body, request)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return _error(f"{where}: {err['msg']}", 400)
    except json.JSONDecodeError:
        return _error("the body is not valid JSON", 400)
    except Exception as e:  # user errors -> 4xx in Anthropic's shape; anything else is re-raised
        err = e if isinstance(e, ServeError) else to_serve_error(e)
        if err.status >= 500:
            raise
        return _error(err.message, err.status)


def _error(message: str, status: int) -> JSONResponse:
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            503: "overloaded_error"}.get(status, "api_error")
    return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status_code=status)


async def _messages(body: MessagesRequest, request: Request):
    tools = [_openai_tool(t) for t in body.tools or []] or None
    if body.tool_choice and body.tool_choice.get("type") == "none":
        tools = None
    check_tools(tools, None)
    chat = _template_messages(body)
    manager, metrics = request.app.state.manager, request.app.state.metrics
    model = await manager.acquire(body.model)
    handed_to_stream = False
    span = open_call("chat", body.model, {"max_tokens": body.max_tokens, "temperature": body.temperature,
                                          "top_p": body.top_p}, chat)
    try:
        llm = model.llm
        params = llm.sampling_params({"max_tokens": body.max_tokens, "temperature": body.temperature,
                                      "top_p": body.top_p, "top_k": body.top_k, "stop": body.stop_sequences})
        ids = llm.chat_prompt(template_messages(llm.tokenizer, chat, tools), tools=tools)
        check_request(model, [ids], params, request.app.state.max_pending)
        gen = Generation(model, ids, params, metrics)
        await start_all([gen])
        names = tool_names(tools) if tools else None
        msg_id = f"msg_{uuid.uuid4().hex[:24]}"
        if body.stream:
            handed_to_stream = True
            lines = watch(span, _events(gen, body.model, msg_id, names))

            def on_close() -> None:
                manager.release(model)
                _close(span, gen, names, msg_id)

            return StreamResponse(stream_body([gen], lines, on_close, _stream_error),
                                  media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            r = await gen.run()
        finally:
            gen.abort()
        reply = _close(span, gen, names, msg_id)
        return {"id": msg_id, "type": "message", "role": "assistant", "model": body.model} | reply | {
            "stop_sequence": None, "usage": {"input_tokens": r.num_prompt_tokens, "output_tokens": r.num_output_tokens}}
    except BaseException as e:
        fail_call(span, e)
        raise
    finally:
        if not handed_to_stream:
            manager.release(model)


def _close(span, gen: Generation, names: set[str] | None, msg_id: str) -> dict:
    """End the model span with the message's usage and its content blocks (tool_use kept); -> content, stop_reason."""
    r = gen.result
    content, calls = _split(r.text, names, r.finish_reason == "length")
    blocks = ([{"type": "text", "text": content}] if content else []) + [_tool_use(c) for c in calls]
    stop = _stop_reason(r.finish_reason, calls)
    close_call(span, [gen], {"input_tokens": r.num_prompt_tokens, "output_tokens": r.num_output_tokens},
               {"role": "assistant", "content": blocks}, [stop], msg_id)
    return {"content": blocks, "stop_reason": stop}


def _template_messages(body: MessagesRequest) -> list[dict]:
    """Anthropic messages -> the OpenAI-style messages our templates take (tool_result blocks become tool turns)."""
    out: list[dict] = []
    system = body.system if isinstance(body.system, str) or body.system is None else _text(body.system, "system")
    if system:
        out.append({"role": "system", "content": system})
    for i, m in enumerate(body.messages):
        role, content = m.get("role"), m.get("content")
        if role not in ("user", "assistant"):
            raise ServeError(f"messages[{i}].role must be 'user' or 'assistant', got {role!r}")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise ServeError(f"messages[{i}].content must be a string or a list of content blocks")
        out += _blocks_to_messages(role, content, i)
    return out


def _blocks_to_messages(role: str, blocks: list, i: int) -> list[dict]:
    texts, calls, results = [], [], []
    for b in blocks:
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "text":
            texts.append(b.get("text", ""))
        elif kind == "tool_use" and role == "assistant":
            calls.append({"id": b.get("id"), "type": "function",
                          "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input") or {})}})
        elif kind == "tool_result" and role == "user":
            c = b.get("content")
            results.append({"role": "tool", "tool_call_id": b.get("tool_use_id"),
                            "content": c if isinstance(c, str) else _text(c or [], f"messages[{i}]")})
        else:
            raise ServeError(f"messages[{i}]: content block type {kind!r} is not supported (text, tool_use, "
                             "tool_result)")
    out = results
    if texts or calls:
        msg: dict[str, Any] = {"role": role, "content": "".join(texts)}
        if calls:
            msg["tool_calls"] = calls
        out = out + [msg]
    return out


def _text(blocks: list, where: str) -> str:
    if any(not isinstance(b, dict) or b.get("type") != "text" for b in blocks):
        raise ServeError(f"{where}: only text blocks are supported here")
    return "".join(b.get("text", "") for b in blocks)


def _openai_tool(t: dict) -> dict:
    fn = {"name": t.get("name"), "description": t.get("description"),
          "parameters": t.get("input_schema") or {"type": "object", "properties": {}}}
    return {"type": "function", "function": {k: v for k, v in fn.items() if v is not None}}


def _split(text: str, names: set[str] | None, truncated: bool) -> tuple[str, list[dict]]:
    if not names:
        return text, []
    parser = ToolCallStream(names)
    sent = parser.feed(text)
    reply = parser.finish(truncated)
    return (sent + reply.content).strip() if reply.tool_calls else sent + reply.content, reply.tool_calls


def _tool_use(call: dict) -> dict:
    try:
        args = json.loads(call["function"]["arguments"] or "{}")
    except json.JSONDecodeError:
        args = {}
    return {"type": "tool_use", "id": "toolu_" + call["id"].removeprefix("call_"), "name": call["function"]["name"],
            "input": args}


def _stop_reason(finish: str | None, calls: list) -> str:
    if finish == "length":
        return "max_tokens"
    return "tool_use" if calls else _STOP.get(finish or "stop", "end_turn")


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def _events(gen: Generation, model: str, msg_id: str, names: set[str] | None):
    """Anthropic's event sequence; text streams as one text block, tool calls come as blocks at the end."""
    usage = {"input_tokens": gen.result.num_prompt_tokens, "output_tokens": 0}
    yield _sse("message_start", {"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": usage}})
    parser = ToolCallStream(names) if names else None
    index, text_open, calls, finish = 0, False, [], None
    async for d in gen.deltas():
        text = parser.feed(d.text) if parser else d.text
        if d.finish_reason is not None:
            finish = d.finish_reason
            if parser:
                reply = parser.finish(truncated=finish == "length")
                text, calls = text + reply.content, reply.tool_calls
        if text:
            if not text_open:
                yield _sse("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "text", "text": ""}})
                text_open = True
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                               "delta": {"type": "text_delta", "text": text}})
    if text_open:
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        index += 1
    for call in calls:
        block = _tool_use(call)
        yield _sse("content_block_start", {"type": "content_block_start", "index": index,
                                           "content_block": block | {"input": {}}})
        yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
            "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        index += 1
    yield _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": _stop_reason(finish, calls),
                                                                     "stop_sequence": None},
                                 "usage": {"output_tokens": gen.result.num_output_tokens}})
    yield _sse("message_stop", {"type": "message_stop"})


def _stream_error(message: str) -> str:
    return _sse("error", {"type": "error", "error": {"type": "api_error", "message": message}})
