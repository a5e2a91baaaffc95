"""The OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions, /tokenize, /detokenize.

`echo` on /v1/completions returns the prompt (and its logprobs) first, for lm-eval's log-likelihoods (echo.py).

Streams are Server-Sent Events (`chat.completion.chunk` / `text_completion` objects, then `data: [DONE]`).
Tools go through the model's own template; calls found in the reply (tools.py) become `tool_calls`, streamed as
deltas at the end of the choice. `response_format` json_object / json_schema and `tool_choice` required / named
are enforced by constrained decoding (athanor/text/grammar.py): the engine samples only tokens the grammar allows.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from athanor.serve.echo import add_echo, echo_stream
from athanor.serve.errors import ServeError, openai_error_body
from athanor.serve.generation import (
    Generation,
    StreamResponse,
    check_request,
    choice_params,
    compile_guide,
    cut_dimensions,
    merge,
    run_all,
    run_embed,
    start_all,
    stream_body,
)
from athanor.serve.openai_schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    TokenizeRequest,
)
from athanor.serve.reasoning import openai_think, reasoning_delta, split_all, splitter, template_kwargs
from athanor.serve.tokenizer_info import default_model_name
from athanor.serve.tool_calls import ToolCallStream, check_tools, template_messages, tool_guide, tool_names
from athanor.serve.trace_calls import close_call, fail_call, open_call, trace_id, watch

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request):
    from athanor.models.store import short_name

    data = [{"id": short_name(name), "object": "model", "created": _epoch(m.created_at), "owned_by": "athanor"}
            for name, m in request.app.state.manager.store.served()]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model:path}")
async def get_model(model: str, request: Request):
    from athanor.models.store import short_name

    m = request.app.state.manager.store.get(model)  # unknown -> 404; an alias answers under its own name
    return {"id": short_name(model), "object": "model", "created": _epoch(m.created_at), "owned_by": "athanor"}


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    body.check_supported()
    messages = [m.as_template_message() for m in body.messages]
    tools = body.tools if body.uses_tools else None  # tool_choice "none": the model is not told about them

    def prompts(llm) -> list[list[int]]:
        vars = template_kwargs(openai_think(llm, body.reasoning_effort, body.chat_template_kwargs),
                               body.reasoning_effort, body.template_vars())  # reasoning.py
        return [llm.chat_prompt(template_messages(llm.tokenizer, messages, tools), tools=tools, **vars)]

    def guide(llm):
        if tools and body.tool_choice not in (None, "auto"):
            return tool_guide(llm, tools, body.tool_choice, body.parallel_tool_calls)
        schema = body.json_schema()
        return None if schema is None else llm.grammars.json(None if schema is True else schema)

    small = not tools and sum(len(m["content"] or "") for m in messages) <= INLINE_PROMPT_CHARS
    return await _complete(request, body, prompts, chat=True, names=tool_names(tools) if tools else None,
                           make_guide=guide, trace_input=messages, trace_tools=tools, inline_prompt=small)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    body.check_supported()
    return await _complete(request, body, lambda llm: body.prompts(llm.tokenizer), chat=False, names=None,
                           trace_input=body.prompt)


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request):
    """Mean-pooled, L2-normalised last hidden states (LLM.embed); base64 = little-endian float32, as OpenAI."""
    inputs = body.inputs()
    manager = request.app.state.manager
    model = await manager.acquire(body.model)
    span = open_call("embeddings", body.model, None, inputs, kind="embedding")
    try:
        vectors, tokens = await run_embed(model, inputs, truncate=False)
        vectors = cut_dimensions(vectors, body.dimensions)
    except BaseException as e:
        fail_call(span, e)
        raise
    finally:
        manager.release(model)
    close_call(span, [], {"input_tokens": tokens})
    data = [{"object": "embedding", "index": i,
             "embedding": _b64(v) if body.encoding_format == "base64" else v} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": body.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _b64(vector: list[float]) -> str:
    import base64
    import struct

    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request):
    manager = request.app.state.manager
    model = await manager.acquire(default_model_name(manager, body.model))
    try:
        llm = model.llm
        tools = body.tools if body.messages is not None and check_tools(body.tools, None) else None

        def encode() -> list[int]:
            if body.messages is not None:
                messages = template_messages(llm.tokenizer, [m.as_template_message() for m in body.messages], tools)
                return llm.chat_prompt(messages, tools=tools)
            return llm.tokenizer.encode(body.prompt or "", add_special_tokens=body.add_special_tokens)

        ids = await asyncio.to_thread(encode)  # off the event loop: /health answers while a huge prompt encodes
        return {"tokens": ids, "count": len(ids), "max_model_len": model.max_model_len}
    finally:
        manager.release(model)


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request):
    manager = request.app.state.manager
    model = await manager.acquire(default_model_name(manager, body.model))
    try:
        vocab = model.llm.tokenizer.vocab_size
        bad = [t for t in body.tokens if not 0 <= t < vocab]
        if bad:
            raise ServeError(f"token ids outside the vocabulary (size {vocab}): {bad[:5]}", 400, "tokens")
        return {"prompt": model.llm.tokenizer.decode(body.tokens, skip_special_tokens=False)}  # as HF and vLLM
    finally:
        manager.release(model)


# --- shared path: acquire model -> start n choices per prompt -> stream or collect ---------------------------


INLINE_PROMPT_CHARS = 4096  # a chat this short is templated and tokenized on the event loop (~0.3 ms)


async def _complete(request: Request, body, make_prompts, chat: bool, names: set[str] | None, make_guide=None,
                    trace_input=None, trace_tools=None, inline_prompt: bool = False):
    """`names`: the offered tools' names when replies are searched for calls (None: plain text).
    `make_guide(llm)`: the grammar the output must follow (None: free text); `trace_input`: what the trace keeps
    as the call's input (the messages or the prompt). `inline_prompt`: the prompt is short enough to build on the
    event loop (a worker-thread hop costs more than the work, ~1 ms on a busy 2-core machine)."""
    manager, metrics = request.app.state.manager, request.app.state.metrics
    model = await manager.acquire(body.model)
    handed_to_stream = False
    span = open_call("chat" if chat else "text_completion", body.model, body.sampling_options(), trace_input,
                     tools=trace_tools)
    try:
        llm = model.llm
        params = llm.sampling_params(body.sampling_options())
        if make_guide is not None:
            params.guide = await compile_guide(make_guide, llm, "response_format")
        # a huge prompt must not stall the event loop
        prompts = make_prompts(llm) if inline_prompt else await asyncio.to_thread(make_prompts, llm)
        check_request(model, prompts, params, request.app.state.max_pending, body.n)
        gens = [Generation(model, ids, choice_params(params, j), metrics, index=i * body.n + j)
                for i, ids in enumerate(prompts) for j in range(body.n)]
        await start_all(gens)
        if chat:  # a thinking model's <think> block becomes reasoning_content (reasoning.py)
            think = openai_think(llm, body.reasoning_effort, body.chat_template_kwargs)
            for g in gens:
                g.split = splitter(llm, g.prompt_ids, think)
        meta = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": body.model}
        if body.stream:
            lines = _sse(gens, meta, body, llm.tokenizer, chat, names, trace_id(span))
            if getattr(body, "echo", False):  # the prompt first, as vLLM streams it
                lines = echo_stream(lines, gens, llm, body.logprobs, meta, body.include_usage)
            lines = watch(span, lines)
            handed_to_stream = True

            def on_close() -> None:
                manager.release(model)
                output = [_choice_message(g, names) if chat else g.result.text for g in gens]
                close_call(span, gens, _usage(gens, body.n), output, response_id=meta["id"])

            return StreamResponse(stream_body(gens, lines, on_close, _sse_error),
                                  media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        if not await run_all(request, gens):  # the client left: choices aborted, nobody to answer
            fail_call(span, "client went away")
            return Response(status_code=499)
        response = _full_response(gens, meta, llm.tokenizer, chat, body.n, names)
        if getattr(body, "echo", False):
            await add_echo(response, gens, llm, body.logprobs)
        close_call(span, gens, response["usage"], [c.get("message", c.get("text")) for c in response["choices"]],
                   [c["finish_reason"] for c in response["choices"]], meta["id"])
        return JSONResponse(response)
    except BaseException as e:
        fail_call(span, e)
        raise
    finally:
        if not handed_to_stream:
            manager.release(model)


def _full_response(gens: list[Generation], meta: dict, tokenizer, chat: bool, n: int,
                   names: set[str] | None) -> dict:
    choices = []
    for g in gens:
        r = g.result
        choice = {"index": g.index, "finish_reason": _finish(r.finish_reason)}
        if chat:
            choice["message"] = _choice_message(g, names)
            if "tool_calls" in choice["message"] and r.finish_reason != "length":
                choice["finish_reason"] = "tool_calls"
            choice["logprobs"] = _chat_logprobs(r.logprobs, tokenizer) if g.params.logprobs is not None else None
        else:
            choice["text"] = r.text
            choice["logprobs"] = _completion_logprobs(r.logprobs, tokenizer) if g.params.logprobs is not None else None
        choices.append(choice)
    obj = "chat.completion" if chat else "text_completion"
    return meta | {"object": obj, "choices": choices, "usage": _usage(gens, n)}


def _choice_message(g: Generation, names: set[str] | None) -> dict:
    """A finished choice's assistant message: a thinking reply's block as `reasoning_content` (as vLLM), the rest
    as content or tool calls."""
    r = g.result
    thinking, text = split_all(getattr(g, "split", None), r.text)
    message = _message(text, names, truncated=r.finish_reason == "length")
    if thinking:
        message["reasoning_content"] = thinking
    return message


def _message(text: str, names: set[str] | None, truncated: bool = False) -> dict:
    """The assistant message of a non-streamed choice; with tools offered (`names`), calls become `tool_calls`
    (`truncated`: cut by max_tokens, so a call left open is dropped rather than leaked as content)."""
    if not names:
        return {"role": "assistant", "content": text}
    parser = ToolCallStream(names)
    sent = parser.feed(text)
    reply = parser.finish(truncated)
    content = sent + reply.content
    if not reply.tool_calls:
        return {"role": "assistant", "content": content}
    return {"role": "assistant", "content": content or None, "tool_calls": reply.tool_calls}


async def _sse(gens: list[Generation], meta: dict, body, tokenizer, chat: bool, names: set[str] | None,
               trace: str | None = None):
    """`trace`: the trace id, sent as a top-level "trace_id" on the last chunk (the usage chunk when asked for, else
    the finish_reason chunk of the last choice to end); clients ignore fields they do not know."""
    obj = "chat.completion.chunk" if chat else "text_completion"
    extra = {"usage": None} if body.include_usage else {}
    parsers = {g.index: ToolCallStream(names) for g in gens} if chat and names else {}
    ending = {"open": len(gens)}
    last = {"trace_id": trace} if trace else {}

    def chunk(choice: dict) -> str:
        tail = {}
        if choice.get("finish_reason") is not None:
            ending["open"] -= 1
            tail = last if ending["open"] == 0 and not body.include_usage else {}
        return f"data: {json.dumps(meta | {'object': obj, 'choices': [choice]} | extra | tail)}\n\n"

    if chat:  # OpenAI's first chunk of each choice carries the role
        for g in gens:
            yield chunk({"index": g.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                         "finish_reason": None})
    async for g, d in merge(gens):
        text, finish, calls = d.text, d.finish_reason, []
        if getattr(g, "split", None):  # reasoning first, in its own delta (vLLM's reasoning_content)
            thinking, text = reasoning_delta(g.split, text, finish)
            if thinking:
                yield chunk({"index": g.index, "delta": {"reasoning_content": thinking}, "logprobs": None,
                             "finish_reason": None})
        if g.index in parsers:  # text that may be a tool call is held back until the choice ends
            text = parsers[g.index].feed(text)
            if finish is not None:
                reply = parsers[g.index].finish(truncated=finish == "length")
                text, calls = text + reply.content, reply.tool_calls
        if not text and finish is None and not d.logprobs:
            continue  # a token whose text is held back (partial UTF-8, a possible stop string or tool call)
        want_lp = g.params.logprobs is not None
        if calls:
            lp = _chat_logprobs(d.logprobs, tokenizer) if want_lp else None
            for piece in _tool_call_chunks(g.index, text, calls, lp, _finish(finish) if finish == "length" else None):
                yield chunk(piece)
            continue
        choice: dict = {"index": g.index, "finish_reason": _finish(finish) if finish else None}
        if chat:
            choice["delta"] = {"content": text} if text else {}
            choice["logprobs"] = _chat_logprobs(d.logprobs, tokenizer) if want_lp else None
        else:
            choice["text"] = text
            choice["logprobs"] = _completion_logprobs(d.logprobs, tokenizer) if want_lp else None
        yield chunk(choice)
    if body.include_usage:
        usage = meta | {"object": obj, "choices": [], "usage": _usage(gens, body.n)} | last
        yield f"data: {json.dumps(usage)}\n\n"
    yield "data: [DONE]\n\n"


def _tool_call_chunks(index: int, content: str, calls: list[dict], logprobs: dict | None, finish: str | None = None):
    """The end of a choice that called tools, in OpenAI's chunk shape: any last content, then per call one delta
    with id, type and name (arguments "") and one with the arguments, then finish_reason "tool_calls" (or
    `finish`: "length" when max_tokens cut a later call)."""
    if content or logprobs:
        yield {"index": index, "delta": {"content": content} if content else {}, "logprobs": logprobs,
               "finish_reason": None}
    for k, call in enumerate(calls):
        head = {"index": k, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}
        yield {"index": index, "delta": {"tool_calls": [head]}, "logprobs": None, "finish_reason": None}
        args = {"index": k, "function": {"arguments": call["function"]["arguments"]}}
        yield {"index": index, "delta": {"tool_calls": [args]}, "logprobs": None, "finish_reason": None}
    yield {"index": index, "delta": {}, "logprobs": None, "finish_reason": finish or "tool_calls"}


def _sse_error(message: str) -> str:
    return f"data: {json.dumps(openai_error_body(message, 500, code='engine_error'))}\n\n"


def _usage(gens: list[Generation], n: int) -> dict:
    # a prompt is counted once however many choices (n) share it, as OpenAI bills it
    firsts = [g for g in gens if g.index % n == 0]
    prompt = sum(g.result.num_prompt_tokens for g in firsts)
    completion = sum(g.result.num_output_tokens for g in gens)
    cached = sum(g.result.num_cached_tokens for g in firsts)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _finish(reason: str | None) -> str | None:
    return reason if reason in ("stop", "length", None) else "stop"


def _token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def _chat_logprobs(samples: list, tokenizer) -> dict:
    content = []
    for s in samples:
        text = _token_text(tokenizer, s.token_id)
        top = [{"token": (t := _token_text(tokenizer, tid)), "logprob": lp, "bytes": list(t.encode())}
               for tid, lp in (s.top_logprobs or [])]
        content.append({"token": text, "logprob": s.logprob, "bytes": list(text.encode()), "top_logprobs": top})
    return {"content": content}


def _completion_logprobs(samples: list, tokenizer) -> dict:
    tokens = [_token_text(tokenizer, s.token_id) for s in samples]
    offsets, pos = [], 0
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    top = [{_token_text(tokenizer, tid): lp for tid, lp in (s.top_logprobs or [])} for s in samples]
    return {"tokens": tokens, "token_logprobs": [s.logprob for s in samples], "top_logprobs": top,
            "text_offset": offsets}


def _epoch(iso: str) -> int:
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0
