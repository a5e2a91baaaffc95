"""A tiny OpenAI-shaped server (FastAPI + uvicorn on 127.0.0.1) for testing `openai_compat` with the real SDK.

It answers /v1/models, /v1/chat/completions (JSON or SSE, optional usage chunk) and /v1/embeddings. Text comes
from `reply(messages, body) -> str` (a scripted function or a real ChatModel); when a request carries `tools`
and has no tool result yet, it answers with two parallel tool calls, streamed in fragments like OpenAI does.
Every request body and Authorization header is recorded in `requests`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import contextmanager

from fastapi import FastAPI, Request  # module level: FastAPI resolves the string annotations from here
from fastapi.responses import JSONResponse, StreamingResponse


def make_app(reply: Callable[[list[dict], dict], str], model_id: str, requests: list[dict]):
    app = FastAPI()

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "test"}]}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await request.json()
        data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0]} for i, t in enumerate(body["input"])]
        return {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        requests.append({"body": body, "authorization": request.headers.get("authorization")})
        calls = _tool_calls(body)
        text = "" if calls else reply(body["messages"], body)
        reason = "tool_calls" if calls else "stop"
        usage = {"prompt_tokens": 11, "completion_tokens": max(1, len(text.split())), "total_tokens": 0}
        if not body.get("stream"):
            message = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            return JSONResponse({"id": "c1", "object": "chat.completion", "created": int(time.time()),
                                 "model": body["model"], "usage": usage,
                                 "choices": [{"index": 0, "message": message, "finish_reason": reason}]})
        include_usage = (body.get("stream_options") or {}).get("include_usage")
        return StreamingResponse(_sse(body["model"], text, calls, reason, usage if include_usage else None),
                                 media_type="text/event-stream")

    return app


def _tool_calls(body: dict) -> list[dict]:
    if not body.get("tools") or any(m["role"] == "tool" for m in body["messages"]):
        return []
    name = body["tools"][0]["function"]["name"]
    return [{"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for i, args in enumerate([{"expression": "17*23"}, {"expression": "2+2"}])]


def _sse(model: str, text: str, calls: list[dict], reason: str, usage: dict | None):
    def chunk(delta: dict, finish=None, choices=True, **extra):
        obj = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []} | extra
        return f"data: {json.dumps(obj)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    for i in range(0, len(text), 5):
        yield chunk({"content": text[i:i + 5]})
    for i, c in enumerate(calls):  # id + name first, then the arguments in two fragments
        args = c["function"]["arguments"]
        yield chunk({"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                     "function": {"name": c["function"]["name"], "arguments": ""}}]})
        for part in (args[: len(args) // 2], args[len(args) // 2:]):
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
    yield chunk({}, finish=reason)
    if usage:
        yield chunk({}, choices=False, usage=usage)
    yield "data: [DONE]\n\n"


@contextmanager
def serve_stub(reply: Callable[[list[dict], dict], str], model_id: str = "stub-model"):
    """Run the stub on a free 127.0.0.1 port; yields (base_url, requests)."""
    requests: list[dict] = []
    with serve_app(make_app(reply, model_id, requests)) as url:
        yield url + "/v1", requests


@contextmanager
def serve_app(app):
    """Any ASGI app on a free 127.0.0.1 port (uvicorn in a thread); yields its base URL."""
    from athanor.serve.background import serve_in_thread

    with serve_in_thread(app) as (url, _):
        yield url
