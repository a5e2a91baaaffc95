"""The Ollama generation routes: /api/chat and /api/generate (NDJSON streams by default).

The last object of a stream (or the only one) carries done_reason and Ollama's timings in nanoseconds.
`format` ("json" or a JSON schema) is enforced by constrained decoding (athanor/text/grammar.py). `tools` go through
the model's own template; calls found in the reply come back as `message.tool_calls` (arguments as objects,
Ollama's shape) in one chunk before the final one. /api/generate's `template` is an Ollama Go template
(athanor.text.gotemplate). `think`: a reasoning block comes back as `thinking` (reasoning.py). Not supported:
`images`: a clear 400. `suffix`: fill-in-the-middle (fim.py). Model management routes live in
ollama_models.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from athanor.serve.errors import ServeError, ollama_error_body
from athanor.serve.generation import (
    Generation,
    StreamResponse,
    check_request,
    compile_guide,
    cut_dimensions,
    run_all,
    run_embed,
    stream_body,
)
from athanor.serve.reasoning import (
    check_think,
    ollama_think,
    reasoning_delta,
    split_all,
    splitter,
    template_kwargs,
)
from athanor.serve.tool_calls import ToolCallStream, check_tools, template_messages, tool_names
from athanor.serve.trace_calls import close_call, fail_call, open_call, trace_id, watch

router = APIRouter()

# llama.cpp runner settings clients send in `options`; they size or place the model, not the sampling
RUNNER_OPTIONS = {"num_batch", "num_gpu", "main_gpu", "num_thread", "numa", "use_mmap", "use_mlock", "low_vram",
                  "f16_kv", "vocab_only", "num_keep", "penalize_newline", "num_ctx"}


class OllamaMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # "2" or true for a number: 400

    role: str
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[Any] | None = None
    tool_name: str | None = None  # tool turns: which function produced this result
    thinking: str | None = None  # an earlier reply's thinking: templates that render it (Qwen3) get it back

    def as_template_message(self, index: int) -> dict[str, Any]:
        """Ollama's message -> the OpenAI shape the templates and tools.py work with."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [_openai_call(c, f"call_{index}_{i}") for i, c in enumerate(self.tool_calls)]
        if self.tool_name:
            message["name"] = self.tool_name
        if self.thinking:
            message["reasoning_content"] = self.thinking  # Jinja's name (Go templates read it as .Thinking)
        return message


