"""Pydantic request models of the OpenAI routes: bad shapes and ranges become 400s in OpenAI's error shape.

Fields we do not implement yet are still declared so a request using them gets a clear 400 (never silently
ignored); unknown extra fields are ignored, as OpenAI-compatible servers do. Not for sampling-value checks
that SamplingParams already makes (temperature range, logit_bias values, ...).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from athanor.serve.errors import ServeError
from athanor.serve.tool_calls import check_tools


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)

    include_usage: bool = False


class SamplingFields(BaseModel):
    """Options shared by chat and completions, OpenAI names plus the common vLLM extras."""

    model_config = ConfigDict(extra="ignore", strict=True)  # "2" or true for a number: 400

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # extras (vLLM names)
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    ignore_eos: bool | None = None
    stop_token_ids: list[int] | None = None

    def sampling_options(self) -> dict[str, Any]:
        """The options dict `LLM.sampling_params` takes (None means "not given")."""
        keys = ("max_tokens", "temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
                "top_k", "min_p", "repetition_penalty", "min_tokens", "ignore_eos", "stop_token_ids")
        options = {k: getattr(self, k) for k in keys}
        options["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        return options

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CalledFunction(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str
    arguments: str | dict[str, Any] = "{}"  # OpenAI sends a JSON string


class MessageToolCall(BaseModel):
    """A call in an assistant message of the history (what an earlier answer's `tool_calls` held)."""

    model_config = ConfigDict(extra="ignore", strict=True)  # "2" or true for a number: 400

    id: str | None = None
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # "2" or true for a number: 400

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None  # assistant turns that called tools
    tool_call_id: str | None = None  # tool turns: which call this result answers
    reasoning_content: str | None = None  # an earlier reply's reasoning (vLLM's field), for templates that show it

    def as_template_message(self) -> dict[str, Any]:
        role = "system" if self.role == "developer" else self.role
        message: dict[str, Any] = {"role": role, "content": _text_content(self.content)}
        if self.tool_calls:
            message["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        for key in ("name", "tool_call_id", "reasoning_content"):
            if getattr(self, key) is not None:
                message[key] = getattr(self, key)
        return message


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Any] | None = None  # checked by check_tools (400 in OpenAI's words, not pydantic's)
    tool_choice: Any = None
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None  # reasoning models (serve/reasoning.py); "none" turns thinking off
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM's: extra template variables (enable_thinking, ...)

    def template_vars(self) -> dict[str, Any]:
        """chat_template_kwargs without the names the renderer sets itself."""
        reserved = {"messages", "tools", "add_generation_prompt", "chat_template"}
        return {k: v for k, v in (self.chat_template_kwargs or {}).items() if k not in reserved}

    def check_supported(self) -> None:
        check_tools(self.tools, self.tool_choice)
        self.json_schema()  # checks response_format's shape
        if self.top_logprobs is not None and not self.logprobs:
            raise ServeError("top_logprobs needs logprobs: true", 400, "top_logprobs")
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ServeError("give max_tokens or max_completion_tokens, not both", 400, "max_tokens")

    def json_schema(self) -> dict | bool | None:
        """response_format as a constraint: None (free text), True (any JSON object) or the schema to match."""
        fmt = self.response_format or {"type": "text"}
        kind = fmt.get("type")
        if kind == "text":
            return None
        if kind == "json_object":
            return True
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
                raise ServeError("response_format json_schema must be {'type': 'json_schema', 'json_schema': "
                                 "{'name': ..., 'schema': {...}}}", 400, "response_format")
            return spec.get("schema") or {"type": "object"}
        raise ServeError(f"response_format type must be 'text', 'json_object' or 'json_schema', got {kind!r}",
                         400, "response_format")

    @property
    def uses_tools(self) -> bool:
        """The tools go into the prompt and replies are searched for calls (tool_choice auto, the default)."""
        return bool(self.tools) and self.tool_choice != "none"

    def sampling_options(self) -> dict[str, Any]:
        options = super().sampling_options()
        options["max_tokens"] = self.max_completion_tokens or self.max_tokens
        options["logprobs"] = (self.top_logprobs or 0) if self.logprobs else None
        return options


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def check_supported(self) -> None:
        if self.suffix and not isinstance(self.prompt, str):
            raise ServeError("suffix (fill-in-the-middle) needs one prompt string", 400, "suffix")
        if self.best_of not in (None, self.n):
            raise ServeError("best_of other than n is not supported", 400, "best_of", "unsupported")

    def prompts(self, tokenizer) -> list[list[int]]:
        """Every prompt form OpenAI accepts -> token id lists (with `suffix`: the fill-in-the-middle layout)."""
        p = self.prompt
        if self.suffix:
            from athanor.serve.fim import fim_prompt

            return [fim_prompt(tokenizer, p, self.suffix, self.model)]
        if isinstance(p, str):
            return [tokenizer.encode(p)]
        if not p:
            raise ServeError("prompt is empty", 400, "prompt")
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return [tokenizer.encode(x) if isinstance(x, str) else list(x) for x in p]

    def sampling_options(self) -> dict[str, Any]:
        return super().sampling_options() | {"logprobs": self.logprobs}


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    def inputs(self) -> list[str | list[int]]:
        """Every input form OpenAI accepts -> a list of texts or token id lists (none may be empty)."""
        x = self.input
        items = [x] if isinstance(x, str) or (x and all(isinstance(t, int) for t in x)) else list(x)
        if not items or any(len(i) == 0 for i in items):
            raise ServeError("input must be a non-empty string, token list, or list of them (none empty)", 400,
                             "input")
        return items


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    model: str | None = None  # None: the server's one model (tokenizer_info.default_model_name), as lm-eval sends
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    tools: list[Any] | None = None  # rendered as chat completions would (tool_choice auto)
    add_special_tokens: bool = True


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    model: str | None = None
    tokens: list[int]


def _text_content(content) -> str:
    """A message's content: a string, or OpenAI's list of parts of which only text is supported now."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.get("type") != "text":
            raise ServeError(f"message content part {part.get('type')!r} is not supported (text only)", 400, "messages")
        texts.append(part.get("text", ""))
    return "".join(texts)
