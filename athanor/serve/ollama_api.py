"""The Ollama generation routes: /api/chat and /api/generate (NDJSON streams by default).

The last object of a stream (or the only one) carries done_reason and Ollama's timings in nanoseconds.
Not yet: `format` (constrained decoding), `tools`, `images`, `template` (Go templates), `think`: a clear
400 for each. Model management routes live in ollama_models.py.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from athanor.serve.errors import ServeError
from athanor.serve.generation import Generation, StreamResponse, check_request, stream_body

router = APIRouter()

# llama.cpp runner settings clients send in `options`; they size or place the model, not the sampling
RUNNER_OPTIONS = {"num_batch", "num_gpu", "main_gpu", "num_thread", "numa", "use_mmap", "use_mlock", "low_vram",
                  "f16_kv", "vocab_only", "num_keep", "penalize_newline", "num_ctx"}


class OllamaMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[Any] | None = None


class OllamaBase(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    stream: bool = True
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None
    format: str | dict[str, Any] | None = None
    think: bool | str | None = None

    def check_supported(self) -> None:
        if self.format:
            raise ServeError("format (JSON output) is not supported yet by athanor serve")
        if self.think:
            raise ServeError("think is not supported by athanor serve")

    def sampling_options(self) -> dict[str, Any]:
        return {k: v for k, v in (self.options or {}).items() if k not in RUNNER_OPTIONS}

    @property
    def num_ctx(self) -> int | None:
        return (self.options or {}).get("num_ctx")


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
    if body.tools:
        raise ServeError("tools are not supported yet by athanor serve")
    if any(m.images for m in body.messages):
        raise ServeError("images are not supported (text models only)")
    if not body.messages:
        return await _load_only(request, body)
    messages = [{"role": m.role, "content": m.content} for m in body.messages]
    return await _run(request, body, lambda llm: llm.chat_prompt(messages), chat=True)


@router.post("/api/generate")
async def generate(body: GenerateRequest, request: Request):
    body.check_supported()
    if body.template:
        raise ServeError("template (Go templates) is not supported; models use their Jinja chat template")
    if body.suffix or body.images:
        raise ServeError("suffix and images are not supported by athanor serve")
    if not body.prompt:
        return await _load_only(request, body)
    return await _run(request, body, lambda llm: _generate_prompt(llm, body), chat=False)


@router.post("/api/embed")
@router.post("/api/embeddings")
async def embed():
    raise ServeError("embeddings are not supported yet by athanor serve")


def _generate_prompt(llm, body: GenerateRequest) -> list[int]:
    """raw: the prompt as is; else the chat template around one user turn (and `system`)."""
    context = list(body.context or [])
    if body.raw:
        return context + llm.tokenizer.encode(body.prompt, add_special_tokens=not context)
    messages = ([{"role": "system", "content": body.system}] if body.system else []) + [
        {"role": "user", "content": body.prompt}]
    return context + llm.chat_prompt(messages)


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


async def _run(request: Request, body: OllamaBase, make_prompt, chat: bool):
    manager, metrics = request.app.state.manager, request.app.state.metrics
    t0 = time.perf_counter()
    model = await manager.acquire(body.model, body.keep_alive, body.num_ctx)
    load_seconds = time.perf_counter() - t0  # waiting for the model: its load when this request loaded it
    handed_to_stream = False
    try:
        params = model.llm.sampling_params(body.sampling_options())
        prompt_ids = make_prompt(model.llm)
        check_request(model, [prompt_ids], params, request.app.state.max_pending)
        gen = await Generation(model, prompt_ids, params, metrics).start()
        if body.stream:
            handed_to_stream = True
            lines = _ndjson(gen, body.model, chat, load_seconds)
            return StreamResponse(stream_body([gen], lines, lambda: manager.release(model),
                                              lambda message: json.dumps({"error": message}) + "\n"),
                                  media_type="application/x-ndjson")
        try:
            result = await gen.run()
        finally:
            gen.abort()  # no-op when finished; frees the blocks when the handler fails or is cancelled
        return JSONResponse(_head(body.model, chat, result.text) | _final(gen, chat, load_seconds))
    finally:
        if not handed_to_stream:
            manager.release(model)


async def _ndjson(gen: Generation, name: str, chat: bool, load_seconds: float):
    async for d in gen.deltas():
        if d.finish_reason is not None:
            if d.text:
                yield json.dumps(_head(name, chat, d.text) | {"done": False}) + "\n"
            yield json.dumps(_head(name, chat, "") | _final(gen, chat, load_seconds)) + "\n"
        elif d.text:
            yield json.dumps(_head(name, chat, d.text) | {"done": False}) + "\n"


def _head(name: str, chat: bool, text: str) -> dict:
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    body = {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
    return {"model": name, "created_at": now} | body


def _final(gen: Generation, chat: bool, load_seconds: float) -> dict:
    r = gen.result
    out = {"done": True, "done_reason": r.finish_reason if r.finish_reason in ("stop", "length") else "stop"}
    out |= gen.durations_ns(load_seconds)
    if not chat:
        out["context"] = gen.prompt_ids + r.token_ids  # send back as `context` to continue
    return out
