"""OpenAIChatModel: the ChatModel protocol over any OpenAI-compatible URL, through the `openai` SDK.

For: `athanor serve`, vLLM, Ollama's /v1, llama.cpp's server or a hosted API, named
`openai:BASE_URL#MODEL` (see base.py). Tool calls come back parsed by the server; streamed tool-call
fragments are assembled here and emitted as complete `ToolCall`s on the final delta.
Key: the `api_key` argument, else $OPENAI_API_KEY, else "none" (local servers ignore it).
Options: OpenAI names go as request fields; Ollama spellings are mapped (num_predict -> max_tokens);
anything else travels in `extra_body` so servers with extensions (vLLM's top_k, ...) receive it.
Guards (llm/guards.py): per-attempt timeouts, retry with backoff honouring Retry-After, and a circuit breaker
per upstream model; the SDK's own retries are off so every attempt passes the breaker.
Every request is recorded as an `llm` span when tracing is on (llm/traced.py).
Not for: the Responses / Assistants APIs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from athanor import tracing
from athanor.llm.base import ChatDelta, ChatResponse, ToolCall, Usage
from athanor.llm.guards import Guard, GuardConfig
from athanor.llm.traced import traced_response, traced_stream

OPENAI_FIELDS = {"temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "presence_penalty",
                 "frequency_penalty", "logit_bias", "n", "response_format", "tool_choice", "parallel_tool_calls",
                 "logprobs", "top_logprobs", "user", "timeout"}
ALIASES = {"num_predict": "max_tokens"}


class OpenAIChatModel:
    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 timeout: float = 600.0, max_retries: int = 3, include_usage: bool = True,
                 guards: GuardConfig | None = None, connect_timeout: float = 10.0) -> None:
        from openai import OpenAI, Timeout

        self.base_url = base_url
        key = api_key or os.environ.get("OPENAI_API_KEY") or "none"
        self.client = OpenAI(base_url=base_url, api_key=key, timeout=Timeout(timeout, connect=connect_timeout),
                             max_retries=0)  # retries are the guard's, so each attempt passes the breaker
        self.guards = guards or GuardConfig(max_retries=max_retries)
        self._model = model
        self.include_usage = include_usage

    def guard(self) -> Guard:
        """The guard of this upstream model (its breaker is shared by every client of the same URL + model)."""
        return Guard(f"{self.base_url.rstrip('/')}#{self.name}", self.guards)

    @property
    def name(self) -> str:
        """The served model's id; without '#MODEL' in the spec, the first one the server lists."""
        if self._model is None:
            models = Guard(self.base_url.rstrip("/"), self.guards).call(lambda: self.client.models.list().data)
            if not models:
                raise ValueError(f"{self.base_url} lists no models; name one with '#MODEL'")
            self._model = models[0].id
        return self._model

    def chat(self, messages: list[dict], *, tools: list[dict] | None = None, **options) -> ChatResponse:
        """One request, recorded as an `llm` span (llm/traced.py)."""
        return traced_response(self.name, "openai", messages, options, tools,
                               lambda span: self._chat(messages, tools, options, span))

    def _chat(self, messages: list[dict], tools: list[dict] | None, options: dict, span) -> ChatResponse:
        req = _request(tools, options)
        r = self.guard().call(lambda: self.client.chat.completions.create(model=self.name, messages=messages, **req))
        span.set(tracing.RESPONSE_MODEL, r.model).set(tracing.RESPONSE_ID, r.id)
        choice = r.choices[0]
        calls = [ToolCall(c.id, c.function.name, c.function.arguments or "") for c in choice.message.tool_calls or []]
        usage = Usage(r.usage.prompt_tokens, r.usage.completion_tokens) if r.usage else Usage()
        return ChatResponse(choice.message.content or "", calls, choice.finish_reason or "stop", usage)

    def stream(self, messages: list[dict], *, tools: list[dict] | None = None, **options) -> Iterator[ChatDelta]:
        """Deltas of one streamed request, recorded as an `llm` span (llm/traced.py)."""
        yield from traced_stream(self.name, "openai", messages, options, tools,  # lazy: naming may ask the server
                                 lambda span: self._stream(messages, tools, options, span))

    def _stream(self, messages: list[dict], tools: list[dict] | None, options: dict, span) -> Iterator[ChatDelta]:
        req = _request(tools, options)
        if self.include_usage:
            req["stream_options"] = {"include_usage": True}
        parts: dict[int, dict] = {}  # tool-call index -> {"id", "name", "arguments"} assembled from fragments
        sent: set[int] = set()  # indices already delivered
        reason, usage = None, None

        def complete(before: float) -> list[ToolCall]:
            """Calls with an index below `before` are whole (OpenAI streams calls in index order): deliver them."""
            done = sorted(i for i in parts if i < before and i not in sent)
            sent.update(done)
            return [ToolCall(parts[i]["id"] or f"call_{i}", parts[i]["name"], parts[i]["arguments"]) for i in done]

        chunks = self.guard().stream(
            lambda: self.client.chat.completions.create(model=self.name, messages=messages, stream=True, **req))
        for chunk in chunks:
            span.set(tracing.RESPONSE_MODEL, chunk.model or None).set(tracing.RESPONSE_ID, chunk.id or None)
            if chunk.usage:
                usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
            for choice in chunk.choices[:1]:
                reason = choice.finish_reason or reason
                for tc in choice.delta.tool_calls or []:
                    _merge_fragment(parts.setdefault(tc.index, {"id": "", "name": "", "arguments": ""}), tc)
                    if ready := complete(tc.index):  # a new call began: the ones before it are complete
                        yield ChatDelta(tool_calls=ready)
                if choice.delta.content:
                    yield ChatDelta(text=choice.delta.content)
        yield ChatDelta(tool_calls=complete(float("inf")), finish_reason=reason or "stop", usage=usage)

    def embed(self, texts: list[str]) -> list[list[float]]:
        r = self.guard().call(lambda: self.client.embeddings.create(model=self.name, input=texts))
        return [d.embedding for d in sorted(r.data, key=lambda d: d.index)]


def _request(tools: list[dict] | None, options: dict) -> dict:
    req, extra = {}, {}
    for key, value in options.items():
        if value is None:
            continue
        key = ALIASES.get(key, key)
        (req if key in OPENAI_FIELDS else extra)[key] = value
    if tools:
        req["tools"] = tools
    if extra:
        req["extra_body"] = extra
    return req


def _merge_fragment(part: dict, tc) -> None:
    part["id"] = tc.id or part["id"]
    if tc.function is not None:
        part["name"] += tc.function.name or ""
        part["arguments"] += tc.function.arguments or ""
