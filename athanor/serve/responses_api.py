"""`POST /v1/responses`: the OpenAI Responses API on the chat path (same templates, tool parsing, grammars, engine).

For: `client.responses.create` / `client.responses.stream` and the OpenAI Agents SDK's `OpenAIResponsesModel`.
The request becomes chat messages (responses_items.py), runs as one generation like /v1/chat/completions, and the
reply comes back as output items (a `message`, then `function_call`s). Streams are Responses SSE events
(response.created, response.in_progress, response.output_item.added, response.content_part.added,
response.output_text.delta ... done, function_call_arguments.delta/done, then response.completed, or
response.incomplete when max_output_tokens cut the reply). A thinking model's `<think>` block comes first as a
`reasoning` item (reasoning_text content; `reasoning.effort: "none"` turns thinking off, serve/reasoning.py). `previous_response_id` continues a stored conversation:
responses are kept in memory, the newest `MAX_STORED` (store: false keeps none); GET / DELETE
/v1/responses/{id} read and drop them. Not for OpenAI's built-in tools, background mode or conversations objects.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from athanor.serve.errors import ServeError, openai_error_body
from athanor.serve.generation import (
    Generation,
    StreamResponse,
    check_request,
    compile_guide,
    run_all,
    start_all,
    stream_body,
)
from athanor.serve.reasoning import (
    openai_think,
    reasoning_delta,
    split_all,
    splitter,
    template_kwargs,
    thinking_tokens,
)
from athanor.serve.responses_items import (
    ResponsesRequest,
    assistant_turn,
    call_item,
    input_messages,
    message_item,
    new_id,
    output_items,
    reasoning_item,
    response_object,
    text_part,
    usage,
)
from athanor.serve.tool_calls import ToolCallStream, template_messages, tool_guide, tool_names
from athanor.serve.trace_calls import close_call, fail_call, open_call

router = APIRouter()
MAX_STORED = 1000  # responses kept for previous_response_id (oldest dropped first)


class ResponseStore:
    """Finished responses and the conversation each ends (its chat messages), newest MAX_STORED kept."""

    def __init__(self, limit: int = MAX_STORED) -> None:
        self.limit, self._items = limit, OrderedDict()

    def put(self, rid: str, response: dict, messages: list[dict]) -> None:
        self._items[rid] = (response, messages)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def get(self, rid: str) -> tuple[dict, list[dict]]:
        if rid not in self._items:
            raise ServeError(f"Previous response with id {rid!r} not found.", 404, "previous_response_id",
                             "previous_response_not_found")
        self._items.move_to_end(rid)
        return self._items[rid]

    def pop(self, rid: str) -> None:
        self.get(rid)
        del self._items[rid]


def _store(request: Request) -> ResponseStore:
    state = request.app.state
    if getattr(state, "responses", None) is None:
        state.responses = ResponseStore()
    return state.responses


@router.get("/v1/responses/{rid}")
async def get_response(rid: str, request: Request):
    return _store(request).get(rid)[0]


@router.delete("/v1/responses/{rid}")
async def delete_response(rid: str, request: Request):
    _store(request).pop(rid)
    return {"id": rid, "object": "response", "deleted": True}


@router.post("/v1/responses")
async def create_response(body: ResponsesRequest, request: Request):
    tools = body.chat_tools()
    schema = body.json_schema()
    history = _store(request).get(body.previous_response_id)[1] if body.previous_response_id else []
    new = input_messages(body.input)
    if not new and not history:
        raise ServeError("input is empty", 400, "input")
    conversation = history + new  # what a follow-up continues (instructions are not carried over, as OpenAI)
    messages = ([{"role": "system", "content": body.instructions}] if body.instructions else []) + conversation
    manager, metrics = request.app.state.manager, request.app.state.metrics
    model = await manager.acquire(body.model)
    span = open_call("chat", body.model, body.sampling_options(), messages, tools=tools)
    handed_to_stream = False
    try:
        llm = model.llm
        params = llm.sampling_params(body.sampling_options())

        def guide(llm):
            if tools and body.tool_choice not in (None, "auto"):
                return tool_guide(llm, tools, body.chat_tool_choice(), body.parallel_tool_calls is not False)
            return None if schema is None else llm.grammars.json(None if schema is True else schema)

        params.guide = await compile_guide(guide, llm, "text.format")
        effort = (body.reasoning or {}).get("effort")
        think = openai_think(llm, effort, None)  # a thinking model's block becomes a reasoning item
        template_vars = template_kwargs(think, effort)
        ids = await asyncio.to_thread(lambda: llm.chat_prompt(template_messages(llm.tokenizer, messages, tools),
                                                               tools=tools, **template_vars))
        check_request(model, [ids], params, request.app.state.max_pending)
        gen = Generation(model, ids, params, metrics)
        await start_all([gen])
        rid, created = new_id("resp"), time.time()
        split = splitter(llm, ids, think)
        names = tool_names(tools) if tools else None

        def finish(output: list[dict], status: str) -> dict:
            r = gen.result
            thought = "".join(c["text"] for it in output if it["type"] == "reasoning" for c in it["content"])
            reasoning_tokens = thinking_tokens(llm.tokenizer, r.token_ids, thought)
            use = usage(r.num_prompt_tokens, r.num_output_tokens, r.num_cached_tokens, reasoning_tokens)
            response = response_object(rid, body, created, output, status, use)
            if body.store is not False:
                _store(request).put(rid, response, conversation + [assistant_turn(output)])
            close_call(span, [gen], use, output, [r.finish_reason], rid)
            return response

        if body.stream:
            handed_to_stream = True
            events = _events(gen, names, response_object(rid, body, created, [], "in_progress", None), finish, split)
            return StreamResponse(stream_body([gen], events, lambda: _end_stream(manager, model, span), _error_event),
                                  media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        if not await run_all(request, [gen]):
            fail_call(span, "client went away")
            return Response(status_code=499)
        r = gen.result
        thinking, text = split_all(split, r.text)
        content, calls = _split(text, names, r.finish_reason == "length")
        status = "incomplete" if r.finish_reason == "length" else "completed"
        thought = [reasoning_item(thinking)] if thinking else []
        return JSONResponse(finish(thought + output_items(content, calls, status), status))
    except BaseException as e:
        fail_call(span, e)
        raise
    finally:
        if not handed_to_stream:
            manager.release(model)


def _end_stream(manager, model, span) -> None:
    manager.release(model)
    fail_call(span, "stream ended early")  # a no-op when finish() closed it


def _split(text: str, names: set[str] | None, truncated: bool) -> tuple[str, list[dict]]:
    if not names:
        return text, []
    parser = ToolCallStream(names)
    sent = parser.feed(text)
    reply = parser.finish(truncated)
    return sent + reply.content, reply.tool_calls


def _error_event(message: str) -> str:
    return _sse({"type": "error"} | openai_error_body(message, 500, code="engine_error")["error"])


def _sse(event: dict) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


async def _events(gen: Generation, names: set[str] | None, snapshot: dict, finish, split=None):
    """The Responses event sequence for one generation; `finish(output, status)` builds the final response.
    A thinking model's block streams first as a `reasoning` item (response.reasoning_text.delta)."""
    seq, output = 0, []

    def event(kind: str, **fields) -> str:
        nonlocal seq
        seq += 1
        return _sse({"type": kind, "sequence_number": seq - 1, **fields})

    yield event("response.created", response=snapshot)
    yield event("response.in_progress", response=snapshot)
    parser = ToolCallStream(names) if names else None
    thought = {"id": new_id("rs"), "text": "", "open": False, "index": 0}
    message = {"id": new_id("msg"), "text": "", "open": False, "index": 0}
    calls, reason = [], None

    def close_thought():
        thought["open"] = False
        where = {"item_id": thought["id"], "output_index": thought["index"], "content_index": 0}
        item = reasoning_item(thought["text"], thought["id"])
        output.append(item)
        return [event("response.reasoning_text.done", **where, text=thought["text"]),
                event("response.content_part.done", **where, part=item["content"][0]),
                event("response.output_item.done", output_index=thought["index"], item=item)]

    def open_message():
        message["open"], message["index"] = True, len(output)
        return [event("response.output_item.added", output_index=message["index"],
                      item=message_item("", "in_progress", message["id"]) | {"content": []}),
                event("response.content_part.added", item_id=message["id"], output_index=message["index"],
                      content_index=0, part=text_part(""))]

    async for d in gen.deltas():
        reason = d.finish_reason
        thinking, piece = reasoning_delta(split, d.text, reason) if split else ("", d.text)
        if thinking:
            if not thought["open"] and not thought["text"]:
                thought["open"], thought["index"] = True, len(output)
                yield event("response.output_item.added", output_index=thought["index"],
                            item=reasoning_item("", thought["id"], "in_progress") | {"content": []})
                yield event("response.content_part.added", item_id=thought["id"], output_index=thought["index"],
                            content_index=0, part={"type": "reasoning_text", "text": ""})
            thought["text"] += thinking
            yield event("response.reasoning_text.delta", item_id=thought["id"], output_index=thought["index"],
                        content_index=0, delta=thinking)
        piece = parser.feed(piece) if parser else piece
        if reason is not None and parser:
            reply = parser.finish(truncated=reason == "length")
            piece, calls = piece + reply.content, reply.tool_calls
        if piece:
            for line in (close_thought() if thought["open"] else []) + ([] if message["open"] else open_message()):
                yield line
            message["text"] += piece
            yield event("response.output_text.delta", item_id=message["id"], output_index=message["index"],
                        content_index=0, delta=piece, logprobs=[])
    status = "incomplete" if reason == "length" else "completed"
    for line in close_thought() if thought["open"] else []:
        yield line
    if message["open"] or not calls:
        for line in [] if message["open"] else open_message():
            yield line
        where = {"item_id": message["id"], "output_index": message["index"], "content_index": 0}
        item = message_item(message["text"], status, message["id"])
        yield event("response.output_text.done", **where, text=message["text"], logprobs=[])
        yield event("response.content_part.done", **where, part=text_part(message["text"]))
        yield event("response.output_item.done", output_index=message["index"], item=item)
        output.append(item)
    for call in calls:
        index, item = len(output), call_item(call)
        yield event("response.output_item.added", output_index=index,
                    item=item | {"arguments": "", "status": "in_progress"})
        yield event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                    delta=item["arguments"])
        yield event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                    arguments=item["arguments"], name=item["name"])
        yield event("response.output_item.done", output_index=index, item=item)
        output.append(item)
    final = finish(output, status)
    yield event("response.completed" if status == "completed" else "response.incomplete", response=final)
