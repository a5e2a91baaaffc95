"""The one chat-model protocol the app layer (agent/, workflow/, rag/) talks to, its message types, and the model-spec grammar.

Messages are OpenAI-style dicts::

    {"role": "system" | "user" | "assistant" | "tool", "content": str,
     "tool_calls": [{"id", "type": "function", "function": {"name", "arguments"}}],  # assistant only
     "tool_call_id": str}                                                           # tool only

A model is named by one string (`load_chat_model`):

    spec      := openai | local
    openai    := "openai:" BASE_URL ["#" MODEL]     e.g. "openai:http://127.0.0.1:8000/v1#smollm2"
                 (MODEL defaults to the server's first listed model; the key comes from the `api_key` kwarg,
                 else $OPENAI_API_KEY, else "none" for local servers that need no key)
    local     := ["local:"] NAME_OR_PATH            e.g. "smollm2", "local:/models/x.gguf", "./hf-dir"
                 (a store name or a .gguf file / HF directory, run in-process by athanor's engine)

Options (`**options` of chat/stream) use OpenAI / Ollama names: temperature, top_p, max_tokens, stop, seed, ...
Not for: prompt formats of agents (agent/), HTTP serving (serve/), or the token engine (engine/).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from athanor.text.tool_parsing import ToolCall


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ChatResponse:
    text: str
    tool_calls: list[ToolCall]
    finish_reason: str  # "stop" | "length" | "tool_calls" | ...
    usage: Usage


@dataclass
class ChatDelta:
    """One streamed piece. The last delta of a stream carries finish_reason (and usage when known)."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)  # complete calls, emitted once assembled
    finish_reason: str | None = None
    usage: Usage | None = None


@runtime_checkable
class ChatModel(Protocol):
    name: str

    def chat(self, messages: list[dict], *, tools: list[dict] | None = None, **options) -> ChatResponse: ...

    def stream(self, messages: list[dict], *, tools: list[dict] | None = None, **options) -> Iterator[ChatDelta]: ...

    def embed(self, texts: list[str]) -> list[list[float]]: ...


def collect(deltas: Iterator[ChatDelta]) -> ChatResponse:
    """Fold a stream back into one ChatResponse (what `chat` returns for the same request)."""
    text, calls, reason, usage = [], [], "stop", Usage()
    for d in deltas:
        text.append(d.text)
        calls.extend(d.tool_calls)
        reason = d.finish_reason or reason
        usage = d.usage or usage
    return ChatResponse("".join(text), calls, reason, usage)


def tool_call_message(text: str, calls: list[ToolCall]) -> dict:
    """The assistant message that records a response with tool calls, in OpenAI's shape."""
    msg: dict = {"role": "assistant", "content": text}
    if calls:
        msg["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                             for c in calls]
    return msg


def load_chat_model(spec: str, **kwargs) -> ChatModel:
    """A model spec (grammar in the module docstring) -> a ChatModel. kwargs go to the implementation."""
    if not spec or not spec.strip():
        raise ValueError("empty model spec; try 'smollm2' or 'openai:http://127.0.0.1:8000/v1#model'")
    spec = spec.strip()
    if spec.startswith("openai:"):
        from athanor.llm.openai_compat import OpenAIChatModel

        base_url, _, model = spec[len("openai:"):].partition("#")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"{spec!r}: expected openai:http(s)://HOST[:PORT]/v1[#model]")
        return OpenAIChatModel(base_url, model or None, **kwargs)
    from athanor.llm.local import LocalChatModel

    return LocalChatModel.load(spec.removeprefix("local:"), **kwargs)