class OllamaBase(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # "2" or true for a number: 400

    model: str = Field(min_length=1)
    stream: bool = True
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None
    format: str | dict[str, Any] | None = None
    think: bool | str | None = None

    def check_supported(self) -> None:
        if self.format not in (None, "", "json") and not isinstance(self.format, dict):
            raise ServeError(f'format must be "json" or a JSON schema object, got {self.format!r}')
        check_think(self.think)

    def sampling_options(self) -> dict[str, Any]:
        return {k: v for k, v in (self.options or {}).items() if k not in RUNNER_OPTIONS}

    def guide(self, llm):
        """The grammar `format` asks for (None: free text)."""
        if not self.format:
            return None
        return llm.grammars.json(None if self.format == "json" else self.format, what="format")

    @property
    def num_ctx(self) -> int | None:
        """options.num_ctx, an integer >= 1 (the manager checks it against the KV cache before loading)."""
        value = (self.options or {}).get("num_ctx")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ServeError(f"options.num_ctx must be an integer >= 1, got {value!r}")
        return value


class ChatRequest(OllamaBase):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class GenerateRequest(OllamaBase):
    prompt: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    suffix: str | None = None
    images: list[str] | None = None


@router.post("/api/chat")
async def chat(body: ChatRequest, request: Request):
    body.check_supported()
    tools = body.tools or None
    check_tools(tools, None)
    if any(m.images for m in body.messages):
        raise ServeError("images are not supported (text models only)")
    if not body.messages:
        return await _load_only(request, body)
    messages = [m.as_template_message(i) for i, m in enumerate(body.messages)]

    def prompt(llm) -> list[int]:
        vars = template_kwargs(ollama_think(llm, body.think, body.model), body.think)  # reasoning.py
        return llm.chat_prompt(template_messages(llm.tokenizer, messages, tools), tools=tools, **vars)

    return await _run(request, body, prompt, chat=True, names=tool_names(tools) if tools else None,
                      trace_input=messages)


@router.post("/api/generate")
async def generate(body: GenerateRequest, request: Request):
    body.check_supported()
    template = _request_template(body.template) if body.template and not body.raw else None
    if body.images:
        raise ServeError("images are not supported by athanor serve")
    if not body.prompt:
        return await _load_only(request, body)
    if body.suffix:  # fill-in-the-middle: the model's FIM tokens around prompt and suffix (fim.py), no template
        from athanor.serve.fim import fim_prompt

        return await _run(request, body, lambda llm: fim_prompt(llm.tokenizer, body.prompt, body.suffix, body.model),
                          chat=False, trace_input={"prompt": body.prompt, "suffix": body.suffix})
    return await _run(request, body, lambda llm: _generate_prompt(llm, body, template), chat=False,
                      trace_input=_generate_input(body))


def _request_template(source: str):
    """/api/generate's `template`: an Ollama Go template for this request only (Ollama parses it the same way)."""
    from athanor.text.gotemplate import GoTemplateError, parse

    try:
        return parse(source)
    except GoTemplateError as e:
        raise ServeError(f"template: {e}") from None


class EmbedRequest(OllamaBase):
    input: str | list[str] = ""
    truncate: bool = True  # Ollama's default: cut inputs to the context (false: a too-long input is a 400)
    dimensions: int | None = None  # the first N values, re-normalised (generation.cut_dimensions, as /v1/embeddings)


class LegacyEmbeddingsRequest(OllamaBase):
    prompt: str = ""


@router.post("/api/embed")
async def embed(body: EmbedRequest, request: Request):
    """Ollama's embed: {"embeddings": [[...], ...]} (L2-normalised), with prompt_eval_count and durations."""
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    if not inputs or any(not i for i in inputs):
        raise ServeError("input must be a non-empty string or a list of non-empty strings")
    vectors, tokens, durations = await _embed(request, body, inputs, body.truncate)
    vectors = cut_dimensions(vectors, body.dimensions)
    return {"model": body.model, "embeddings": vectors, "prompt_eval_count": tokens} | durations


@router.post("/api/embeddings")
async def embeddings_legacy(body: LegacyEmbeddingsRequest, request: Request):
    """The older single-prompt route: {"embedding": [...]}."""
    if not body.prompt:
        raise ServeError("prompt must be a non-empty string")
    vectors, _, _ = await _embed(request, body, [body.prompt], truncate=True)
    return {"embedding": vectors[0]}


async def _embed(request: Request, body: OllamaBase, inputs: list[str], truncate: bool):
    manager = request.app.state.manager
    t0 = time.perf_counter()
    model = await manager.acquire(body.model, body.keep_alive, body.num_ctx)
    t1 = time.perf_counter()
    span = open_call("embeddings", body.model, None, inputs, kind="embedding")
    try:
        vectors, tokens = await run_embed(model, inputs, truncate)
    except BaseException as e:
        fail_call(span, e)
        raise
    finally:
        manager.release(model)
    close_call(span, [], {"input_tokens": tokens})
    t2 = time.perf_counter()
    return vectors, tokens, {"total_duration": int((t2 - t0) * 1e9), "load_duration": int((t1 - t0) * 1e9)}


def _generate_input(body: GenerateRequest):
    """What a trace keeps as /api/generate's input: the prompt as is (raw), else the turns the template wraps."""
    if body.raw:
        return body.prompt
    return ([{"role": "system", "content": body.system}] if body.system else []) + [
        {"role": "user", "content": body.prompt}]


def _generate_prompt(llm, body: GenerateRequest, template=None) -> list[int]:
    """raw: the prompt as is; else the chat template (or the request's Go `template`) around one user turn."""
    context = list(body.context or [])
    if body.raw:
        return context + llm.tokenizer.encode(body.prompt, add_special_tokens=not context)
    messages = ([{"role": "system", "content": body.system}] if body.system else []) + [
        {"role": "user", "content": body.prompt}]
    if template is not None:  # Ollama: system (request's, else the model's), MESSAGEs unless context, the prompt
        from athanor.text.gotemplate import render_prompt

        system = body.system or llm.system
        msgs = ([{"role": "system", "content": system}] if system else []) + ([] if context else llm.messages)
        text = render_prompt(template, msgs + [{"role": "user", "content": body.prompt}])
        return context + llm.tokenizer.encode(text, add_special_tokens=not context)
    return context + llm.chat_prompt(messages, **template_kwargs(ollama_think(llm, body.think, body.model), body.think))


async def _load_only(request: Request, body: OllamaBase):
    """Ollama's preload/unload idiom: no prompt or messages; keep_alive 0 unloads."""
    manager = request.app.state.manager
    model = await manager.acquire(body.model, body.keep_alive, body.num_ctx)
    manager.release(model)
    reason = "load"
    if model.keep_alive == 0:
        await manager.unload(model.name)
        reason = "unload"
    final = _head(body.model, isinstance(body, ChatRequest), "") | {"done": True, "done_reason": reason}
    return JSONResponse(final)


async def _run(request: Request, body: OllamaBase, make_prompt, chat: bool, names: set[str] | None = None,
               trace_input=None):
    manager, metrics = request.app.state.manager, request.app.state.metrics
    t0 = time.perf_counter()
    model = await manager.acquire(body.model, body.keep_alive, body.num_ctx)
    load_seconds = time.perf_counter() - t0  # waiting for the model: its load when this request loaded it
    handed_to_stream = False
    span = open_call("chat" if chat else "text_completion", body.model, body.sampling_options(), trace_input,
                     tools=getattr(body, "tools", None))
    try:
        params = model.llm.sampling_params(body.sampling_options())
        params.guide = await compile_guide(body.guide, model.llm, "format")
        prompt_ids = await asyncio.to_thread(make_prompt, model.llm)  # a huge prompt must not stall the loop
        check_request(model, [prompt_ids], params, request.app.state.max_pending)
        raw = getattr(body, "raw", False) or getattr(body, "suffix", None)  # no template: no thinking to split
        split = None if raw else splitter(model.llm, prompt_ids, ollama_think(model.llm, body.think, body.model))
        gen = await Generation(model, prompt_ids, params, metrics).start()
        if body.stream:
            handed_to_stream = True
            output: dict = {}
            lines = watch(span, _ndjson(gen, body.model, chat, load_seconds, names, output, trace_id(span), split))

            def on_close() -> None:
                manager.release(model)
                _close(span, gen, output.get("head"), chat)

            return StreamResponse(stream_body([gen], lines, on_close,
                                              lambda message: json.dumps(ollama_error_body(message)) + "\n"),
                                  media_type="application/x-ndjson")
        if not await run_all(request, [gen]):  # the client left: aborted, nobody to answer
            fail_call(span, "client went away")
            return Response(status_code=499)
        head = _reply_head(gen, body.model, chat, names, split)
        final = _final(gen, chat, load_seconds)
        _close(span, gen, head, chat)
        return JSONResponse(head | final | ({"trace_id": trace_id(span)} if trace_id(span) else {}))
    except BaseException as e:
        fail_call(span, e)
        raise
    finally:
        if not handed_to_stream:
            manager.release(model)


def _reply_head(gen: Generation, name: str, chat: bool, names: set[str] | None, split=None) -> dict:
    """The non-streamed answer's message (with tools: calls found in the text as `tool_calls`; a thinking reply's
    block as `thinking`) or response."""
    result = gen.result
    thinking, text = split_all(split, result.text)
    if not names:
        return _head(name, chat, text, thinking=thinking)
    reply = ToolCallStream(names)
    sent = reply.feed(text)
    parsed = reply.finish(truncated=result.finish_reason == "length")
    return _head(name, chat, sent + parsed.content, _ollama_calls(parsed.tool_calls), thinking)


def _close(span, gen: Generation, head: dict | None, chat: bool) -> None:
    """The model span ends with the counts the final object reports (prompt_eval_count, eval_count) and the reply
    as the API gave it (chat: the assistant message with its tool calls; generate: the text)."""
    r = gen.result
    if head is None:  # the stream did not reach its end: what was generated
        head = _head("", chat, r.text)
    output = head["message"] if chat else head["response"]
    reasons = [r.finish_reason if r.finish_reason in ("stop", "length") else "stop"] if r.finish_reason else None
    close_call(span, [gen], {"prompt_tokens": r.num_prompt_tokens, "completion_tokens": r.num_output_tokens},
               output, reasons)


async def _ndjson(gen: Generation, name: str, chat: bool, load_seconds: float, names: set[str] | None,
                  output: dict | None = None, trace: str | None = None, split=None):
    """Text chunks as they come (with tools: held back while they may be a call), the calls in one chunk at the
    end, then the final object (with "trace_id" when the call is traced). `output["head"]` gets the whole reply
    (as the non-streamed answer would give it) for the trace. `split`: a thinking reply's block goes out as
    `thinking` (reasoning.py)."""
    reply = ToolCallStream(names) if names else None
    text_sent, calls, thought = [], [], []
    async for d in gen.deltas():
        thinking, text = reasoning_delta(split, d.text, d.finish_reason) if split else ("", d.text)
        text = reply.feed(text) if reply else text
        if thinking:
            thought.append(thinking)
        if text or thinking:
            text_sent.append(text)
            yield json.dumps(_head(name, chat, text, thinking=thinking) | {"done": False}) + "\n"
        if d.finish_reason is not None:
            if reply:
                parsed = reply.finish(truncated=d.finish_reason == "length")
                calls = _ollama_calls(parsed.tool_calls)
                text_sent.append(parsed.content)
                if parsed.content or parsed.tool_calls:
                    head = _head(name, chat, parsed.content, calls)
                    yield json.dumps(head | {"done": False}) + "\n"
            if output is not None:
                output["head"] = _head(name, chat, "".join(text_sent), calls, "".join(thought))
            final = _head(name, chat, "") | _final(gen, chat, load_seconds) | ({"trace_id": trace} if trace else {})
            yield json.dumps(final) + "\n"


def _head(name: str, chat: bool, text: str, tool_calls: list[dict] | None = None, thinking: str = "") -> dict:
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        body: dict[str, Any] = {"message": message}
    else:
        body = {"response": text} | ({"thinking": thinking} if thinking else {})
    return {"model": name, "created_at": now} | body


def _ollama_calls(calls: list[dict]) -> list[dict]:
    """OpenAI-shaped calls (arguments as JSON text) -> Ollama's (arguments as an object)."""
    out = []
    for c in calls:
        args = c["function"]["arguments"]
        try:
            args = json.loads(args) if isinstance(args, str) else args
        except json.JSONDecodeError:
            pass  # the model's text as it came; the client sees what was written
        out.append({"function": {"name": c["function"]["name"], "arguments": args}})
    return out


def _openai_call(call: Any, call_id: str) -> dict:
    """An Ollama tool call from a client's history ({"function": {"name", "arguments": {...}}}) -> OpenAI's shape."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise ServeError("messages[].tool_calls[] must be {'function': {'name': ..., 'arguments': {...}}}")
    return {"id": call.get("id") or call_id, "type": "function",
            "function": {"name": fn["name"], "arguments": fn.get("arguments") or {}}}


def _final(gen: Generation, chat: bool, load_seconds: float) -> dict:
    r = gen.result
    out = {"done": True, "done_reason": r.finish_reason if r.finish_reason in ("stop", "length") else "stop"}
    out |= gen.durations_ns(load_seconds)
    if not chat:
        out["context"] = gen.prompt_ids + r.token_ids  # send back as `context` to continue
    return out
